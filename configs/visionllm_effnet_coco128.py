# The COCO128 recipe of visionllm_tiny_coco128.py with one pretrained part: the ImageNet EfficientNet-Lite0
# backbone (packaged, offline) in place of the random slim ResNet-18; text encoder and LLM stay tiny and
# random. It separates what a pretrained backbone buys from what SmolLM2's cost takes away
# (visionllm_small_coco128.py pretrains all three parts but trains ~4x fewer images per minute).
_base_ = ["visionllm_tiny_coco128.py"]

model = dict(
    # the weights were trained on RGB scaled to [-1, 1]: (pixel - 127.5) / 127.5
    data_preprocessor=dict(mean=[127.5, 127.5, 127.5], std=[127.5, 127.5, 127.5]),
    image_tokenizer=dict(
        backbone=dict(
            _delete_=True,  # drop the slim ResNet's kwargs (channels, stem_width)
            model_name="tf_efficientnet_lite0",
            out_indices=(2, 3, 4),  # 40, 112, 320 channels at strides 8, 16, 32
            checkpoint="efficientnet-lite0",
        )
    ),
)
# the pretrained backbone learns slower than the freshly initialised rest
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={"image_tokenizer.backbone": dict(lr_mult=0.1)}))
