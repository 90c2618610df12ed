# visionllm_tiny_region_classify_1k.py (region classification alone, plus a little detection) on the
# EfficientNet generalist's backbone: how fast one question learns when its features start pretrained.
_base_ = ["visionllm_tiny_region_classify_1k.py", "_base_/models/efficientnet_lite0.py"]

model = _base_.efficientnet_lite0_swap
