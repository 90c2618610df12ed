# The generalist's peer: the same model, data and budget trained on detection and segmentation only (does
# the generalist's extra work cost its detector, or help it?).
_base_ = ["visionllm_tiny_generalist.py"]

model = dict(
    tasks=dict(_delete_=True, detect=dict(weight=1.0), segment=dict(weight=1.0, num_points=16)), eval_tasks=()
)
val_evaluator = [_base_.val_evaluator[0]]
test_evaluator = val_evaluator
