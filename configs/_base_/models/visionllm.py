# What every VisionLLM size shares: ImageNet input normalisation, the detection and segmentation tasks
# (segmentation evaluated), parallel and autoregressive training with parallel decoding, and Deformable
# DETR's set loss on the visual tokens, which seed the slots. A size base (visionllm_tiny.py, ...) sets the
# image tokenizer's backbone and widths, the LLM and, where they differ, the slot and object counts.
model = dict(
    type="VisionLLM",
    data_preprocessor=dict(
        type="DetDataPreprocessor",
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_size_divisor=32,
    ),
    # the packaged MiniLM-L6 text encoder (384-d; any local transformers encoder directory works)
    image_tokenizer=dict(text_encoder=dict(path="minilm"), num_heads=4, num_points=4),
    llm=dict(num_bins=128),
    tasks=dict(detect=dict(weight=1.0), segment=dict(weight=1.0, num_points=16)),
    eval_task="segment",
    num_slots=12,
    train_modes=("parallel", "autoregressive"),
    decode_mode="parallel",
    max_objects=30,
    token_loss=dict(),
)
