"""Losses over task-token logits: matched parallel slots and autoregressive sequences."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from visionllm.registry import MODELS


def expected_bins(bin_logits: Tensor) -> Tensor:
    """(…, num_bins) logits -> (…) expected bin index under their softmax (differentiable)."""
    probs = bin_logits.softmax(-1)
    return probs @ torch.arange(bin_logits.shape[-1], device=bin_logits.device, dtype=probs.dtype)


@MODELS.register_module()
class SlotLoss:
    """DETR-style set loss on parallel slots, in token space.

    - class: cross-entropy at every slot's class position; matched slots target their object's class
      reference, the others target ``<noobj>`` with weight ``noobj_weight`` (most slots are empty).
    - location: cross-entropy of matched slots' bins, plus an L1 term on the expected bin (normalised
      by the number of bins) that pulls a wrong bin towards the right one in proportion to the miss.
    """

    def __init__(
        self,
        class_weight: float = 1.0,
        bin_weight: float = 1.0,
        l1_weight: float = 5.0,
        noobj_weight: float = 0.1,
    ) -> None:
        self.class_weight = class_weight
        self.bin_weight = bin_weight
        self.l1_weight = l1_weight
        self.noobj_weight = noobj_weight

    def __call__(
        self, class_logits: Tensor, class_targets: Tensor, bin_logits: Tensor, bin_targets: Tensor
    ) -> dict[str, Tensor]:
        """Args:
        class_logits: (S, C+1) all slots of the batch; the last column is ``<noobj>``.
        class_targets: (S,) class index, ``C`` (= noobj) for unmatched slots.
        bin_logits: (P, num_bins) every location token of the matched slots.
        bin_targets: (P,) their ground-truth bins.
        """
        noobj = class_logits.shape[-1] - 1
        weights = torch.ones(noobj + 1, device=class_logits.device)
        weights[noobj] = self.noobj_weight
        loss_cls = F.cross_entropy(class_logits, class_targets, weight=weights)
        if bin_targets.numel() == 0:
            zero = bin_logits.sum() * 0.0
            return dict(loss_slot_cls=self.class_weight * loss_cls, loss_slot_bin=zero, loss_slot_l1=zero)
        num_bins = bin_logits.shape[-1]
        loss_bin = F.cross_entropy(bin_logits, bin_targets)
        loss_l1 = (expected_bins(bin_logits) - bin_targets.float()).abs().mean() / num_bins
        return dict(
            loss_slot_cls=self.class_weight * loss_cls,
            loss_slot_bin=self.bin_weight * loss_bin,
            loss_slot_l1=self.l1_weight * loss_l1,
        )


def sequence_loss(logits: Tensor, legal: Tensor, targets: Tensor, weight: float = 1.0) -> Tensor:
    """Cross-entropy of autoregressive targets among the grammar-legal tokens at each step.

    Args:
        logits: (T, V) task-token logits at the positions that predict a target.
        legal: (T, V) bool, the grammar's legal tokens at each of those positions.
        targets: (T,) local target ids (always legal).
    """
    return weight * F.cross_entropy(logits.masked_fill(~legal, float("-inf")), targets)
