# Small VisionLLM (pretrained EfficientNet-Lite0, MiniLM and SmolLM2-135M with LoRA; all packaged, offline)
# on the embedded synthetic shapes at 128 px: the run of visionllm_tiny_synthetic.py at batch 4.
_base_ = ["_base_/models/visionllm_small.py", "_base_/schedules/adamw_small.py", "_base_/runs/synthetic.py"]

train_dataloader = dict(batch_size=4)
val_dataloader = dict(batch_size=4)
test_dataloader = val_dataloader
