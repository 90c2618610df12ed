# The generalist (visionllm_tiny_generalist.py: every task, one checkpoint, 1,000 synthetic images) on the
# ImageNet EfficientNet-Lite0 backbone (packaged, offline) instead of the random slim ResNet-18: region and
# point questions read the backbone's features, which a from-scratch backbone only starts to make useful
# by the end of a 20-minute run. README: `tools/train.py ... --time-budget 20`.
_base_ = ["visionllm_tiny_generalist.py", "_base_/models/efficientnet_lite0.py"]

model = _base_.efficientnet_lite0_swap
