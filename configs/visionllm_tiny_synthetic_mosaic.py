# The main job's recipe with YOLO / RTMDet-style training augmentation: every training image is a mosaic of
# four (mmdet's CachedMosaic, from a cache of recent images), zoomed to 0.5-1.25x of the sources' scale,
# cropped back to the canvas, with HSV jitter and a flip, so each step shows four images' objects at new
# scales and places, as YOLO's trainer does. Evaluation images are unchanged. Crops drop objects, so the
# instance attributes that grounding and region / colour questions phrase would lose their alignment: this
# pipeline loads none and suits detection and segmentation only.
_base_ = ["visionllm_tiny_synthetic.py"]

__size = _base_.image_size
train_pipeline = [
    dict(type="LoadImageRGB"),
    dict(type="LoadAnnotations", with_bbox=True, with_mask=True, poly2mask=False),
    dict(type="CachedMosaic", img_scale=(__size, __size), pad_val=114.0, max_cached_images=40),
    # the mosaic is twice the canvas: resized to 1-2.5x the canvas, its source images are at 0.5-1.25x
    dict(type="RandomResize", scale=(2 * __size, 2 * __size), ratio_range=(0.5, 1.25), keep_ratio=True),
    dict(type="RandomCrop", crop_size=(__size, __size), recompute_bbox=True),
    dict(type="YOLOXHSVRandomAug"),
    dict(type="RandomFlip", prob=0.5),
    dict(type="Pad", size=(__size, __size), pad_val=dict(img=(114, 114, 114))),
    dict(type="FilterAnnotations", min_gt_bbox_wh=(2, 2)),
    # the plain pipeline's meta keys, less the instance attributes this pipeline does not load
    dict(
        type="PackDetInputs",
        meta_keys=tuple(k for k in _base_.train_pipeline[-1]["meta_keys"] if k != "instance_attributes"),
    ),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
