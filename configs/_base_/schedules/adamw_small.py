# adamw.py for the small VisionLLM (models/visionllm_small.py): no weight decay, and the pretrained image
# backbone and text encoder learn slower than the freshly initialised rest.
_base_ = ["adamw.py"]

optim_wrapper = dict(
    optimizer=dict(weight_decay=0.0),
    paramwise_cfg=dict(
        custom_keys={
            "image_tokenizer.backbone": dict(lr_mult=0.1),
            "image_tokenizer.text_encoder": dict(lr_mult=0.1),
        },
        bypass_duplicate=True,  # SmolLM2 ties its input and output embeddings: one weight, two modules
    ),
)
