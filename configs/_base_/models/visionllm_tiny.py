# Tiny VisionLLM: the full architecture at a size that trains on 2 CPU cores. Random weights.
model = dict(
    type="VisionLLM",
    data_preprocessor=dict(
        type="DetDataPreprocessor",
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_size_divisor=32,
    ),
    image_tokenizer=dict(
        # a slim ResNet-18 (1/4 of the standard widths): any timm model name and kwargs work here
        backbone=dict(
            model_name="resnet18", out_indices=(2, 3, 4), channels=(16, 32, 64, 128), stem_width=16
        ),
        text_encoder=dict(
            config=dict(hidden_size=64, num_hidden_layers=1, num_attention_heads=2, intermediate_size=128)
        ),
        embed_dims=64,
        num_queries=16,
        num_heads=4,
        num_encoder_layers=1,
        # each layer refines the previous one's boxes, all trained (auxiliary losses): 3 layers doubled
        # the main job's bbox mAP over 1 (0.066 -> 0.130 after 600 iterations)
        num_decoder_layers=3,
        num_points=4,
    ),
    llm=dict(
        config=dict(
            model_type="llama",
            hidden_size=128,
            intermediate_size=256,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=4,
            max_position_embeddings=1024,
        ),
        tokenizer_path="minilm",
        num_bins=128,
        max_classes=16,
    ),
    tasks=dict(detect=dict(weight=1.0), segment=dict(weight=1.0, num_points=16)),
    eval_task="segment",
    num_slots=12,
    train_modes=("parallel", "autoregressive"),
    decode_mode="parallel",
    max_objects=30,
    token_loss=dict(),  # Deformable DETR's set loss on the visual tokens; they seed the slots
)
