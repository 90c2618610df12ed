"""Losses: matched parallel slots and autoregressive sequences (task-token logits), and the
DETR-style detection loss on the image tokenizer's visual tokens."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from mmdet.structures.bbox import bbox_cxcywh_to_xyxy, bbox_overlaps, bbox_xyxy_to_cxcywh
from mmengine.structures import InstanceData
from torch import Tensor

from visionllm.registry import MODELS, TASK_UTILS


def expected_bins(bin_logits: Tensor) -> Tensor:
    """(…, num_bins) logits -> (…) expected bin index under their softmax (differentiable)."""
    probs = bin_logits.softmax(-1)
    return probs @ torch.arange(bin_logits.shape[-1], device=bin_logits.device, dtype=probs.dtype)


#: Deformable DETR's class loss, used for the visual tokens and for the parallel slots alike.
FOCAL_LOSS = dict(type="FocalLoss", use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=2.0)
#: The tokens' class loss for soft (IoU-aware) targets: the quality focal loss of GFL, lowest where the
#: score equals its target (the focal loss is not, for targets between 0 and 1).
QUALITY_FOCAL_LOSS = dict(type="QualityFocalLoss", use_sigmoid=True, beta=2.0, loss_weight=2.0)


def pad_class_lists(logits: list[Tensor], targets: list[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """Per-image (K_i, n_i) class logits and targets -> (sum K_i, n_max) each, plus a weight that is 0
    on the padding columns: class lists differ in length between images, padding is never scored."""
    width = max(t.shape[1] for t in logits)

    def pad(tensors: list[Tensor]) -> Tensor:
        return torch.cat([F.pad(t, (0, width - t.shape[1])) for t in tensors])

    return pad(logits), pad(targets), pad([torch.ones_like(t) for t in logits])


@MODELS.register_module()
class SlotLoss:
    """DETR-style set loss on parallel slots, in token space.

    - class: a sigmoid focal loss (``loss_cls``, Deformable DETR's by default) on each slot's logit for
      each requested class reference at its class position; a matched slot's target is its object's
      class, an unmatched slot's is no class. Each (slot, class) pair is scored on its own, so a
      slot on a cat does not gain "dog" probability when the list asks for dogs but not cats, as a
      softmax over the listed classes would make it.
    - location: cross-entropy of matched slots' bins, plus an L1 term on the expected bin (normalised
      by the number of bins) that pulls a wrong bin towards the right one in proportion to the miss.
    """

    def __init__(self, loss_cls: dict | None = None, bin_weight: float = 1.0, l1_weight: float = 5.0) -> None:
        self.loss_cls = MODELS.build(loss_cls or FOCAL_LOSS)
        self.bin_weight = bin_weight
        self.l1_weight = l1_weight

    def __call__(
        self,
        class_logits: list[Tensor],
        class_targets: list[Tensor],
        bin_logits: Tensor,
        bin_targets: Tensor,
    ) -> dict[str, Tensor]:
        """Args:
        class_logits: per image (N, n_i) every slot's logits for the request's class references.
        class_targets: per image (N, n_i) one-hot of the matched slots' classes (zero rows elsewhere).
        bin_logits: (P, num_bins) every location token of the matched slots.
        bin_targets: (P,) their ground-truth bins.
        """
        logits, targets, valid = pad_class_lists(class_logits, class_targets)
        num_matched = max(int(targets.sum().item()), 1)
        loss_cls = self.loss_cls(logits, targets, valid, avg_factor=num_matched)
        if bin_targets.numel() == 0:
            zero = bin_logits.sum() * 0.0
            return dict(loss_slot_cls=loss_cls, loss_slot_bin=zero, loss_slot_l1=zero)
        num_bins = bin_logits.shape[-1]
        loss_bin = F.cross_entropy(bin_logits, bin_targets)
        loss_l1 = (expected_bins(bin_logits) - bin_targets.float()).abs().mean() / num_bins
        return dict(
            loss_slot_cls=loss_cls,
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


@MODELS.register_module()
class TokenDetectionLoss:
    """Deformable DETR's set loss on the visual tokens, over each request's own class list.

    Every token is a detection (its box and its class logits against the request's class names);
    mmdet's Hungarian assigner matches tokens to the requested objects, then a sigmoid focal loss
    scores classes (unmatched tokens: no class) and L1 + GIoU score the matched boxes. The LLM reads
    these tokens, so tokens that localise make its box tokens a short copy instead of a long search.
    Every decoder layer's detections are scored, each matched on its own, as Deformable DETR's
    auxiliary losses: the last layer's keys are ``loss_token_*``, layer i's before it ``d{i}.loss_token_*``.
    Two-stage proposals, when given, are scored the same way as class-agnostic detections (one class,
    "requested object"), under ``enc.loss_token_*``, as two-stage Deformable DETR's encoder loss.

    Two ways to teach more per image, both off by default:

    - ``aux_one_to_many`` = k > 1: the auxiliary layers (all but the last) match every object k times
      (the ground truth repeated, as H-DETR's one-to-many matching, here on the same tokens: its
      hybrid-layer scheme), so more tokens learn to find each object; the last layer stays one-to-one,
      the detections it gives need no NMS. At most as many matches as tokens.
    - ``iou_aware_power`` = p: a matched token's class target is IoU(its box, its object) ** p instead
      of 1, scored by the quality focal loss (IoU-aware classification, as GFL's and Stable-DINO's soft
      targets), so the score that ranks detections for AP also says how well the box fits.
    """

    def __init__(
        self,
        assigner: dict | None = None,
        loss_cls: dict | None = None,
        loss_bbox: dict | None = None,
        loss_iou: dict | None = None,
        aux_one_to_many: int = 1,
        iou_aware_power: float | None = None,
    ) -> None:
        self.assigner = TASK_UTILS.build(
            assigner
            or dict(
                type="HungarianAssigner",
                match_costs=[
                    dict(type="FocalLossCost", weight=2.0),
                    dict(type="BBoxL1Cost", weight=5.0, box_format="xywh"),
                    dict(type="IoUCost", iou_mode="giou", weight=2.0),
                ],
            )
        )
        default_cls = FOCAL_LOSS if iou_aware_power is None else QUALITY_FOCAL_LOSS
        self.loss_cls = MODELS.build(loss_cls or default_cls)
        self.loss_bbox = MODELS.build(loss_bbox or dict(type="L1Loss", loss_weight=5.0))
        self.loss_iou = MODELS.build(loss_iou or dict(type="GIoULoss", loss_weight=2.0))
        if aux_one_to_many < 1:
            raise ValueError(f"aux_one_to_many must be at least 1, got {aux_one_to_many}")
        self.aux_one_to_many = aux_one_to_many
        self.iou_aware_power = iou_aware_power

    def __call__(
        self,
        layer_boxes: Tensor,
        layer_class_logits: list[Tensor],
        gt_boxes: list[Tensor],
        gt_classes: list[Tensor],
        canvas: tuple[int, int],
        proposal_boxes: Tensor | None = None,
        proposal_logits: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Args:
        layer_boxes: (L,B,M,4) every decoder layer's token boxes, normalised (cx, cy, w, h) over the
            padded input.
        layer_class_logits: per image (L, M, n_i) every layer's logits over the request's classes.
        gt_boxes: per image (G_i,4) requested objects' xyxy boxes in padded-input pixels.
        gt_classes: per image (G_i,) their index into the request's classes.
        canvas: (height, width) of the padded input.
        proposal_boxes: (B,K,4) two-stage proposals, normalised (cx, cy, w, h), or None.
        proposal_logits: (B,K,1) their objectness logits, or None.
        """
        # matching costs and losses in fp32 whatever the model's dtype (cdist has no bf16 on CPU)
        layer_boxes = layer_boxes.float()
        layer_class_logits = [logits.float() for logits in layer_class_logits]
        gt_boxes = [boxes.float() for boxes in gt_boxes]
        num_layers = layer_boxes.shape[0]
        losses = {}
        for layer in range(num_layers):
            prefix = "" if layer == num_layers - 1 else f"d{layer}."
            layer_losses = self._one_layer(
                layer_boxes[layer],
                [logits[layer] for logits in layer_class_logits],
                gt_boxes,
                gt_classes,
                canvas,
                repeats=1 if layer == num_layers - 1 else self.aux_one_to_many,
            )
            losses.update({prefix + name: value for name, value in layer_losses.items()})
        if proposal_boxes is not None:
            proposal_losses = self._one_layer(
                proposal_boxes.float(),
                list(proposal_logits.float()),
                gt_boxes,
                [torch.zeros_like(classes) for classes in gt_classes],
                canvas,
            )
            losses.update({"enc." + name: value for name, value in proposal_losses.items()})
        return losses

    def _one_layer(
        self,
        boxes: Tensor,
        class_logits: list[Tensor],
        gt_boxes: list[Tensor],
        gt_classes: list[Tensor],
        canvas: tuple[int, int],
        repeats: int = 1,
    ) -> dict[str, Tensor]:
        """The set loss of one layer's detections: boxes (B,M,4), per image (M, n_i) class logits; each
        object matched to ``repeats`` tokens (fewer when the tokens run out)."""
        height, width = canvas
        scale = boxes.new_tensor([width, height, width, height])
        targets, matched_boxes, matched_gts = [], [], []
        for pred_boxes, cls, gt_box, gt_cls in zip(boxes, class_logits, gt_boxes, gt_classes):
            gt_box, gt_cls = gt_box.to(boxes), gt_cls.to(boxes.device)
            num_gts = len(gt_box)
            copies = max(1, min(repeats, len(pred_boxes) // max(num_gts, 1)))
            pred_xyxy = bbox_cxcywh_to_xyxy(pred_boxes) * scale
            assigned = self.assigner.assign(
                InstanceData(scores=cls.detach(), bboxes=pred_xyxy.detach()),
                InstanceData(bboxes=gt_box.repeat(copies, 1), labels=gt_cls.repeat(copies)),
                img_meta=dict(img_shape=(height, width)),
            ).gt_inds  # (M,) 0 = unmatched, else 1 + index into the repeated objects
            tokens = (assigned > 0).nonzero().squeeze(1)
            gts = (assigned[tokens] - 1) % max(num_gts, 1)
            target = torch.zeros_like(cls)
            if self.iou_aware_power is None:
                target[tokens, gt_cls[gts]] = 1.0
            else:
                fit = bbox_overlaps(pred_xyxy[tokens].detach(), gt_box[gts], is_aligned=True)
                target[tokens, gt_cls[gts]] = fit.clamp(min=0.0) ** self.iou_aware_power
            targets.append(target)
            matched_boxes.append(pred_boxes[tokens])
            matched_gts.append(gt_box[gts] / scale)
        logits, targets, valid = pad_class_lists(class_logits, targets)
        num_matched = max(sum(len(b) for b in matched_boxes), 1)
        pred = torch.cat(matched_boxes)  # (P,4) cxcywh, normalised
        gt = torch.cat(matched_gts)  # (P,4) xyxy, normalised
        if self.iou_aware_power is None:
            loss_cls = self.loss_cls(logits, targets, valid, avg_factor=num_matched)
        else:  # the quality focal loss sums each row over its classes: padding gets a logit costing 0
            loss_cls = self.loss_cls(logits.masked_fill(valid == 0, -1e4), targets, avg_factor=num_matched)
        return dict(
            loss_token_cls=loss_cls,
            loss_token_bbox=self.loss_bbox(pred, bbox_xyxy_to_cxcywh(gt), avg_factor=num_matched),
            loss_token_iou=self.loss_iou(bbox_cxcywh_to_xyxy(pred), gt, avg_factor=num_matched),
        )
