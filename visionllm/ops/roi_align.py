"""RoIAlign (average pooling): mmcv's compiled kernel when available, else a differentiable PyTorch version
with the same semantics as mmcv / torchvision."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn.modules.utils import _pair

from visionllm.compat import mmcv_has_compiled_ops

#: Devices mmcv's compiled ``roi_align`` kernel runs on.
_MMCV_ROI_ALIGN_DEVICES = ("cpu", "cuda")
#: Upper bound on the sampled values (RoIs x samples x channels) gathered at once, to bound memory.
_MAX_GATHERED_VALUES = 1 << 24


def _axis_interpolation(coords: Tensor, size: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Bilinear taps along one axis: low/high indices and weights for sample coordinates (any shape).

    As in mmcv's kernel: samples beyond [-1, size] contribute nothing; others are clamped into the map.
    """
    inside = (coords >= -1) & (coords <= size)
    coords = coords.clamp(min=0)
    low = coords.floor().long().clamp(max=size - 1)
    high = (low + 1).clamp(max=size - 1)
    frac = torch.where(low >= size - 1, torch.zeros_like(coords), coords - low)
    return low, high, (1 - frac) * inside, frac * inside


def _sample_coords(start: Tensor, length: Tensor, bins: int, grid: int) -> Tensor:
    """Coordinates of ``grid`` evenly spaced samples in each of ``bins`` bins: (K,) -> (K, bins * grid)."""
    steps = torch.arange(bins * grid, dtype=start.dtype, device=start.device) + 0.5
    return start[:, None] + steps * (length / (bins * grid))[:, None]


def _pool_group(
    table: Tensor, image_offset: Tensor, ys: Tensor, xs: Tensor, size: tuple[int, int], grid: tuple[int, int]
) -> Tensor:
    """Average of bilinear samples per bin for RoIs sharing a sampling grid.

    ``table`` is the feature map as (B*H*W, C); ``image_offset`` (K,) is each RoI's first row in it;
    ``ys`` (K, out_h*gh) and ``xs`` (K, out_w*gw) are the sample coordinates. Returns (K, C, out_h, out_w).
    """
    height, width = size
    y_low, y_high, wy_low, wy_high = _axis_interpolation(ys, height)
    x_low, x_high, wx_low, wx_high = _axis_interpolation(xs, width)
    pooled = 0
    for y_idx, wy in ((y_low, wy_low), (y_high, wy_high)):
        for x_idx, wx in ((x_low, wx_low), (x_high, wx_high)):
            flat_idx = image_offset[:, None, None] + y_idx[:, :, None] * width + x_idx[:, None, :]
            weight = wy[:, :, None, None] * wx[:, None, :, None]
            pooled = pooled + table[flat_idx] * weight  # (K, Sy, Sx, C)
    num_rois, num_y, num_x, channels = pooled.shape
    grid_h, grid_w = grid
    pooled = pooled.view(num_rois, num_y // grid_h, grid_h, num_x // grid_w, grid_w, channels)
    return pooled.mean(dim=(2, 4)).permute(0, 3, 1, 2)


def roi_align_pytorch(
    features: Tensor,
    rois: Tensor,
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = 0,
    aligned: bool = True,
) -> Tensor:
    """RoIAlign in PyTorch, differentiable with respect to ``features`` (not ``rois``, as in mmcv).

    Each output bin averages ``sampling_ratio``^2 bilinear samples, or ceil(roi_size / output_size) per axis
    when ``sampling_ratio`` is 0. RoIs are grouped by that grid so each group is one batched gather.
    """
    out_h, out_w = _pair(output_size)
    _, channels, height, width = features.shape
    rois = rois.detach().to(features.dtype)
    x1, y1, x2, y2 = (rois[:, 1:] * spatial_scale - (0.5 if aligned else 0.0)).unbind(dim=1)
    roi_w, roi_h = x2 - x1, y2 - y1
    if not aligned:  # legacy mode: RoIs are at least one pixel
        roi_w, roi_h = roi_w.clamp(min=1), roi_h.clamp(min=1)
    if sampling_ratio > 0:
        grids = torch.full((len(rois), 2), sampling_ratio, dtype=torch.long, device=rois.device)
    else:
        grids = torch.stack([torch.ceil(roi_h / out_h), torch.ceil(roi_w / out_w)], dim=1).clamp(min=0).long()

    table = features.permute(0, 2, 3, 1).reshape(-1, channels)
    image_offset = rois[:, 0].long() * (height * width)
    output = features.new_zeros(len(rois), channels, out_h, out_w)
    for grid_h, grid_w in torch.unique(grids, dim=0).tolist():
        if grid_h == 0 or grid_w == 0:
            continue  # empty RoI: no samples, output stays 0 as in mmcv
        members = torch.nonzero((grids[:, 0] == grid_h) & (grids[:, 1] == grid_w)).squeeze(1)
        values_per_roi = out_h * grid_h * out_w * grid_w * channels
        for chunk in members.split(max(1, _MAX_GATHERED_VALUES // values_per_roi)):
            ys = _sample_coords(y1[chunk], roi_h[chunk], out_h, grid_h)
            xs = _sample_coords(x1[chunk], roi_w[chunk], out_w, grid_w)
            output[chunk] = _pool_group(table, image_offset[chunk], ys, xs, (height, width), (grid_h, grid_w))
    return output


def roi_align(
    features: Tensor,
    rois: Tensor,
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = 0,
    aligned: bool = True,
) -> Tensor:
    """Average RoIAlign of ``rois`` (K, 5: batch index, x1, y1, x2, y2) on ``features`` (B, C, H, W).

    Returns (K, C, out_h, out_w). ``spatial_scale`` maps RoI coordinates onto the feature map; ``aligned``
    shifts them by -0.5 pixel so that sample points sit at pixel centres (Detectron2 / mmcv convention).
    """
    if mmcv_has_compiled_ops() and features.device.type in _MMCV_ROI_ALIGN_DEVICES:
        from mmcv.ops import roi_align as mmcv_roi_align

        return mmcv_roi_align(
            features, rois, _pair(output_size), spatial_scale, sampling_ratio, "avg", aligned
        )
    return roi_align_pytorch(features, rois, output_size, spatial_scale, sampling_ratio, aligned)
