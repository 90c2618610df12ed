# Tiny VisionLLM: the full architecture at a size that trains on 2 CPU cores. Random weights.
_base_ = ["visionllm.py"]

model = dict(
    image_tokenizer=dict(
        # a slim ResNet-18 (1/4 of the standard widths): any timm model name and kwargs work here
        backbone=dict(
            model_name="resnet18", out_indices=(2, 3, 4), channels=(16, 32, 64, 128), stem_width=16
        ),
        text_encoder=dict(
            _delete_=True,  # a random BERT of this size, not the packaged MiniLM
            config=dict(hidden_size=64, num_hidden_layers=1, num_attention_heads=2, intermediate_size=128),
        ),
        embed_dims=64,
        num_queries=16,
        num_encoder_layers=1,
        # each decoder layer refines the previous one's boxes, all trained (auxiliary losses)
        num_decoder_layers=3,
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
        max_classes=16,
    ),
)
