# Baseline for the tiny VisionLLM (bench/detr_vs_visionllm.py): mmdet's Deformable DETR at the same tiny
# scale on the same synthetic shapes. From configs/visionllm_tiny_synthetic.py by `_base_`: the backbone
# (the slim timm ResNet-18, random init, strides 8/16/32), the data preprocessor, the dataloaders (128 px,
# batch 8, the same pipeline; DETR ignores the masks and attributes it also loads), the schedule's length
# and shape, and the runtime.
# Its own: 3 feature levels (as VisionLLM's tokenizer), 3 encoder + 3 decoder layers of width 128,
# 30 queries (VisionLLM's max_objects; the images hold 1-6 shapes), box-only evaluation.
# Deformable attention runs mmcv's pure-PyTorch path on mmcv-lite (visionllm.compat), so it trains on CPU.
_base_ = ["visionllm_tiny_synthetic.py", "_base_/models/deformable_detr.py"]

__width, __attn = _base_.embed_dims, _base_.deformable_attention
__self_attn = dict(embed_dims=__width, num_heads=_base_.num_heads, dropout=0.0, batch_first=True)
__ffn = dict(embed_dims=__width, feedforward_channels=4 * __width, ffn_drop=0.0)
model = dict(
    _delete_=True,
    type="DeformableDETR",
    num_queries=30,
    num_feature_levels=_base_.num_levels,
    with_box_refine=False,
    as_two_stage=False,
    data_preprocessor=_base_.model.data_preprocessor,
    # the tiny VisionLLM's image_tokenizer.backbone (visionllm.models.backbones.TimmBackbone)
    backbone=dict(type="TimmBackbone", **_base_.model.image_tokenizer.backbone),
    neck=dict(
        type="ChannelMapper",
        in_channels=[32, 64, 128],  # the slim ResNet-18's widths at out_indices (2, 3, 4)
        kernel_size=1,
        out_channels=__width,
        act_cfg=None,
        norm_cfg=dict(type="GN", num_groups=32),
        num_outs=_base_.num_levels,
    ),
    encoder=dict(num_layers=3, layer_cfg=dict(self_attn_cfg=__attn, ffn_cfg=__ffn)),
    decoder=dict(
        num_layers=3,
        return_intermediate=True,
        layer_cfg=dict(self_attn_cfg=__self_attn, cross_attn_cfg=__attn, ffn_cfg=__ffn),
        post_norm_cfg=None,
    ),
    positional_encoding=dict(num_feats=__width // 2, normalize=True, offset=-0.5),
    bbox_head=dict(
        type="DeformableDETRHead",
        embed_dims=__width,
        num_classes=6,  # visionllm.data.synthetic.CLASSES
        sync_cls_avg_factor=True,
        **_base_.deformable_detr_losses,
    ),
    train_cfg=_base_.deformable_detr_train_cfg,
    test_cfg=dict(max_per_img=30),
)

# DETR has no masks: box metrics only
val_evaluator = dict(metric=["bbox"])
test_evaluator = val_evaluator

# Deformable DETR's optimiser recipe (AdamW, weight decay 1e-4, gradients clipped at 0.1, sampling offsets
# and reference points at 0.1x), with the learning rate raised from its 2e-4 because everything here starts
# from random weights. Not tuned beyond that.
optim_wrapper = dict(
    optimizer=dict(lr=1e-3, weight_decay=1e-4, betas=(0.9, 0.999)),
    clip_grad=dict(max_norm=0.1, norm_type=2),
    paramwise_cfg=dict(
        custom_keys={"sampling_offsets": dict(lr_mult=0.1), "reference_points": dict(lr_mult=0.1)}
    ),
)
