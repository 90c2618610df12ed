# Small VisionLLM (pretrained EfficientNet-Lite0, MiniLM and SmolLM2-135M with LoRA) fine-tuned on COCO128,
# as visionllm_tiny_coco128.py does with the tiny model: train = val, 128 px pipelines from the synthetic
# set, paths assuming ../shared/data/coco128 beside the checkout.
_base_ = ["visionllm_small_synthetic.py"]

data_root = "../shared/data/coco128/"
ann_file = "annotations/instances_train2017.json"
synthetic = None  # real data: nothing to generate

# the eval instruction lists every COCO class: 80 class references (the model's max_classes). Detection
# only, 30 slots (coco128 images hold 7.6 objects on average), parallel-decoding training only: SmolLM2's
# 30 layers cost ~6 s per batch of 2 on 2 CPU cores this way (bench/profile_train_step.py), twice that with
# autoregressive training too and more with 33-token segmentation objects. For a GPU recipe add
# train_modes=("parallel", "autoregressive") back.
model = dict(
    tasks=dict(_delete_=True, detect=dict(weight=1.0)),
    num_slots=30,
    train_modes=("parallel",),
    eval_task="detect",
    max_objects=100,  # COCO's detections per image
)

# the new parts (image tokenizer, class pointer, LoRA, task-token rows) need a higher rate than the
# synthetic recipe's 3e-4 to move in the ~150 iterations a 20-minute CPU budget allows
optim_wrapper = dict(optimizer=dict(lr=1e-3))

_dataset = dict(data_root=data_root, ann_file=ann_file, data_prefix=dict(img="train2017/"))
train_dataloader = dict(batch_size=2, dataset=_dataset)
val_dataloader = dict(batch_size=2, dataset=_dataset)
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
