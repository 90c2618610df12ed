"""Language-guided image tokenizer: image + instruction -> M visual tokens for the LLM.

    image (B,3,H,W) --timm backbone--> multi-scale maps --1x1 proj--> (B,d,h_l,w_l) per level
    instruction --text encoder--> (B,L,d_t) --linear--> (B,L,d)
    each level: visual tokens cross-attend to the instruction (the language guidance)
    deformable encoder over all levels (mmdet Deformable DETR layers)
    M queries --deformable decoder, layer by layer--> (L,B,M,d). The queries are either M learned
    embeddings with learned reference points (Deformable DETR), or, with ``two_stage``, M learned
    contents placed at the M encoder tokens whose proposals score highest as requested objects
    (Deformable DETR's two-stage proposals, DINO's mixed query selection): every encoder token proposes
    a box around its own position, so the decoder starts where the instruction's objects are
    after each layer every token --box MLP--> a box (B,M,4) refined from the layer's reference (the
    reference point at first, then the previous layer's box, as Deformable DETR's box refinement);
    tokens score classes against the class names' text features (``class_logits``), so a DETR-style
    loss on every layer's tokens (``TokenDetectionLoss``) makes them localise before the LLM reads them
    last layer --MLP--> (B,M,D_llm), plus a projection of each token's box encoding (the LLM reads where
    it is)

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

    ``embeds`` (B,M,D_llm) go into the LLM; ``layer_features`` (L,B,M,d) are the token states after
    each of the L decoder layers; ``layer_boxes`` (L,B,M,4) each token's box after each layer as
    normalised (cx, cy, w, h) over the padded input, whose (height, width) in pixels is ``canvas``.
    The last layer's (``features``, ``boxes``) are the tokens' detections; the earlier ones are trained
    too (auxiliary losses, as in Deformable DETR). With two-stage query selection, ``proposal_boxes``
    (B,M,4) and ``proposal_logits`` (B,M,1) are the selected encoder proposals (the decoder's starting
    boxes) and their objectness, trained as class-agnostic detections; None otherwise. ``feature_maps``
    are the encoder's output per level, (B,d,h_l,w_l): where region and point inputs are pooled from.
    """

    embeds: Tensor
    layer_features: Tensor
    layer_boxes: Tensor
    canvas: tuple[int, int]
    feature_maps: list[Tensor]
    proposal_boxes: Tensor | None = None
    proposal_logits: Tensor | None = None

    def select(self, rows: list[int]) -> VisualTokens:
        """The tokens of the images ``rows`` only (a sub-batch)."""
        return VisualTokens(
            embeds=self.embeds[rows],
            layer_features=self.layer_features[:, rows],
            layer_boxes=self.layer_boxes[:, rows],
            canvas=self.canvas,
            feature_maps=[level[rows] for level in self.feature_maps],
            proposal_boxes=None if self.proposal_boxes is None else self.proposal_boxes[rows],
            proposal_logits=None if self.proposal_logits is None else self.proposal_logits[rows],
        )

    @property
    def features(self) -> Tensor:
        """(B,M,d) the last decoder layer's token states."""
        return self.layer_features[-1]

    @property
    def boxes(self) -> Tensor:
        """(B,M,4) the last decoder layer's boxes."""
        return self.layer_boxes[-1]


