# Overfit check: the tiny model memorises 16 synthetic images (train = val). A few minutes on 2 cores;
# tests/test_overfit.py runs it and expects bbox mAP >= 0.9 (detect task) and segm mAP >= 0.7.
_base_ = ["visionllm_tiny_synthetic.py"]

data_root = "data/overfit16/"
synthetic = dict(
    out_dir=data_root, num_images=16, image_size=_base_.image_size, seed=1, val_fraction=0.0, max_objects=4
)

model = dict(
    tasks=dict(
        detect=dict(weight=1.0, full_list_prob=0.5),
        segment=dict(weight=1.0, num_points=16, full_list_prob=0.5),
    ),
    num_slots=8,
)

# the very images trained on, without flips (the images are generated at image_size: no resize); the
# test pipeline is the train pipeline without its annotations
train_pipeline = [step for step in _base_.train_pipeline if step.type not in ("Resize", "RandomFlip")]
test_pipeline = [
    step for step in train_pipeline if step.type not in ("LoadAnnotations", "LoadInstanceAttributes")
]
__dataset = dict(data_root=data_root, ann_file="annotations/instances_train.json")
train_dataloader = dict(dataset=dict(**__dataset, pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(**__dataset, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + "annotations/instances_train.json")
test_evaluator = val_evaluator

default_hooks = dict(checkpoint=dict(interval=_base_.max_iters, max_keep_ckpts=1), logger=dict(interval=50))
