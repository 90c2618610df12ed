# What the Deformable DETR baselines share: 3 feature levels, width 128, 4 heads, mmdet's multi-scale
# deformable attention, and Deformable DETR's set loss as mmdet configures it (focal class loss, L1 + GIoU
# box losses, Hungarian matching on the same three costs). A baseline uses
# `bbox_head=dict(..., **_base_.deformable_detr_losses)` and `train_cfg=_base_.deformable_detr_train_cfg`.
embed_dims = 128
num_levels = 3
num_heads = 4
deformable_attention = dict(  # MultiScaleDeformableAttention
    embed_dims=embed_dims, num_heads=num_heads, num_levels=num_levels, num_points=4, batch_first=True
)
deformable_detr_losses = dict(
    loss_cls=dict(type="FocalLoss", use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=2.0),
    loss_bbox=dict(type="L1Loss", loss_weight=5.0),
    loss_iou=dict(type="GIoULoss", loss_weight=2.0),
)
deformable_detr_train_cfg = dict(
    assigner=dict(
        type="HungarianAssigner",
        match_costs=[
            dict(type="FocalLossCost", weight=2.0),
            dict(type="BBoxL1Cost", weight=5.0, box_format="xywh"),
            dict(type="IoUCost", iou_mode="giou", weight=2.0),
        ],
    )
)
