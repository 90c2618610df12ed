"""Hungarian matching of parallel-decoding slots to ground-truth objects (DETR-style, scipy)."""

from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from visionllm.registry import MODELS


@MODELS.register_module()
class HungarianMatcher:
    """Assigns each ground-truth object to one slot, minimising a class + location cost.

    cost[slot, gt] = -class_weight * p_slot(class_gt) + location_weight * mean |E[bin] - bin_gt| / num_bins

    ``E[bin]`` is the expected bin under the slot's predicted distribution: it moves smoothly with the
    prediction, unlike an argmax, so early in training near misses are still ranked by distance.
    """

    def __init__(self, class_weight: float = 1.0, location_weight: float = 5.0) -> None:
        self.class_weight = class_weight
        self.location_weight = location_weight

    @torch.no_grad()
    def __call__(
        self, class_probs: Tensor, expected_bins: Tensor, gt_classes: Tensor, gt_bins: Tensor, num_bins: int
    ) -> tuple[Tensor, Tensor]:
        """Match one image.

        Args:
            class_probs: (N, C) slot probabilities over the request's classes (C class references).
            expected_bins: (N, K) expected location bin of each of the K coordinates of every slot.
            gt_classes: (G,) class index of each ground-truth object into the request's classes.
            gt_bins: (G, K) ground-truth location bins.
        Returns:
            (slot indices, gt indices), each (min(N, G),) long tensors.
        """
        if gt_classes.numel() == 0:
            empty = torch.zeros(0, dtype=torch.long)
            return empty, empty
        class_cost = -class_probs[:, gt_classes]  # (N,G)
        location_cost = torch.cdist(expected_bins.float(), gt_bins.float(), p=1) / (
            gt_bins.shape[1] * num_bins
        )
        cost = self.class_weight * class_cost + self.location_weight * location_cost
        slots, gts = linear_sum_assignment(cost.cpu().numpy())
        return torch.as_tensor(slots, dtype=torch.long), torch.as_tensor(gts, dtype=torch.long)
