"""Language-guided image tokenizer: image + instruction -> M visual tokens for the LLM.

    image (B,3,H,W) --timm backbone--> multi-scale maps --1x1 proj--> (B,d,h_l,w_l) per level
    instruction --text encoder--> (B,L,d_t) --linear--> (B,L,d)
    each level: visual tokens cross-attend to the instruction (the language guidance)
    deformable encoder over all levels (mmdet Deformable DETR layers)
    M learned queries --deformable decoder--> (B,M,d) + reference points (B,M,2)
    each token --box MLP--> a box (B,M,4) refined from its reference point; it can score classes
    against the class names' text features (``class_logits``), so a DETR-style loss on the tokens
    (``TokenDetectionLoss``) makes them localise before the LLM reads them
    --MLP--> (B,M,D_llm), plus a projection of each token's box encoding (the LLM reads where it is)

The whole padded canvas is treated as valid: location bins are defined over the padded input, so
the padding is part of the picture the model reasons about and no masks are needed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from mmdet.models.layers import MLP, SinePositionalEncoding
from mmdet.models.layers.transformer import (
    DeformableDetrTransformerDecoder,
    DeformableDetrTransformerEncoder,
    coordinate_to_encoding,
    inverse_sigmoid,
)
from mmengine.model import BaseModule, bias_init_with_prob
from torch import Tensor, nn

from visionllm.models.backbones import build_backbone
from visionllm.models.text_encoder import TextEncoder
from visionllm.registry import MODELS


@dataclass
class VisualTokens:
    """The tokenizer's output: what the LLM reads and what the token-level detection loss scores.

    ``embeds`` (B,M,D_llm) go into the LLM; ``features`` (B,M,d) are the decoder's token states;
    ``boxes`` (B,M,4) are each token's box as normalised (cx, cy, w, h) over the padded input, whose
    (height, width) in pixels is ``canvas``.
    """

    embeds: Tensor
    features: Tensor
    boxes: Tensor
    canvas: tuple[int, int]


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
        self.box_head = MLP(embed_dims, embed_dims, 4, 3)  # offsets to the reference point, logit space
        self.class_proj = nn.Linear(embed_dims, embed_dims)  # token side of the class-name similarity
        self.class_bias = nn.Parameter(torch.tensor(bias_init_with_prob(0.01)))  # focal-loss prior
        self.llm_proj = nn.Sequential(
            nn.Linear(embed_dims, llm_dims), nn.GELU(), nn.Linear(llm_dims, llm_dims)
        )
        # where each token's object is: the LLM reads absolute positions from it (bins are absolute)
        self.position_proj = nn.Linear(2 * embed_dims, llm_dims)
        nn.init.normal_(self.level_embed, std=0.02)
        # start at the reference point with small boxes, as Deformable DETR's box branch
        nn.init.zeros_(self.box_head.layers[-1].weight)
        nn.init.constant_(self.box_head.layers[-1].bias, 0.0)
        with torch.no_grad():
            self.box_head.layers[-1].bias[2:] = -2.0

    @property
    def num_queries(self) -> int:
        return self.query_embed.num_embeddings

    def forward(self, images: Tensor, instructions: list[str]) -> VisualTokens:
        """Visual tokens of each image, guided by its instruction (plain text, no task tokens)."""
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
        offsets = self.box_head(tokens)  # (B,M,4)
        boxes = torch.cat(
            [offsets[..., :2] + inverse_sigmoid(reference_points), offsets[..., 2:]], -1
        ).sigmoid()  # (B,M,4) cx, cy, w, h
        position = coordinate_to_encoding(boxes.detach(), num_feats=dims // 2)  # (B,M,2d)
        embeds = self.llm_proj(tokens) + self.position_proj(position)
        return VisualTokens(embeds=embeds, features=tokens, boxes=boxes, canvas=tuple(images.shape[-2:]))

    def class_logits(self, features: Tensor, class_lists: list[list[str]]) -> list[Tensor]:
        """Per image, (M, n_i) logits that each token shows each of its request's classes.

        A class is the mean of its name's text-encoder features (encoded alone, so a long class list is
        never truncated); a token scores it by scaled dot product, as open-vocabulary detectors do.
        """
        names = sorted({name for classes in class_lists for name in classes})
        hidden, padding = self.text_encoder(names, device=features.device)  # (U,L,d_t), (U,L)
        keep = (~padding).unsqueeze(-1).to(hidden.dtype)
        name_features = self.text_proj((hidden * keep).sum(1) / keep.sum(1))  # (U,d)
        index = {name: i for i, name in enumerate(names)}
        token_side = self.class_proj(features) / features.shape[-1] ** 0.5  # (B,M,d)
        return [
            token_side[b] @ name_features[[index[n] for n in classes]].T + self.class_bias
            for b, classes in enumerate(class_lists)
        ]
