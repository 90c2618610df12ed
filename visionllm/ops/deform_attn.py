"""Multi-scale deformable attention (Deformable DETR): mmcv's compiled CUDA kernel when available, else
mmcv's own ``grid_sample`` implementation, which runs on any device and with mmcv-lite."""

from __future__ import annotations

from mmcv.ops.multi_scale_deform_attn import (
    MultiScaleDeformableAttnFunction,
    multi_scale_deformable_attn_pytorch,
)
from torch import Tensor

from visionllm.compat import mmcv_has_compiled_ops


def multi_scale_deformable_attention(
    value: Tensor,
    spatial_shapes: Tensor,
    level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
    im2col_step: int = 64,
) -> Tensor:
    """Attention-weighted sum of bilinear samples from multi-level feature maps.

    Shapes: ``value`` (bs, num_keys, num_heads, head_dims); ``spatial_shapes`` (num_levels, 2) as (h, w);
    ``level_start_index`` (num_levels,); ``sampling_locations`` (bs, num_queries, num_heads, num_levels,
    num_points, 2) as normalised (x, y) in [0, 1]; ``attention_weights`` (bs, num_queries, num_heads,
    num_levels, num_points). Returns (bs, num_queries, num_heads * head_dims).
    """
    if mmcv_has_compiled_ops() and value.is_cuda:
        return MultiScaleDeformableAttnFunction.apply(
            value, spatial_shapes, level_start_index, sampling_locations, attention_weights, im2col_step
        )
    return multi_scale_deformable_attn_pytorch(value, spatial_shapes, sampling_locations, attention_weights)
