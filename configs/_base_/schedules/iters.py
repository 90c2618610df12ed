# Iteration-based training without its optimizer: 2000 iterations, validation every 500, and the learning
# rate warmed up linearly over 50 iterations from 1 %, then decayed along a cosine to 1 %.
max_iters = 2000
val_interval = 500
train_cfg = dict(type="IterBasedTrainLoop", max_iters=max_iters, val_interval=val_interval)
val_cfg = dict(type="ValLoop")
test_cfg = dict(type="TestLoop")
param_scheduler = [
    dict(type="LinearLR", start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type="CosineAnnealingLR", by_epoch=False, begin=50, end=max_iters, eta_min_ratio=0.01),
]
