# The COCO128 recipe of visionllm_tiny_coco128.py with one pretrained part: the ImageNet EfficientNet-Lite0
# backbone (packaged, offline) in place of the random slim ResNet-18; text encoder and LLM stay tiny and
# random. It separates what a pretrained backbone buys from what SmolLM2's cost takes away
# (visionllm_small_coco128.py pretrains all three parts, at a much higher cost per image).
_base_ = ["visionllm_tiny_coco128.py", "_base_/models/efficientnet_lite0.py"]

model = _base_.efficientnet_lite0_swap
# the pretrained backbone learns slower than the freshly initialised rest
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={"image_tokenizer.backbone": dict(lr_mult=0.1)}))
