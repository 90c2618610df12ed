# visionllm_effnet_coco128.py at the resolution of the Deformable DETR figures it is compared with (long
# side 512, batch 2): COCO objects are small, and at 128 px most of them shrink to a few pixels.
_base_ = ["visionllm_effnet_coco128.py"]

image_size = 512
__at_size = dict(Resize=dict(scale=(image_size, image_size)), Pad=dict(size=(image_size, image_size)))
train_pipeline = [dict(step, **__at_size.get(step.type, {})) for step in _base_.train_pipeline]
test_pipeline = [dict(step, **__at_size.get(step.type, {})) for step in _base_.test_pipeline]
train_dataloader = dict(batch_size=2, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(batch_size=2, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
