# The main job: tiny VisionLLM on the embedded synthetic shapes (README's first command, `make demo`):
# 600 iterations of batch 8 at 128 px, sized for a 2-core CPU.
_base_ = ["_base_/models/visionllm_tiny.py", "_base_/schedules/adamw.py", "_base_/runs/synthetic.py"]

optim_wrapper = dict(optimizer=dict(lr=2e-3, weight_decay=0.0))
