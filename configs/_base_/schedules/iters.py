# Iteration-based AdamW with linear warm-up and cosine decay, gradients clipped (LLM training habit).
max_iters = 2000
val_interval = 500
train_cfg = dict(type="IterBasedTrainLoop", max_iters=max_iters, val_interval=val_interval)
val_cfg = dict(type="ValLoop")
test_cfg = dict(type="TestLoop")

optim_wrapper = dict(
    type="OptimWrapper",
    # fused: one kernel for all parameters; on 2 CPU cores the per-parameter loop took 14 % of a tiny
    # step, fused 6 % (bench/profile_train_step.py)
    optimizer=dict(type="AdamW", lr=3e-4, weight_decay=0.05, betas=(0.9, 0.95), fused=True),
    clip_grad=dict(max_norm=1.0, norm_type=2),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0),
)
param_scheduler = [
    dict(type="LinearLR", start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type="CosineAnnealingLR", by_epoch=False, begin=50, end=max_iters, eta_min_ratio=0.05),
]
auto_scale_lr = dict(enable=False, base_batch_size=8)
