# visionllm_small_coco128.py with a held-out validation set: 102 COCO128 images to train on, 26 to evaluate
# (datasets/splits/coco128_val26.json, committed, drawn once with seed 0). At CPU budgets a split this small
# resolves nothing below about 1 AP point, so it is meant for a GPU run. Write the two annotation files
# first, from the checkout's root:
#   python datasets/split_coco.py ../shared/data/coco128/annotations/instances_train2017.json \
#       data/coco128_heldout --split datasets/splits/coco128_val26.json
#   python tools/train.py configs/visionllm_small_coco128_heldout.py
_base_ = ["visionllm_small_coco128.py"]

split_dir = "data/coco128_heldout/"
images = dict(img=_base_.data_root + "train2017/")  # both parts' images stay in the COCO128 folder
train_dataloader = dict(
    dataset=dict(data_root="", ann_file=split_dir + "instances_train.json", data_prefix=images)
)
val_dataloader = dict(
    dataset=dict(data_root="", ann_file=split_dir + "instances_val.json", data_prefix=images)
)
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=split_dir + "instances_val.json")
test_evaluator = val_evaluator
