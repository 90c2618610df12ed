# COCO 2017 instance segmentation (boxes + polygons) at a 1024-pixel square canvas, with the pipelines of
# coco_format.py. Expects data/coco/{annotations,train2017,val2017} (the standard COCO download layout).
_base_ = ["coco_format.py"]

data_root = "data/coco/"
image_size = 1024
__at_size = dict(Resize=dict(scale=(image_size, image_size)), Pad=dict(size=(image_size, image_size)))
train_pipeline = [dict(step, **__at_size.get(step.type, {})) for step in _base_.train_pipeline]
test_pipeline = [dict(step, **__at_size.get(step.type, {})) for step in _base_.test_pipeline]

__loader = dict(batch_size=2, num_workers=4)
__split = {  # COCO's layout: annotations/instances_<split>2017.json, images in <split>2017/
    split: dict(
        data_root=data_root,
        ann_file=f"annotations/instances_{split}2017.json",
        data_prefix=dict(img=f"{split}2017/"),
    )
    for split in ("train", "val")
}
train_dataloader = dict(**__loader, dataset=dict(**__split["train"], pipeline=train_pipeline))
val_dataloader = dict(**__loader, dataset=dict(**__split["val"], pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + __split["val"]["ann_file"])
test_evaluator = val_evaluator
