# A user's COCO-format data, shown on COCO128 (the first 128 COCO train2017 images; train = val, as in the
# README's "your own data"), read at coco_format.py's 128 px and scored on boxes. The paths assume
# ../shared/data/coco128 beside the checkout; override the data_root-derived keys with --cfg-options.
_base_ = ["coco_format.py"]

data_root = "../shared/data/coco128/"
ann_file = "annotations/instances_train2017.json"
synthetic = None  # real data: no synthetic set to generate

__dataset = dict(data_root=data_root, ann_file=ann_file, data_prefix=dict(img="train2017/"))
train_dataloader = dict(batch_size=4, dataset=__dataset)
val_dataloader = dict(batch_size=4, dataset=__dataset)
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + ann_file, metric=["bbox"])
test_evaluator = val_evaluator
