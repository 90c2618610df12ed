# COCO-format instance data (boxes + polygons) on a square canvas: the pipelines, dataloaders and evaluator
# every dataset base shares, with the embedded synthetic set's paths, size and batch (synthetic.py adds how
# to generate it). Another dataset overrides its paths, batch and workers; for another image_size it
# rebuilds the pipelines with their Resize and Pad steps at that size (see coco_instance.py).
data_root = "data/synthetic/"
image_size = 128

backend_args = None
__test_meta_keys = ("img_id", "img_path", "ori_shape", "img_shape", "pad_shape", "scale_factor")
__canvas = [
    dict(type="Resize", scale=(image_size, image_size), keep_ratio=True),
    dict(type="Pad", size=(image_size, image_size), pad_val=dict(img=(114, 114, 114))),
]
train_pipeline = [
    dict(type="LoadImageRGB"),
    dict(type="LoadAnnotations", with_bbox=True, with_mask=True, poly2mask=False),
    dict(type="LoadInstanceAttributes"),
    __canvas[0],
    dict(type="RandomFlip", prob=0.5),
    __canvas[1],
    dict(
        type="PackDetInputs",
        meta_keys=(*__test_meta_keys, "flip", "flip_direction", "instance_attributes"),
    ),
]
test_pipeline = [dict(type="LoadImageRGB"), *__canvas, dict(type="PackDetInputs", meta_keys=__test_meta_keys)]
# the test pipeline with the ground truth: for tasks whose validation examples are built from it (region,
# point and image questions: VisionLLM.eval_tasks)
annotated_test_pipeline = [
    dict(type="LoadImageRGB"),
    dict(type="LoadAnnotations", with_bbox=True, with_mask=True, poly2mask=False),
    dict(type="LoadInstanceAttributes"),
    *__canvas,
    dict(type="PackDetInputs", meta_keys=(*__test_meta_keys, "instance_attributes")),
]

# images are loaded in the training process: on 2 cores a loader worker beside the two torch threads stalls
# them (0.52 -> 0.34 s per step; docs/benchmarks.md "Where a training step goes"); raise it on more cores
__loader = dict(batch_size=8, num_workers=0, persistent_workers=False)
__dataset = dict(type="VisionLLMCocoDataset", data_root=data_root, data_prefix=dict(img="images/"))
train_dataloader = dict(
    **__loader,
    sampler=dict(type="InfiniteSampler", shuffle=True),
    dataset=dict(
        **__dataset,
        ann_file="annotations/instances_train.json",
        filter_cfg=dict(filter_empty_gt=True, min_size=1),
        pipeline=train_pipeline,
    ),
)
val_dataloader = dict(
    **__loader,
    drop_last=False,
    sampler=dict(type="DefaultSampler", shuffle=False),
    dataset=dict(
        **__dataset, ann_file="annotations/instances_val.json", test_mode=True, pipeline=test_pipeline
    ),
)
test_dataloader = val_dataloader
val_evaluator = dict(  # mmdet's CocoMetric, scoring against the ground truth the dataset kept
    type="VisionLLMCocoMetric", ann_file=data_root + "annotations/instances_val.json", metric=["bbox", "segm"]
)
test_evaluator = val_evaluator
