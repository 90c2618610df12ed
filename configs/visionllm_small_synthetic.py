# Small VisionLLM (pretrained EfficientNet-Lite0, MiniLM and SmolLM2-135M with LoRA; all packaged, offline)
# on the embedded synthetic shapes at 128 px: the data and runtime of visionllm_tiny_synthetic.py.
_base_ = [
    "_base_/models/visionllm_small.py",
    "_base_/datasets/synthetic.py",
    "_base_/schedules/adamw_iters.py",
    "_base_/default_runtime.py",
]

train_dataloader = dict(batch_size=4)
val_dataloader = dict(batch_size=4)
test_dataloader = val_dataloader

max_iters = 600
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
optim_wrapper = dict(
    optimizer=dict(lr=3e-4, weight_decay=0.0),
    paramwise_cfg=dict(
        # the pretrained image backbone and text encoder learn slower than the freshly initialised rest
        custom_keys={
            "image_tokenizer.backbone": dict(lr_mult=0.1),
            "image_tokenizer.text_encoder": dict(lr_mult=0.1),
        },
        bypass_duplicate=True,  # SmolLM2 ties its input and output embeddings: one weight, two modules
    ),
)
param_scheduler = [
    dict(type="LinearLR", start_factor=0.01, by_epoch=False, begin=0, end=30),
    dict(type="CosineAnnealingLR", by_epoch=False, begin=30, end=max_iters, eta_min_ratio=0.01),
]
default_hooks = dict(
    checkpoint=dict(interval=200, max_keep_ckpts=2, save_best="coco/bbox_mAP", rule="greater")
)
