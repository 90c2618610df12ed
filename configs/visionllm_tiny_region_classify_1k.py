# Diagnostic for the generalist: region classification alone (plus a little detection, which the Runner's
# checkpoint rule scores) on the generalist's data and model. How fast does one question task learn when
# it has (almost) every image to itself? docs/benchmarks.md compares it with the 12-task mix.
_base_ = ["visionllm_tiny_generalist.py"]

model = dict(
    tasks=dict(_delete_=True, detect=dict(weight=0.2), region_classify=dict(weight=1.0)),
    eval_task="detect",
    eval_tasks=("region_classify",),
    extra_questions=0,  # one question per image, as measured
)
val_evaluator = [
    dict(
        type="VisionLLMCocoMetric",
        ann_file=_base_.data_root + "annotations/instances_val.json",
        metric=["bbox"],
    ),
    dict(type="TaskExamplesMetric"),
]
test_evaluator = val_evaluator
