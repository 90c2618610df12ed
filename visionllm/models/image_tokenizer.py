"""Language-guided image tokenizer: image + instruction -> M visual tokens for the LLM.

    image (B,3,H,W) --timm backbone--> multi-scale maps --1x1 proj--> (B,d,h_l,w_l) per level
    instruction --text encoder--> (B,L,d_t) --linear--> (B,L,d)
    each level: visual tokens cross-attend to the instruction (the language guidance)
    deformable encoder over all levels (mmdet Deformable DETR layers)
    M learned queries --deformable decoder--> (B,M,d) + reference points (B,M,2)
    --MLP--> (B,M,D_llm), plus a projection of each token's reference-point encoding

The whole padded canvas is treated as valid: location bins are defined over the padded input, so
the padding is part of the picture the model reasons about and no masks are needed.
"""

from __future__ import annotations

import torch
from mmdet.models.layers import SinePositionalEncoding
from mmdet.models.layers.transformer import (
    DeformableDetrTransformerDecoder,
    DeformableDetrTransformerEncoder,
    coordinate_to_encoding,
)
from mmengine.model import BaseModule
from torch import Tensor, nn

from visionllm.models.backbones import build_backbone
from visionllm.models.text_encoder import TextEncoder
from visionllm.registry import MODELS


class TextCrossAttention(nn.Module):
    """Visual tokens of one level attend to the instruction tokens (pre-norm, residual)."""

    def __init__(self, embed_dims: int, num_heads: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(embed_dims)
        self.attn = nn.MultiheadAttention(embed_dims, num_heads, batch_first=True)

    def forward(self, visual: Tensor, text: Tensor, text_padding: Tensor) -> Tensor:
        attended, _ = self.attn(self.norm(visual), text, text, key_padding_mask=text_padding)
        return visual + attended


@MODELS.register_module()
class LanguageGuidedImageTokenizer(BaseModule):
    """Turns an image and its instruction into ``num_queries`` visual tokens of width ``llm_dims``."""

    def __init__(
        self,
        backbone: dict,
        text_encoder: dict,
        llm_dims: int,
        embed_dims: int = 256,
        num_queries: int = 64,
        num_heads: int = 8,
        num_encoder_layers: int = 2,
        num_decoder_layers: int = 2,
        num_points: int = 4,
        ffn_ratio: int = 4,
        init_cfg: dict | None = None,
    ) -> None:
        super().__init__(init_cfg)
        self.backbone = build_backbone(backbone)
        channels = self.backbone.out_channels
        self.num_levels = len(channels)
        self.input_proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, embed_dims, 1), nn.GroupNorm(min(32, embed_dims // 4), embed_dims))
            for c in channels
        )
        self.text_encoder = TextEncoder(**text_encoder)
        self.text_proj = nn.Linear(self.text_encoder.hidden_size, embed_dims)
        self.text_attn = nn.ModuleList(TextCrossAttention(embed_dims, num_heads) for _ in channels)

        self.positional_encoding = SinePositionalEncoding(num_feats=embed_dims // 2, normalize=True)
        self.level_embed = nn.Parameter(torch.zeros(self.num_levels, embed_dims))
        attn = dict(
            embed_dims=embed_dims, num_heads=num_heads, num_levels=self.num_levels, num_points=num_points
        )
        ffn = dict(embed_dims=embed_dims, feedforward_channels=embed_dims * ffn_ratio, ffn_drop=0.0)
        self.encoder = DeformableDetrTransformerEncoder(
            num_layers=num_encoder_layers, layer_cfg=dict(self_attn_cfg=attn, ffn_cfg=ffn)
        )
        self.decoder = DeformableDetrTransformerDecoder(
            num_layers=num_decoder_layers,
            layer_cfg=dict(
                self_attn_cfg=dict(embed_dims=embed_dims, num_heads=num_heads, dropout=0.0, batch_first=True),
                cross_attn_cfg=attn,
                ffn_cfg=ffn,
            ),
            post_norm_cfg=None,
            return_intermediate=False,
        )
        self.query_embed = nn.Embedding(num_queries, 2 * embed_dims)  # content + position halves
        self.reference_points = nn.Linear(embed_dims, 2)
        self.llm_proj = nn.Sequential(
            nn.Linear(embed_dims, llm_dims), nn.GELU(), nn.Linear(llm_dims, llm_dims)
        )
        # where each token looked: the LLM reads absolute positions from it (bins are absolute)
        self.position_proj = nn.Linear(embed_dims, llm_dims)
        nn.init.normal_(self.level_embed, std=0.02)

    @property
    def num_queries(self) -> int:
        return self.query_embed.num_embeddings

    def forward(self, images: Tensor, instructions: list[str]) -> tuple[Tensor, Tensor]:
        """Returns visual tokens (B,M,D_llm) and their reference points (B,M,2) in [0,1] (x, y)."""
        text, text_padding = self.text_encoder(instructions, device=images.device)  # (B,L,d_t), (B,L)
        text = self.text_proj(text)  # (B,L,d)

        feats, pos_embeds, shapes = [], [], []
        for level, feat in enumerate(self.backbone(images)):
            feat = self.input_proj[level](feat)  # (B,d,h,w)
            batch, dims, h, w = feat.shape
            pos = self.positional_encoding(None, input=feat).flatten(2).transpose(1, 2)  # (B,hw,d)
            feat = self.text_attn[level](feat.flatten(2).transpose(1, 2), text, text_padding)  # (B,hw,d)
            feats.append(feat)
            pos_embeds.append(pos + self.level_embed[level])
            shapes.append((h, w))
        memory = torch.cat(feats, 1)  # (B,sum hw,d)
        memory_pos = torch.cat(pos_embeds, 1)
        spatial_shapes = torch.tensor(shapes, dtype=torch.long, device=images.device)  # (levels,2)
        level_start_index = torch.cat((spatial_shapes.new_zeros(1), spatial_shapes.prod(1).cumsum(0)[:-1]))
        valid_ratios = memory.new_ones(batch, self.num_levels, 2)
        memory = self.encoder(
            query=memory,
            query_pos=memory_pos,
            key_padding_mask=None,
            spatial_shapes=spatial_shapes,
            level_start_index=level_start_index,
            valid_ratios=valid_ratios,
        )

        query_pos, query = self.query_embed.weight.unsqueeze(0).expand(batch, -1, -1).split(dims, dim=-1)
        reference_points = self.reference_points(query_pos).sigmoid()  # (B,M,2)
        tokens, _ = self.decoder(
            query=query,
            query_pos=query_pos,
            value=memory,
            key_padding_mask=None,
            reference_points=reference_points,
            spatial_shapes=spatial_shapes,
            level_start_index=level_start_index,
            valid_ratios=valid_ratios,
        )  # (B,M,d)
        position = coordinate_to_encoding(reference_points, num_feats=dims // 2)  # (B,M,d)
        return self.llm_proj(tokens) + self.position_proj(position), reference_points
