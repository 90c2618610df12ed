"""The detection ops VisionLLM uses, each running mmcv's compiled kernel where one is installed and
usable for the given tensors, else a pure-PyTorch version (so CPU machines with mmcv-lite work)."""

from visionllm.ops.deform_attn import multi_scale_deformable_attention
from visionllm.ops.nms import batched_nms, nms
from visionllm.ops.roi_align import roi_align

__all__ = ["batched_nms", "multi_scale_deformable_attention", "nms", "roi_align"]
