# visionllm_effnet_coco128.py at the resolution of the Deformable DETR figures it is compared with (long
# side 512, batch 2): COCO objects are small, and at 128 px most of them shrink to a few pixels.
_base_ = ["visionllm_effnet_coco128.py"]

image_size = 512


def _at_image_size(pipeline: list[dict]) -> list[dict]:
    """The base pipeline with its Resize and Pad steps at ``image_size``."""
    steps = []
    for step in pipeline:
        if step["type"] == "Resize":
            step = dict(step, scale=(image_size, image_size))
        elif step["type"] == "Pad":
            step = dict(step, size=(image_size, image_size))
        steps.append(step)
    return steps


train_pipeline = _at_image_size(_base_.train_pipeline)
test_pipeline = _at_image_size(_base_.test_pipeline)
train_dataloader = dict(batch_size=2, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(batch_size=2, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
