# Full-scale schedule: adamw.py's AdamW at 2e-4 (plain mmengine OptimWrapper; DeepSpeed configs are
# separate), linear warm-up then cosine decay. Sized for 8 GPUs x 2 images: 90k iterations ~ 12 COCO epochs.
# The LLM's frozen weights are bf16 (model.llm.dtype); its LoRA and task-token rows train in fp32.
_base_ = ["adamw.py", "iters.py"]

max_iters = 90000
val_interval = 10000
train_cfg = dict(max_iters=max_iters, val_interval=val_interval)
optim_wrapper = dict(
    optimizer=dict(lr=2e-4, betas=(0.9, 0.999)),
    # a backbone initialised from `checkpoint` learns slower than the freshly initialised rest
    paramwise_cfg=dict(custom_keys={"image_tokenizer.backbone": dict(lr_mult=0.1)}),
)
param_scheduler = [
    dict(type="LinearLR", start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(type="CosineAnnealingLR", by_epoch=False, begin=1000, end=max_iters, eta_min_ratio=0.01),
]
auto_scale_lr = dict(base_batch_size=16)
