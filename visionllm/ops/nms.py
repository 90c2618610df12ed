"""Non-maximum suppression: mmcv's compiled kernel when available, else a vectorised PyTorch version."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from visionllm.compat import mmcv_has_compiled_ops

#: Devices mmcv's compiled ``nms`` kernel runs on.
_MMCV_NMS_DEVICES = ("cpu", "cuda")


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise IoU of two sets of xyxy boxes, (N, 4) x (M, 4) -> (N, M); area is (x2 - x1) * (y2 - y1)."""
    area1 = (boxes1[:, 2] - boxes1[:, 0]) * (boxes1[:, 3] - boxes1[:, 1])
    area2 = (boxes2[:, 2] - boxes2[:, 0]) * (boxes2[:, 3] - boxes2[:, 1])
    top_left = torch.maximum(boxes1[:, None, :2], boxes2[None, :, :2])
    bottom_right = torch.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = (bottom_right - top_left).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (area1[:, None] + area2[None, :] - inter)


def nms_pytorch(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy NMS in PyTorch: one IoU matrix, then a pass that only visits boxes still kept.

    Ties in score keep their input order (stable sort). A box is suppressed when its IoU with a kept,
    higher-ranked box is strictly greater than ``iou_threshold``, as in mmcv and torchvision.
    """
    order = torch.sort(scores, descending=True, stable=True).indices
    sorted_boxes = boxes[order].to(torch.promote_types(boxes.dtype, torch.float32))
    suppresses = (box_iou(sorted_boxes, sorted_boxes) > iou_threshold).triu_(diagonal=1).cpu().numpy()
    removed = np.zeros(len(order), dtype=bool)
    kept = []
    for i in range(len(order)):
        if not removed[i]:
            kept.append(i)
            removed |= suppresses[i]
    return order[torch.as_tensor(kept, dtype=torch.long, device=order.device)]


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Indices of the boxes (N, 4, xyxy) that survive NMS, sorted by descending score."""
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    if mmcv_has_compiled_ops() and boxes.device.type in _MMCV_NMS_DEVICES:
        from mmcv.ops import nms as mmcv_nms

        return mmcv_nms(boxes, scores, float(iou_threshold))[1]
    return nms_pytorch(boxes, scores, iou_threshold)


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """NMS within each group of ``idxs`` (e.g. class), in one call: each group's boxes are shifted by a
    per-group offset larger than the span of all coordinates, so boxes of different groups never overlap.
    """
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    span = boxes.max() - boxes.min() + 1
    shifted = boxes + (idxs.to(boxes) * span)[:, None]
    return nms(shifted, scores, iou_threshold)