class Encoder(DeformableDetrTransformerEncoder):
    """mmdet's Deformable DETR encoder, its reference points in the features' dtype: mmdet builds them in
    fp32, and ``grid_sample`` refuses fp32 sampling locations beside bf16 features (DeepSpeed bf16)."""

    @staticmethod
    def get_encoder_reference_points(spatial_shapes: Tensor, valid_ratios: Tensor, device) -> Tensor:
        points = DeformableDetrTransformerEncoder.get_encoder_reference_points(
            spatial_shapes, valid_ratios, device
        )
        return points.to(valid_ratios.dtype)


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
        two_stage: bool = False,
        init_cfg: dict | None = None,
    ) -> None:
        super().__init__(init_cfg)
        self.embed_dims = embed_dims
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
        self.encoder = Encoder(num_layers=num_encoder_layers, layer_cfg=dict(self_attn_cfg=attn, ffn_cfg=ffn))
        self.decoder = DeformableDetrTransformerDecoder(
            num_layers=num_decoder_layers,
            layer_cfg=dict(
                self_attn_cfg=dict(embed_dims=embed_dims, num_heads=num_heads, dropout=0.0, batch_first=True),
                cross_attn_cfg=attn,
                ffn_cfg=ffn,
            ),
            post_norm_cfg=None,
            return_intermediate=True,
        )
        self.two_stage = two_stage
        if two_stage:
            self.query_embed = nn.Embedding(num_queries, embed_dims)  # content only: position from proposals
            self.proposal_proj = nn.Sequential(nn.Linear(embed_dims, embed_dims), nn.LayerNorm(embed_dims))
            self.proposal_score = nn.Linear(embed_dims, 1)  # is this token on a requested object
            self.proposal_box = MLP(embed_dims, embed_dims, 4, 3)  # offsets to the token's anchor box
            self.query_pos_proj = nn.Sequential(
                nn.Linear(2 * embed_dims, embed_dims), nn.ReLU(), nn.Linear(embed_dims, embed_dims)
            )
        else:
            self.query_embed = nn.Embedding(num_queries, 2 * embed_dims)  # content + position halves
            self.reference_points = nn.Linear(embed_dims, 2)
        # one per decoder layer: offsets to the layer's reference (point or box), in logit space
        self.box_heads = nn.ModuleList(MLP(embed_dims, embed_dims, 4, 3) for _ in range(num_decoder_layers))
        self.class_proj = nn.Linear(embed_dims, embed_dims)  # token side of the class-name similarity
        self.class_bias = nn.Parameter(torch.tensor(bias_init_with_prob(0.01)))  # focal-loss prior
        self.llm_proj = nn.Sequential(
            nn.Linear(embed_dims, llm_dims), nn.GELU(), nn.Linear(llm_dims, llm_dims)
        )
        # where each token's object is: the LLM reads absolute positions from it (bins are absolute)
        self.position_proj = nn.Linear(2 * embed_dims, llm_dims)
        nn.init.normal_(self.level_embed, std=0.02)
        # start at the reference point with small boxes, later layers at the previous box, as Deformable
        # DETR's refined box branches
        for box_head in self.box_heads:
            nn.init.zeros_(box_head.layers[-1].weight)
            nn.init.zeros_(box_head.layers[-1].bias)
        if two_stage:  # every layer refines a box, the first one the proposal
            nn.init.zeros_(self.proposal_box.layers[-1].weight)
            nn.init.zeros_(self.proposal_box.layers[-1].bias)
            nn.init.constant_(self.proposal_score.bias, bias_init_with_prob(0.01))
        else:
            nn.init.constant_(self.box_heads[0].layers[-1].bias[2:], -2.0)
        self.register_load_state_dict_pre_hook(_rename_single_box_head)

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
            pos = (
                self.positional_encoding(None, input=feat).to(feat.dtype).flatten(2).transpose(1, 2)
            )  # (B,hw,d)
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
        feature_maps = [
            level.transpose(1, 2).reshape(batch, dims, h, w)
            for level, (h, w) in zip(memory.split([h * w for h, w in shapes], 1), shapes)
        ]

        proposal_boxes = proposal_logits = None
        if self.two_stage:
            query, query_pos, reference_points, proposal_boxes, proposal_logits = self._select_queries(
                memory, spatial_shapes
            )
        else:
            query_pos, query = self.query_embed.weight.unsqueeze(0).expand(batch, -1, -1).split(dims, dim=-1)
            reference_points = self.reference_points(query_pos).sigmoid()  # (B,M,2)
        # each layer samples around the previous layer's box (detached there, as in Deformable DETR)
        layer_tokens, refined = self.decoder(
            query=query,
            query_pos=query_pos,
            value=memory,
            key_padding_mask=None,
            reference_points=reference_points,
            spatial_shapes=spatial_shapes,
            level_start_index=level_start_index,
            valid_ratios=valid_ratios,
            reg_branches=self.box_heads,
        )  # (L,B,M,d), (L,B,M,4)
        layer_boxes = refined  # (L,B,M,4) cx, cy, w, h, each layer's boxes
        if torch.is_grad_enabled():  # the decoder detached them: again, with gradients for the loss
            references = [reference_points, *refined[:-1]]  # what each layer's box head refined
            layer_boxes = torch.stack(
                [
                    refine(box_head(tokens), ref)
                    for box_head, tokens, ref in zip(self.box_heads, layer_tokens, references)
                ]
            )
        position = coordinate_to_encoding(layer_boxes[-1].detach(), num_feats=dims // 2).to(
            memory.dtype
        )  # (B,M,2d)
        embeds = self.llm_proj(layer_tokens[-1]) + self.position_proj(position)
        return VisualTokens(
            embeds=embeds,
            layer_features=layer_tokens,
            layer_boxes=layer_boxes,
            canvas=tuple(images.shape[-2:]),
            feature_maps=feature_maps,
            proposal_boxes=proposal_boxes,
            proposal_logits=proposal_logits,
        )

    def _select_queries(
        self, memory: Tensor, spatial_shapes: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Two-stage queries from the encoder's output ``memory`` (B,N,d): every token proposes a box,
        refined from an anchor at its own position, and scores it as a requested object; the M best
        proposals become the decoder's references (detached, as in DINO), each with a learned content.

        Returns query and query_pos (B,M,d), reference boxes (B,M,4), the selected proposals' boxes
        (B,M,4, with gradients, for their loss) and objectness logits (B,M,1).
        """
        batch, num_tokens, dims = memory.shape
        if num_tokens < self.num_queries:
            raise ValueError(
                f"two-stage selection needs at least num_queries ({self.num_queries}) encoder tokens; "
                f"this input gives {num_tokens}: use larger images or fewer queries"
            )
        candidates = self.proposal_proj(memory)  # (B,N,d)
        scores = self.proposal_score(candidates)  # (B,N,1)
        boxes = refine(self.proposal_box(candidates), anchor_boxes(spatial_shapes, memory.dtype))  # (B,N,4)
        chosen = scores.squeeze(-1).topk(self.num_queries, dim=1).indices  # (B,M)
        proposal_boxes = boxes.gather(1, chosen.unsqueeze(-1).expand(-1, -1, 4))  # (B,M,4)
        proposal_logits = scores.gather(1, chosen.unsqueeze(-1))  # (B,M,1)
        reference_points = proposal_boxes.detach()
        position = coordinate_to_encoding(reference_points, num_feats=dims // 2).to(memory.dtype)
        query_pos = self.query_pos_proj(position)  # (B,M,d)
        query = self.query_embed.weight.unsqueeze(0).expand(batch, -1, -1)
        return query, query_pos, reference_points, proposal_boxes, proposal_logits

    def name_features(self, class_lists: list[list[str]], device: torch.device) -> list[Tensor]:
        """Per class list, (n_i, d) class features: the mean of each name's text-encoder features
        (encoded alone, so a long class list is never truncated)."""
        names = sorted({name for classes in class_lists for name in classes})
        if not names:
            return [torch.zeros(0, self.class_proj.in_features, device=device) for _ in class_lists]
        hidden, padding = self.text_encoder(names, device=device)  # (U,L,d_t), (U,L)
        keep = (~padding).unsqueeze(-1).to(hidden.dtype)
        features = self.text_proj((hidden * keep).sum(1) / keep.sum(1))  # (U,d)
        index = {name: i for i, name in enumerate(names)}
        return [features[[index[n] for n in classes]] for classes in class_lists]

    def class_logits(self, features: Tensor, class_features: list[Tensor]) -> list[Tensor]:
        """Per image, (..., M, n_i) logits that each token shows each of its request's classes, from token
        states (..., B, M, d) and per image (n_i, d) class features (``name_features``, or a region's for
        a visual prompt): (B,M,d) gives (M, n_i) per image, every layer's (L,B,M,d) gives (L,M,n_i). A
        token scores a class by scaled dot product, as open-vocabulary detectors do.
        """
        token_side = self.class_proj(features) / features.shape[-1] ** 0.5  # (...,B,M,d)
        return [
            token_side[..., b, :, :] @ classes.to(token_side.dtype).T + self.class_bias
            for b, classes in enumerate(class_features)
        ]


def _rename_single_box_head(module: nn.Module, state_dict: dict, prefix: str, *args) -> None:
    """Checkpoints from before box refinement have one ``box_head``, which read the last decoder layer: it
    becomes the last of ``box_heads`` (a one-layer model loads such a checkpoint whole)."""
    old, new = prefix + "box_head.", f"{prefix}box_heads.{len(module.box_heads) - 1}."
    for key in [k for k in state_dict if k.startswith(old)]:
        state_dict[new + key[len(old) :]] = state_dict.pop(key)


def anchor_boxes(spatial_shapes: Tensor, dtype: torch.dtype) -> Tensor:
    """(N,4) one anchor box per feature-map cell over all levels, normalised (cx, cy, w, h): centred on
    the cell, side 0.05 of the input on the finest level, doubling per level (Deformable DETR's two-stage
    proposals, which ``refine`` offsets from)."""
    anchors = []
    for level, (h, w) in enumerate(spatial_shapes.tolist()):
        ys, xs = torch.meshgrid(
            (torch.arange(h, device=spatial_shapes.device) + 0.5) / h,
            (torch.arange(w, device=spatial_shapes.device) + 0.5) / w,
            indexing="ij",
        )
        size = torch.full_like(xs, 0.05 * 2.0**level)
        anchors.append(torch.stack([xs, ys, size, size], -1).flatten(0, 1))
    return torch.cat(anchors).to(dtype)


def refine(offsets: Tensor, reference: Tensor) -> Tensor:
    """A box (…,4) normalised (cx, cy, w, h) from logit-space ``offsets`` (…,4) to a ``reference``: a
    point (…,2), whose offsets also give the size, or a previous box (…,4)."""
    if reference.shape[-1] == 4:
        return (offsets + inverse_sigmoid(reference)).sigmoid()
    return torch.cat([offsets[..., :2] + inverse_sigmoid(reference), offsets[..., 2:]], -1).sigmoid()
