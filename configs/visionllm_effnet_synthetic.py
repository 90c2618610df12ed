# Tiny VisionLLM with the ImageNet-pretrained EfficientNet-Lite0 backbone on the embedded synthetic
# shapes: visionllm_tiny_synthetic.py with the model swapped (same data, schedule and runtime).
_base_ = [
    "_base_/models/visionllm_tiny_effnet.py",
    "_base_/datasets/synthetic.py",
    "_base_/schedules/adamw_iters.py",
    "_base_/default_runtime.py",
]

max_iters = 600
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
optim_wrapper = dict(optimizer=dict(lr=2e-3, weight_decay=0.0))
param_scheduler = [
    dict(type="LinearLR", start_factor=0.01, by_epoch=False, begin=0, end=30),
    dict(type="CosineAnnealingLR", by_epoch=False, begin=30, end=max_iters, eta_min_ratio=0.01),
]
default_hooks = dict(
    checkpoint=dict(interval=200, max_keep_ckpts=2, save_best="coco/bbox_mAP", rule="greater")
)
