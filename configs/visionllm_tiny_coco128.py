# Tiny VisionLLM fine-tuned on a user's COCO-format data, shown on COCO128 (_base_/datasets/coco128.py:
# train = val, paths assuming ../shared/data/coco128 beside the checkout, 128 px).
_base_ = ["_base_/models/visionllm_tiny.py", "_base_/schedules/adamw.py", "_base_/runs/coco128.py"]

# the eval instruction lists every COCO class: 80 class references, 60 object slots seeded by 60 tokens
# and COCO's 100 detections per image
model = dict(
    image_tokenizer=dict(num_queries=60),
    llm=dict(max_classes=100),
    num_slots=60,
    eval_task="detect",
    max_objects=100,
)
optim_wrapper = dict(optimizer=dict(lr=2e-3, weight_decay=0.0))
