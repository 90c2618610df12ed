# Full-scale VisionLLM: ResNet-50 language-guided image tokenizer + LLaMA-7B decoder with LoRA.
#
# Local weights (nothing is ever downloaded; an unset path means random init, a missing one is an error):
#   model.llm.path                               a local LLaMA-family directory in transformers format
#                                                (config, weights, tokenizer). Set it for real training:
#                                                `config` below is then ignored and the tokenizer comes
#                                                from that directory. Until then the LLM is built randomly
#                                                from `config` (LLaMA-2-7B dimensions) - and because no
#                                                LLaMA tokenizer ships offline, `model.llm.tokenizer_path`
#                                                must name one (tests use the packaged MiniLM tokenizer,
#                                                `tokenizer_path='minilm'`, so a vocabulary of 30522 rows
#                                                plus the task tokens instead of 32000 plus them).
#   model.image_tokenizer.backbone.checkpoint    a local timm state dict for the backbone's features
#   model.image_tokenizer.text_encoder.path      'minilm' = the packaged MiniLM-L6 (384-d); any local
#                                                transformers encoder directory works
_base_ = ["visionllm.py"]

model = dict(
    image_tokenizer=dict(
        backbone=dict(model_name="resnet50", out_indices=(2, 3, 4), checkpoint=None),  # strides 8, 16, 32
        embed_dims=256,
        num_queries=128,
        num_heads=8,
        num_encoder_layers=6,
        num_decoder_layers=6,
    ),
    llm=dict(
        path=None,
        config=dict(
            model_type="llama",
            vocab_size=32000,
            hidden_size=4096,
            intermediate_size=11008,
            num_hidden_layers=32,
            num_attention_heads=32,
            num_key_value_heads=32,
            max_position_embeddings=4096,  # parallel segmentation: 128 + ~300 + 100 slots x 33 tokens
            rms_norm_eps=1e-5,
        ),
        tokenizer_path=None,
        num_bins=512,
        max_classes=100,
        lora=dict(
            r=8, lora_alpha=16, lora_dropout=0.05, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]
        ),
        gradient_checkpointing=True,
        dtype="bfloat16",
    ),
    num_slots=100,  # COCO evaluation keeps up to 100 detections per image
    max_objects=100,
)
