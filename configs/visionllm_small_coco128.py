# Small VisionLLM (pretrained EfficientNet-Lite0, MiniLM and SmolLM2-135M with LoRA) fine-tuned on COCO128
# (_base_/datasets/coco128.py), as visionllm_tiny_coco128.py does with the tiny model.
_base_ = ["_base_/models/visionllm_small.py", "_base_/schedules/adamw_small.py", "_base_/runs/coco128.py"]

# the eval instruction lists every COCO class: 80 class references (the model's max_classes). Detection
# only, 30 slots (coco128 images hold 7.6 objects on average), parallel-decoding training only: on CPU,
# SmolLM2's 30 layers make every LLM pass costly, and autoregressive training and 33-token segmentation
# objects add passes and length. For a GPU recipe add train_modes=("parallel", "autoregressive") back.
model = dict(
    tasks=dict(_delete_=True, detect=dict(weight=1.0)),
    num_slots=30,
    train_modes=("parallel",),
    eval_task="detect",
    max_objects=100,  # COCO's detections per image
)

# the new parts (image tokenizer, class pointer, LoRA, task-token rows) need a higher rate than the
# synthetic recipe's 3e-4 to move within a CPU time budget's few iterations
optim_wrapper = dict(optimizer=dict(lr=1e-3))
train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=2)
test_dataloader = val_dataloader
