"""Region and point inputs: what fills the ``<region>`` and ``<point>`` placeholders of an instruction.

    <region> box (x1,y1,x2,y2 model-input pixels)
      RoIAlign (S x S) on every level of the image tokenizer's maps -> concat -> hidden   (what is there)
      hidden -> linear -> LayerNorm                                                      (its content)
      + sine encodings of the box (cx, cy, w, h) and of where the request's other
        boxes are relative to it, at the LLM's width, plus an MLP of them              (where, how related)
      -> (D_llm,) written over the placeholder's input embedding, as GPT4RoI does
    <point> (x, y)
      bilinear sample on every level -> concat -> hidden -> linear -> LayerNorm
      + sine encoding of (x, y) plus an MLP of it

The sine encodings are fixed, as the Transformer's sinusoidal positions are, and as large as the
layer-normalised content, so training cannot shrink them before the LLM learns to read them; the MLP
learns what questions need of them on top. A geometry term that was only an MLP was shrunk to ~1/30 of
the content (``bench/region_input_parts.py``), and then the LLM could not learn "which is further left"
even with everything else frozen, though a linear probe read the answer from the same inputs
(``bench/region_readout.py``; docs/benchmarks.md, run 8).

The relative term is Relation Networks' (Hu et al. 2018) pairwise geometry, signed: the other boxes' mean
(dx, dy) of centres as fractions of the canvas and log ratios of widths and heights, so a comparison ("is
<region> larger than <region>?") can be read from one input instead of learnt as a subtraction of two
inputs far apart in the sequence. A box alone in its request gets the same (zero-geometry) term as every
other lone box.

The hidden features also give a region's or point's class feature (the ``region_class`` /
``point_class`` heads), in the space where the tokenizer compares visual tokens with class names. It is
trained on every image, whatever its task, to score its object's class name highest (``VisionLLM``'s
``loss_prompt_class``, on annotated boxes and clicks): a dense signal that a question about one region
per image would give a tenth of the time, on the very features the LLM reads.

The maps are the deformable encoder's output, so a region's features already carry the context of the
whole image and the instruction. With ``attribute_heads``, the hidden features also give a region's or
point's attribute feature, trained to name its object's colour, size and other annotated attributes among
their words (``VisionLLM``'s ``loss_prompt_attribute``), as Bottom-Up attention's attribute head makes
region features carry what captions and answers say of them.

"Find every object like <region>" scores visual tokens against the region's class feature as other
requests score them against class names (visual prompts, as in T-Rex2 / DINO-X).

RoIAlign is mmcv's compiled op when a full mmcv is installed and :func:`roi_align` (PyTorch
``grid_sample``, the same sampling) otherwise; ``tests/test_prompt_encoder.py`` checks both against a
plain loop.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from mmdet.models.layers import MLP
from mmdet.models.layers.transformer import coordinate_to_encoding
from torch import Tensor, nn

from visionllm.compat import mmcv_has_compiled_ops

#: the sine encodings' frequencies fall from 2 pi to 2 pi / temperature per canvas width: at a 7B LLM's
#: width and at the tiny one's alike, several of them turn by a readable angle over the canvas
POSITION_TEMPERATURE = 20


#: (inputs (K, D_llm), class features (K, d), attribute features (K, d) or None) -> tagged inputs (K, D_llm)
Tagger = Callable[[Tensor, Tensor, Tensor | None], Tensor]


def roi_align(
    features: Tensor, rois: Tensor, output_size: int, spatial_scale: float, sampling_ratio: int = 2
) -> Tensor:
    """RoIAlign with ``aligned=True`` (pixel centres at half-integers): (B,C,H,W) maps, (K,5) rois
    ``[batch index, x1, y1, x2, y2]`` in input pixels -> (K,C,S,S), each bin the mean of
    ``sampling_ratio``^2 bilinear samples. Samples beyond the map's edge take the edge's value."""
    if mmcv_has_compiled_ops():
        from mmcv.ops import roi_align as compiled_roi_align

        return compiled_roi_align(features, rois, output_size, spatial_scale, sampling_ratio, "avg", True)
    steps = output_size * sampling_ratio
    fractions = (torch.arange(steps, device=features.device, dtype=features.dtype) + 0.5) / steps
    pooled = features.new_zeros(rois.shape[0], features.shape[1], output_size, output_size)
    height, width = features.shape[-2:]
    for image in rois[:, 0].long().unique().tolist():
        rows = (rois[:, 0] == image).nonzero().squeeze(1)
        boxes = rois[rows, 1:].to(features.dtype) * spatial_scale - 0.5  # map pixel-centre coordinates
        xs = boxes[:, 0:1] + fractions * (boxes[:, 2:3] - boxes[:, 0:1])  # (K,steps)
        ys = boxes[:, 1:2] + fractions * (boxes[:, 3:4] - boxes[:, 1:2])
        grid = torch.stack(
            [
                ((xs + 0.5) / width * 2 - 1)[:, None, :].expand(-1, steps, -1),
                ((ys + 0.5) / height * 2 - 1)[:, :, None].expand(-1, -1, steps),
            ],
            -1,
        )  # (K,steps,steps,2) as grid_sample reads it (x, y in [-1, 1] over pixel edges)
        sampled = F.grid_sample(
            features[image : image + 1],
            grid.reshape(1, -1, steps, 2),
            mode="bilinear",
            padding_mode="border",
            align_corners=False,
        )  # (1,C,K*steps,steps)
        sampled = sampled.reshape(features.shape[1], len(rows), steps, steps).transpose(0, 1)
        pooled[rows] = F.avg_pool2d(sampled, sampling_ratio)
    return pooled


def sample_points(features: Tensor, points: Tensor, spatial_scale: float) -> Tensor:
    """Bilinear features (K,C) at (K,3) points ``[batch index, x, y]`` in input pixels of (B,C,H,W) maps."""
    height, width = features.shape[-2:]
    out = features.new_zeros(points.shape[0], features.shape[1])
    for image in points[:, 0].long().unique().tolist():
        rows = (points[:, 0] == image).nonzero().squeeze(1)
        xy = points[rows, 1:].to(features.dtype) * spatial_scale
        grid = torch.stack([xy[:, 0] / width * 2 - 1, xy[:, 1] / height * 2 - 1], -1)
        sampled = F.grid_sample(
            features[image : image + 1], grid[None, None], padding_mode="border", align_corners=False
        )  # (1,C,1,K)
        out[rows] = sampled[0, :, 0].T
    return out


def relative_geometry(boxes: list[Tensor]) -> Tensor:
    """Per request, its (K,4) boxes as (cx, cy, w, h) canvas fractions -> (sum K, 4): for each box, the mean
    over the request's other boxes of (their cx - its cx, their cy - its cy, log of their w / its w, log of
    their h / its h); zeros for a box alone in its request."""
    rows = []
    for group in boxes:
        if len(group) < 2:
            rows.append(group.new_zeros(len(group), 4))
            continue
        cx, cy, w, h = group.unbind(-1)
        log_w, log_h = w.clamp(min=1e-3).log(), h.clamp(min=1e-3).log()
        pairs = torch.stack(
            [
                cx[None, :] - cx[:, None],
                cy[None, :] - cy[:, None],
                log_w[None, :] - log_w[:, None],
                log_h[None, :] - log_h[:, None],
            ],
            -1,
        )  # (K,K,4): row i, column j = box j relative to box i (zero on the diagonal)
        rows.append(pairs.sum(1) / (len(group) - 1))
    return torch.cat(rows)


def _batched(inputs: list[Tensor]) -> Tensor:
    """Per-image (K_i, n) rows -> (sum K_i, 1 + n) with the image index in front."""
    return torch.cat(
        [torch.cat([rows.new_full((len(rows), 1), float(i)), rows], 1) for i, rows in enumerate(inputs)]
    )


def sample_levels(maps: list[Tensor], points: list[Tensor], canvas: tuple[int, int]) -> Tensor:
    """Per image, its (P_i,2) x,y points in pixels of the ``canvas`` (height, width) -> (sum P_i, levels * d):
    the bilinear features at every point on every level of (B,d,h_l,w_l) ``maps``, concatenated."""
    rows = _batched(points)
    return torch.cat([sample_points(level, rows, level.shape[-1] / canvas[1]) for level in maps], 1)


class PromptEncoder(nn.Module):
    """``<region>`` boxes and ``<point>`` clicks -> LLM-width input embeddings (module docstring).

    Args:
        embed_dims: channels of the image tokenizer's maps (``d``).
        llm_dims: the LLM's width.
        num_levels: how many maps (one RoI / point sample per level, concatenated).
        roi_size: S, the RoIAlign output side.
        attribute_heads: also build the region and point attribute heads (``*_attribute``).
        region_relations: also encode each box's geometry relative to the request's other boxes
            (:func:`relative_geometry`) in its input.
    """

    def __init__(
        self,
        embed_dims: int,
        llm_dims: int,
        num_levels: int,
        roi_size: int = 4,
        attribute_heads: bool = False,
        region_relations: bool = True,
    ) -> None:
        super().__init__()
        self.roi_size = roi_size
        self.region_relations = region_relations
        self.region_hidden = nn.Sequential(
            nn.Linear(num_levels * embed_dims * roi_size**2, llm_dims), nn.GELU()
        )
        self.region_out = nn.Sequential(nn.Linear(llm_dims, llm_dims), nn.LayerNorm(llm_dims))
        self.point_hidden = nn.Sequential(nn.Linear(num_levels * embed_dims, llm_dims), nn.GELU())
        self.point_out = nn.Sequential(nn.Linear(llm_dims, llm_dims), nn.LayerNorm(llm_dims))
        self.llm_dims = llm_dims
        # learnt on top of the fixed encodings (what a question needs of them), added to them
        self.region_position = MLP(llm_dims, llm_dims, llm_dims, 2)
        self.point_position = MLP(llm_dims, llm_dims, llm_dims, 2)
        for what, coordinates in (("region", 8 if region_relations else 4), ("point", 2)):
            if llm_dims % (2 * coordinates):
                raise ValueError(
                    f"llm_dims={llm_dims} must be a multiple of {2 * coordinates}: each of a {what}'s "
                    f"{coordinates} coordinates is encoded in an even share of the LLM's channels"
                )
        # from the hidden features into the space where the tokenizer compares tokens with class names
        self.region_class = nn.Linear(llm_dims, embed_dims)
        self.point_class = nn.Linear(llm_dims, embed_dims)
        # ... and into the same space, scored against attribute words ("red", "large")
        self.region_attribute = nn.Linear(llm_dims, embed_dims) if attribute_heads else None
        self.point_attribute = nn.Linear(llm_dims, embed_dims) if attribute_heads else None

    def _pool(self, maps: list[Tensor], boxes: list[Tensor], canvas: tuple[int, int]) -> Tensor:
        """(K, levels * d * S * S) RoI features of every box of every image."""
        rois = _batched(boxes)
        return torch.stack(
            [roi_align(level, rois, self.roi_size, level.shape[-1] / canvas[1]) for level in maps], 1
        ).flatten(1)

    @staticmethod
    def _normalised(boxes: Tensor, canvas: tuple[int, int]) -> Tensor:
        """xyxy pixels -> (cx, cy, w, h) as fractions of the canvas."""
        height, width = canvas
        x1, y1, x2, y2 = (boxes / boxes.new_tensor([width, height, width, height])).unbind(-1)
        return torch.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], -1)

    def regions(
        self, maps: list[Tensor], boxes: list[Tensor], canvas: tuple[int, int], tag: Tagger | None = None
    ) -> list[Tensor]:
        """Per request, its boxes (R_i,4) xyxy model-input pixels -> (R_i, D_llm) embeddings; ``tag``
        (optional) rewrites them from their class and attribute features (``VisionLLM``'s word tags)."""
        counts = [len(b) for b in boxes]
        if not sum(counts):
            return [maps[0].new_zeros(0, self.llm_dims) for _ in boxes]
        hidden = self.region_features(maps, boxes, canvas)
        inputs = self.region_out(hidden) + self.region_geometry(boxes, canvas, hidden.dtype)
        if tag is not None:
            attributes = None if self.region_attribute is None else self.region_attribute(hidden)
            inputs = tag(inputs, self.region_class(hidden), attributes)
        return list(inputs.split(counts))

    def region_geometry(
        self, boxes: list[Tensor], canvas: tuple[int, int], dtype: torch.dtype = torch.float32
    ) -> Tensor:
        """Per request, its boxes (R_i,4) xyxy model-input pixels -> (sum R_i, D_llm): the geometry term of
        their inputs (the sine encodings of each box and, with relations, of where the request's other
        boxes are, plus the MLP of them), computed in ``dtype``."""
        geometry = [self._normalised(torch.cat(boxes).to(dtype), canvas)]
        if self.region_relations:
            geometry.append(relative_geometry(list(geometry[0].split([len(b) for b in boxes]))))
        encoding = self.geometry_encoding(geometry)
        return encoding + self.region_position(encoding)

    def points(
        self, maps: list[Tensor], points: list[Tensor], canvas: tuple[int, int], tag: Tagger | None = None
    ) -> list[Tensor]:
        """Per request, its points (P_i,2) x,y model-input pixels -> (P_i, D_llm) embeddings (``tag`` as
        for ``regions``)."""
        counts = [len(p) for p in points]
        if not sum(counts):
            return [maps[0].new_zeros(0, self.llm_dims) for _ in points]
        hidden = self.point_features(maps, points, canvas)
        height, width = canvas
        xy = torch.cat(points).to(hidden.dtype) / hidden.new_tensor([width, height])
        encoding = self.geometry_encoding([xy])
        inputs = self.point_out(hidden) + encoding + self.point_position(encoding)
        if tag is not None:
            attributes = None if self.point_attribute is None else self.point_attribute(hidden)
            inputs = tag(inputs, self.point_class(hidden), attributes)
        return list(inputs.split(counts))

    def geometry_encoding(self, coordinates: list[Tensor]) -> Tensor:
        """(K, 2 or 4) coordinate groups (canvas fractions, relative offsets, log ratios) -> (K, D_llm) sine
        encodings, every coordinate given an equal share of the channels. Each sin / cos pair has unit
        norm, so the whole has norm sqrt(D_llm), that of a layer-normalised content term."""
        num_feats = self.llm_dims // sum(group.shape[-1] for group in coordinates)
        encodings = [
            coordinate_to_encoding(group[None], num_feats, temperature=POSITION_TEMPERATURE)[0]
            for group in coordinates
        ]  # mmdet's encoding reads (B,N,2 or 4)
        return math.sqrt(2) * torch.cat(encodings, 1)

    def region_features(self, maps: list[Tensor], boxes: list[Tensor], canvas: tuple[int, int]) -> Tensor:
        """(sum R_i, D_llm) hidden features of every image's boxes: what a region's LLM input, its class
        feature (``region_class``) and its attribute feature (``region_attribute``) are read from."""
        return self.region_hidden(self._pool(maps, boxes, canvas))

    def point_features(self, maps: list[Tensor], points: list[Tensor], canvas: tuple[int, int]) -> Tensor:
        """(sum P_i, D_llm) hidden features of every image's points, as for regions."""
        return self.point_hidden(sample_levels(maps, points, canvas))

    def region_class_features(
        self, maps: list[Tensor], boxes: list[Tensor], canvas: tuple[int, int]
    ) -> list[Tensor]:
        """Per image, (R_i, d) class features of its boxes."""
        counts = [len(b) for b in boxes]
        return list(self.region_class(self.region_features(maps, boxes, canvas)).split(counts))
