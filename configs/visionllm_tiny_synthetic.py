# The main job: tiny VisionLLM on the embedded synthetic shapes (README's first command).
_base_ = [
    "_base_/models/visionllm_tiny.py",
    "_base_/datasets/synthetic.py",
    "_base_/schedules/adamw_iters.py",
    "_base_/default_runtime.py",
]
