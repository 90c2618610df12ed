# The small model (pretrained EfficientNet-Lite0, MiniLM, SmolLM2-135M with LoRA) answering in words: region
# descriptions, region classes and captions, beside detection, on 1,000 synthetic images. SmolLM2 keeps its
# first 8 of 30 layers (a step ~2.6x faster on CPU), enough to write short English answers. README:
# `tools/train.py configs/visionllm_small_questions.py --time-budget 15`, then `tools/test.py` with
# `--cfg-options test_evaluator.1.answers_file=answers.jsonl` writes every answer.
_base_ = [
    "_base_/models/visionllm_small.py",
    "_base_/schedules/adamw_small.py",
    "_base_/runs/synthetic_1k_questions.py",
]

question_tasks = dict(
    region_describe=dict(weight=1.0), region_classify=dict(weight=1.0), caption=dict(weight=1.0)
)
model = dict(
    llm=dict(num_layers=8),
    tasks=dict(_delete_=True, detect=dict(weight=1.0), **question_tasks),
    eval_task="detect",
    eval_tasks=tuple(question_tasks),
)
train_dataloader = dict(batch_size=4)
val_dataloader = dict(batch_size=4)
test_dataloader = val_dataloader
val_evaluator = [dict(_base_.val_evaluator[0], metric=["bbox"]), _base_.val_evaluator[1]]  # no segmentation
test_evaluator = val_evaluator
