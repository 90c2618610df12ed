# A fine-tuning run on COCO128 (datasets/coco128.py) without its model and optimizer: iters.py's 2000
# iterations, validated every 500; checkpoints every 500 iterations, keeping the best two by bbox mAP.
_base_ = ["../datasets/coco128.py", "../schedules/iters.py", "../default_runtime.py"]

default_hooks = dict(checkpoint=dict(max_keep_ckpts=2, save_best="coco/bbox_mAP", rule="greater"))
