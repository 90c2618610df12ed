"""Slot refinement: what a parallel slot's location tokens read of the image at its seed, and how they
write their answer relative to the seed.

A seeded slot starts from a visual token's detection: its box, written as the task's geometry (two box
corners, or K polygon vertices along the box's outline), is a Laplace prior on the slot's location
tokens (``VisionLLM._slot_inputs``). The LLM then has to say how the object differs from that seed,
which it could not learn from what it read before (20-minute generalist: its polygons scored the same
mask IoU as the seed boxes' outlines, its boxes the same AP as the tokens'):

* it read one embedding per slot, the same on every location token, and no image feature at the
  seed's points, so vertex k could neither tell itself from vertex j nor see where the object's edge
  is near it;
* it wrote a bin by its absolute index (a row of the output embeddings), so "three bins inward" was a
  different output at every position of the canvas.

Two parts, each off unless configured, each zero at first (the model starts as the seeds' prior):

``vertex_features``: every (x, y) pair of the seed's geometry is sampled on every level of the image
    tokenizer's maps (bilinear, as a ``<point>`` input) and mapped by an MLP to the LLM's width, plus a
    learnt embedding of the pair's index; the sum is added to the pair's two location tokens. As Deep
    Snake reads features at the initial contour's vertices before it moves them.
``offset_radius`` = R: each location token's final state gives logits over offsets -R..R bins from its
    seed coordinate, added to the bins they land on, so a refinement is the same output wherever the
    object lies, as Deformable DETR's box refinement predicts deltas from the previous box.
"""

from __future__ import annotations

import torch
from mmdet.models.layers import MLP
from torch import Tensor, nn

from visionllm.models.prompt_encoder import sample_levels


class SlotRefiner(nn.Module):
    """Seed-point features into a slot's location tokens, offsets from the seed out of them.

    Args:
        embed_dims: channels of the image tokenizer's maps.
        llm_dims: the LLM's width.
        num_levels: how many maps (one sample per level, concatenated).
        max_pairs: the most (x, y) pairs a task's object has (K for a K-point polygon).
        vertex_features: build the seed-point input (module docstring).
        offset_radius: R of the offset logits; 0 builds none.
    """

    def __init__(
        self,
        embed_dims: int,
        llm_dims: int,
        num_levels: int,
        max_pairs: int,
        vertex_features: bool = True,
        offset_radius: int = 0,
    ) -> None:
        super().__init__()
        if offset_radius < 0:
            raise ValueError(f"offset_radius must be >= 0, got {offset_radius}")
        self.offset_radius = offset_radius
        self.vertex_mlp = MLP(num_levels * embed_dims, llm_dims, llm_dims, 2) if vertex_features else None
        self.pair_embed = nn.Embedding(max_pairs, llm_dims) if vertex_features else None
        if vertex_features:
            nn.init.zeros_(self.vertex_mlp.layers[-1].weight)
            nn.init.zeros_(self.vertex_mlp.layers[-1].bias)
            nn.init.zeros_(self.pair_embed.weight)
        self.offset_head = nn.Linear(llm_dims, 2 * offset_radius + 1) if offset_radius else None
        if self.offset_head is not None:
            nn.init.zeros_(self.offset_head.weight)
            nn.init.zeros_(self.offset_head.bias)

    def location_inputs(
        self, maps: list[Tensor], seed_points: list[Tensor], canvas: tuple[int, int]
    ) -> list[Tensor] | None:
        """Per image, its slots' seed points (N, P, 2) x,y model-input pixels -> (N, 2P, D) inputs of the
        slots' location tokens (each pair's input on its x and its y token); None without
        ``vertex_features``."""
        if self.vertex_mlp is None:
            return None
        most = max(points.shape[1] for points in seed_points)
        if most > self.pair_embed.num_embeddings:
            raise ValueError(
                f"a slot has {most} (x, y) pairs but the refiner was built for at most "
                f"{self.pair_embed.num_embeddings}"
            )
        features = sample_levels(maps, [points.reshape(-1, 2) for points in seed_points], canvas)
        inputs = self.vertex_mlp(features).split([points.numel() // 2 for points in seed_points])
        return [
            (rows.view(*points.shape[:2], -1) + self.pair_embed.weight[: points.shape[1]]).repeat_interleave(
                2, dim=1
            )  # a pair's x and y token: the same input
            for rows, points in zip(inputs, seed_points)
        ]

    def offset_logits(self, states: Tensor, seed_bins: Tensor, num_bins: int) -> Tensor | None:
        """Location tokens' final states (N, C, D) and their seed coordinates (N, C) in fractional bins ->
        (N, C, num_bins) logits: each offset's logit on the bin it lands on (nearest seed bin + offset),
        zero beyond R and off the canvas. None without ``offset_radius``."""
        if self.offset_head is None:
            return None
        radius = self.offset_radius
        offsets = self.offset_head(states.to(self.offset_head.weight.dtype)).float()  # (N,C,2R+1)
        centre = seed_bins.round().long().clamp(0, num_bins - 1)
        landing = centre.unsqueeze(-1) + torch.arange(-radius, radius + 1, device=centre.device)
        inside = (landing >= 0) & (landing < num_bins)
        logits = offsets.new_zeros(*seed_bins.shape, num_bins + 1)  # the last column takes what falls off
        logits.scatter_(-1, landing.where(inside, num_bins), offsets * inside)
        return logits[..., :num_bins]
