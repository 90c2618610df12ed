# The synthetic run on 1,000 images whose validation also scores question tasks: the val pipeline loads the
# ground truth (the questions' examples are built from it) and TaskExamplesMetric joins the COCO metric.
# A model config lists its question tasks in `model.tasks` and `model.eval_tasks`.
_base_ = ["synthetic.py"]

data_root = "data/synthetic_1k/"
synthetic = dict(out_dir=data_root, num_images=1000, val_fraction=0.1)

__dataset = dict(data_root=data_root)
train_dataloader = dict(dataset=__dataset)
val_dataloader = dict(dataset=dict(**__dataset, pipeline=_base_.annotated_test_pipeline))
test_dataloader = val_dataloader
val_evaluator = [
    dict(
        type="VisionLLMCocoMetric",
        ann_file=data_root + "annotations/instances_val.json",
        metric=["bbox", "segm"],
    ),
    dict(type="TaskExamplesMetric"),
]
test_evaluator = val_evaluator
