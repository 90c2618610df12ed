# A run on the embedded synthetic shapes without its model and optimizer: 600 iterations, validated at the
# end, the learning rate warmed up over the first 30; checkpoints every 200 iterations, keeping the best two
# by bbox mAP.
_base_ = ["../datasets/synthetic.py", "../schedules/iters.py", "../default_runtime.py"]

max_iters = 600
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
param_scheduler = [
    dict(type="LinearLR", start_factor=0.01, by_epoch=False, begin=0, end=30),
    dict(type="CosineAnnealingLR", by_epoch=False, begin=30, end=max_iters, eta_min_ratio=0.01),
]
default_hooks = dict(
    checkpoint=dict(interval=200, max_keep_ckpts=2, save_best="coco/bbox_mAP", rule="greater")
)
