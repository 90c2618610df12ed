# The generalist: one tiny model and one checkpoint for detection, segmentation and grounding plus the
# region, point and image questions (answers in words), trained on 1,000 synthetic images. Validation
# scores every task on the val split: COCO bbox/segm mAP, and each question task by its own metric
# (TaskExamplesMetric; `tools/test.py` prints the table). README: `tools/train.py ... --time-budget 20`.
_base_ = ["visionllm_tiny_synthetic.py"]

data_root = "data/synthetic_1k/"
synthetic = dict(out_dir=data_root, num_images=1000, val_fraction=0.1)

#: the tasks scored by their own examples at validation (detection and segmentation by COCO mAP)
question_tasks = dict(
    region_classify=dict(weight=2.0),
    region_describe=dict(weight=1.0),
    region_compare=dict(weight=1.0),
    point_classify=dict(weight=1.0),
    point_segment=dict(weight=1.0, num_points=16),
    detect_like=dict(weight=1.0),
    caption=dict(weight=0.5),
    count=dict(weight=0.5),
    color_question=dict(weight=1.0),
)
model = dict(
    tasks=dict(
        detect=dict(weight=1.0),
        segment=dict(weight=1.0, num_points=16),
        ground=dict(weight=0.5),
        **question_tasks,
    ),
    eval_tasks=tuple(question_tasks),
)

# validation reads the ground truth too: the question tasks' examples are built from it
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
