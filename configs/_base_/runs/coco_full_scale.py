# The full-scale COCO 2017 run without its model: instance data at 1024 px, the 90k-iteration AdamW
# schedule (8 GPUs x 2 images) and the runtime, checkpointing every 5000 iterations. Each
# configs/visionllm_*_llama7b_coco.py adds its model base.
_base_ = ["../datasets/coco_instance.py", "../schedules/adamw_coco.py", "../default_runtime.py"]

default_hooks = dict(checkpoint=dict(interval=5000))
