# Tiny VisionLLM fine-tuned on a user's COCO-format data, shown on COCO128 (train = val, as in the
# README's "your own data"). Paths assume ../shared/data/coco128 beside the checkout; override
# data_root-derived keys with --cfg-options for your data. Pipelines (128 px) come from the synthetic set.
_base_ = ["visionllm_tiny_synthetic.py"]

data_root = "../shared/data/coco128/"
ann_file = "annotations/instances_train2017.json"
synthetic = None  # real data: nothing to generate

# the eval instruction lists every COCO class: 80 class references, 60 object slots seeded by 60 tokens
# and COCO's 100 detections per image
model = dict(
    image_tokenizer=dict(num_queries=60),
    llm=dict(max_classes=100),
    num_slots=60,
    eval_task="detect",
    max_objects=100,
)

_dataset = dict(data_root=data_root, ann_file=ann_file, data_prefix=dict(img="train2017/"))
train_dataloader = dict(batch_size=4, dataset=_dataset)
val_dataloader = dict(batch_size=4, dataset=_dataset)
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + ann_file, metric=["bbox"])
test_evaluator = val_evaluator

max_iters = 2000
train_cfg = dict(max_iters=max_iters, val_interval=500)
param_scheduler = [
    dict(type="LinearLR", start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type="CosineAnnealingLR", by_epoch=False, begin=50, end=max_iters, eta_min_ratio=0.01),
]
default_hooks = dict(checkpoint=dict(interval=500))
