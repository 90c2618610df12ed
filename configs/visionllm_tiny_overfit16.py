# Overfit check: the tiny model memorises 16 synthetic images (train = val). A few minutes on 2 cores;
# tests/test_overfit.py runs it and expects bbox mAP >= 0.9 (detect task) and segm mAP >= 0.7.
_base_ = ["visionllm_tiny_synthetic.py"]

data_root = "data/overfit16/"
image_size = 128
synthetic = dict(
    out_dir=data_root, num_images=16, image_size=image_size, seed=1, val_fraction=0.0, max_objects=4
)

model = dict(
    tasks=dict(
        detect=dict(weight=1.0, full_list_prob=0.5),
        segment=dict(weight=1.0, num_points=16, full_list_prob=0.5),
    ),
    num_slots=8,
)

_pipeline_tail = [
    dict(type="Pad", size=(image_size, image_size), pad_val=dict(img=(114, 114, 114))),
    dict(
        type="PackDetInputs",
        meta_keys=(
            "img_id",
            "img_path",
            "ori_shape",
            "img_shape",
            "pad_shape",
            "scale_factor",
            "flip",
            "flip_direction",
            "instance_attributes",
        ),
    ),
]
train_pipeline = [
    dict(type="LoadImageRGB"),
    dict(type="LoadAnnotations", with_bbox=True, with_mask=True, poly2mask=False),
    dict(type="LoadInstanceAttributes"),
    *_pipeline_tail,
]
test_pipeline = [dict(type="LoadImageRGB"), *_pipeline_tail]
_dataset = dict(
    type="VisionLLMCocoDataset",
    data_root=data_root,
    ann_file="annotations/instances_train.json",
    data_prefix=dict(img="images/"),
)
train_dataloader = dict(
    batch_size=8, num_workers=0, persistent_workers=False, dataset=dict(_dataset, pipeline=train_pipeline)
)
val_dataloader = dict(
    batch_size=8,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(_dataset, test_mode=True, pipeline=test_pipeline),
)
test_dataloader = val_dataloader
val_evaluator = dict(
    type="CocoMetric", ann_file=data_root + "annotations/instances_train.json", metric=["bbox", "segm"]
)
test_evaluator = val_evaluator

max_iters = 600
train_cfg = dict(type="IterBasedTrainLoop", max_iters=max_iters, val_interval=max_iters)
optim_wrapper = dict(optimizer=dict(lr=2e-3, weight_decay=0.0))
param_scheduler = [
    dict(type="LinearLR", start_factor=0.01, by_epoch=False, begin=0, end=30),
    dict(type="CosineAnnealingLR", by_epoch=False, begin=30, end=max_iters, eta_min_ratio=0.01),
]
default_hooks = dict(checkpoint=dict(interval=max_iters, max_keep_ckpts=1), logger=dict(interval=50))
