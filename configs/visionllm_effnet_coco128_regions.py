# Region classification on COCO128 from ground-truth boxes ("What is <region>?" -> one of 71 class names, in
# words): the EfficientNet config trained on the 102 images of the held-out split, scored on every instance
# of the other 26. bench/region_probe.py trains it beside a linear probe on the same RoI-pooled features.
# Write the split first (from the checkout's root):
#   python datasets/split_coco.py ../shared/data/coco128/annotations/instances_train2017.json \
#       data/coco128_heldout --split datasets/splits/coco128_val26.json
_base_ = ["visionllm_effnet_coco128.py"]

split_dir = "data/coco128_heldout/"
images = dict(img=_base_.data_root + "train2017/")  # both parts' images stay in the COCO128 folder
model = dict(
    tasks=dict(_delete_=True, detect=dict(weight=1.0), region_classify=dict(weight=3.0, eval_per_image=1000)),
    eval_tasks=("region_classify",),
)
train_dataloader = dict(
    dataset=dict(data_root="", ann_file=split_dir + "instances_train.json", data_prefix=images)
)
val_dataloader = dict(
    dataset=dict(
        data_root="",
        ann_file=split_dir + "instances_val.json",
        data_prefix=images,
        pipeline=_base_.annotated_test_pipeline,
    )
)
test_dataloader = val_dataloader
val_evaluator = [dict(type="VisionLLMCocoMetric", ann_file=split_dir + "instances_val.json", metric=["bbox"]),
                 dict(type="TaskExamplesMetric")]  # fmt: skip
test_evaluator = val_evaluator
default_hooks = dict(checkpoint=dict(save_best="tasks/region_classify/accuracy"))
