# Diagnostic for the generalist: region comparisons alone (plus a little detection), on the EfficientNet
# generalist's data and model, one question per image. Which comparisons (size, position, colour) does
# the LLM learn from two region inputs when it has every image to itself? docs/benchmarks.md, run 7.
_base_ = ["visionllm_effnet_region_classify_1k.py"]

model = dict(
    tasks=dict(_delete_=True, detect=dict(weight=0.2), region_compare=dict(weight=1.0)),
    eval_tasks=("region_compare",),
)
