# Region classification alone (visionllm_tiny_region_classify_1k.py) with the ImageNet EfficientNet-Lite0
# backbone: how much of the question's slow start is the from-scratch backbone's?
_base_ = ["visionllm_tiny_region_classify_1k.py", "_base_/models/efficientnet_lite0.py"]

model = dict(
    data_preprocessor=dict(**_base_.efficientnet_lite0_normalization),
    image_tokenizer=dict(backbone=dict(_delete_=True, **_base_.efficientnet_lite0)),
)
