# COCO 2017 instance segmentation (boxes + polygons) at a 1024-pixel square canvas; the pipeline mirrors
# synthetic.py. Expects data/coco/{annotations,train2017,val2017} (the standard COCO download layout).
data_root = "data/coco/"
image_size = 1024

backend_args = None
train_pipeline = [
    dict(type="LoadImageRGB"),
    dict(type="LoadAnnotations", with_bbox=True, with_mask=True, poly2mask=False),
    dict(type="LoadInstanceAttributes"),
    dict(type="Resize", scale=(image_size, image_size), keep_ratio=True),
    dict(type="RandomFlip", prob=0.5),
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
test_pipeline = [
    dict(type="LoadImageRGB"),
    dict(type="Resize", scale=(image_size, image_size), keep_ratio=True),
    dict(type="Pad", size=(image_size, image_size), pad_val=dict(img=(114, 114, 114))),
    dict(
        type="PackDetInputs",
        meta_keys=("img_id", "img_path", "ori_shape", "img_shape", "pad_shape", "scale_factor"),
    ),
]

train_dataloader = dict(
    batch_size=2,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type="InfiniteSampler", shuffle=True),
    dataset=dict(
        type="VisionLLMCocoDataset",
        data_root=data_root,
        ann_file="annotations/instances_train2017.json",
        data_prefix=dict(img="train2017/"),
        filter_cfg=dict(filter_empty_gt=True, min_size=1),
        pipeline=train_pipeline,
    ),
)
val_dataloader = dict(
    batch_size=2,
    num_workers=4,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type="DefaultSampler", shuffle=False),
    dataset=dict(
        type="VisionLLMCocoDataset",
        data_root=data_root,
        ann_file="annotations/instances_val2017.json",
        data_prefix=dict(img="val2017/"),
        test_mode=True,
        pipeline=test_pipeline,
    ),
)
test_dataloader = val_dataloader
val_evaluator = dict(
    type="CocoMetric", ann_file=data_root + "annotations/instances_val2017.json", metric=["bbox", "segm"]
)
test_evaluator = val_evaluator
