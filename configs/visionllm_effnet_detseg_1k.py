# The EfficientNet generalist's peer: visionllm_tiny_detseg_1k.py (detection and segmentation only, same
# data and budget) on the same backbone.
_base_ = ["visionllm_tiny_detseg_1k.py", "_base_/models/efficientnet_lite0.py"]

model = _base_.efficientnet_lite0_swap
