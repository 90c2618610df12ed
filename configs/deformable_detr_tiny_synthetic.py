# Baseline for the tiny VisionLLM (bench/detr_vs_visionllm.py): mmdet's Deformable DETR at the same tiny
# scale on the same synthetic shapes. Shared with configs/visionllm_tiny_synthetic.py: the backbone (the
# slim timm ResNet-18, random init, strides 8/16/32) and data preprocessor (copies, kept equal by
# tests/test_bench_scripts.py), the dataloaders by `_base_` (128 px, batch 8, the same pipeline; DETR
# ignores the masks and attributes it also loads) and the schedule's length.
# Its own: 3 feature levels (as VisionLLM's tokenizer), 3 encoder + 3 decoder layers of width 128,
# 30 queries (VisionLLM's max_objects; the images hold 1-6 shapes), box-only evaluation.
# Deformable attention runs mmcv's pure-PyTorch path on mmcv-lite (visionllm.compat), so it trains on CPU.
_base_ = [
    "_base_/datasets/synthetic.py",
    "_base_/schedules/adamw_iters.py",
    "_base_/default_runtime.py",
    "_base_/models/deformable_detr_losses.py",
]

embed_dims = 128
num_levels = 3
num_heads = 4
deformable_attention = dict(  # MultiScaleDeformableAttention
    embed_dims=embed_dims, num_heads=num_heads, num_levels=num_levels, num_points=4, batch_first=True
)
model = dict(
    type="DeformableDETR",
    num_queries=30,
    num_feature_levels=num_levels,
    with_box_refine=False,
    as_two_stage=False,
    data_preprocessor=dict(
        type="DetDataPreprocessor",
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_size_divisor=32,
    ),
    # the tiny VisionLLM's image_tokenizer.backbone (visionllm.models.backbones.TimmBackbone)
    backbone=dict(
        type="TimmBackbone",
        model_name="resnet18",
        out_indices=(2, 3, 4),
        channels=(16, 32, 64, 128),
        stem_width=16,
    ),
    neck=dict(
        type="ChannelMapper",
        in_channels=[32, 64, 128],  # the slim ResNet-18's widths at out_indices (2, 3, 4)
        kernel_size=1,
        out_channels=embed_dims,
        act_cfg=None,
        norm_cfg=dict(type="GN", num_groups=32),
        num_outs=num_levels,
    ),
    encoder=dict(  # DeformableDetrTransformerEncoder
        num_layers=3,
        layer_cfg=dict(
            self_attn_cfg=deformable_attention,
            ffn_cfg=dict(embed_dims=embed_dims, feedforward_channels=4 * embed_dims, ffn_drop=0.0),
        ),
    ),
    decoder=dict(  # DeformableDetrTransformerDecoder
        num_layers=3,
        return_intermediate=True,
        layer_cfg=dict(
            self_attn_cfg=dict(embed_dims=embed_dims, num_heads=num_heads, dropout=0.0, batch_first=True),
            cross_attn_cfg=deformable_attention,
            ffn_cfg=dict(embed_dims=embed_dims, feedforward_channels=4 * embed_dims, ffn_drop=0.0),
        ),
        post_norm_cfg=None,
    ),
    positional_encoding=dict(num_feats=embed_dims // 2, normalize=True, offset=-0.5),
    bbox_head=dict(
        type="DeformableDETRHead",
        embed_dims=embed_dims,
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

# Same length and warm-up/cosine shape as the VisionLLM config; Deformable DETR's optimiser recipe
# (AdamW, weight decay 1e-4, gradients clipped at 0.1, sampling offsets and reference points at 0.1x),
# with the learning rate raised from its 2e-4 because everything here starts from random weights.
# Not tuned beyond that.
max_iters = 600
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
optim_wrapper = dict(
    optimizer=dict(lr=1e-3, weight_decay=1e-4, betas=(0.9, 0.999)),
    clip_grad=dict(max_norm=0.1, norm_type=2),
    paramwise_cfg=dict(
        custom_keys={"sampling_offsets": dict(lr_mult=0.1), "reference_points": dict(lr_mult=0.1)}
    ),
)
param_scheduler = [
    dict(type="LinearLR", start_factor=0.01, by_epoch=False, begin=0, end=30),
    dict(type="CosineAnnealingLR", by_epoch=False, begin=30, end=max_iters, eta_min_ratio=0.01),
]
default_hooks = dict(
    checkpoint=dict(interval=200, max_keep_ckpts=2, save_best="coco/bbox_mAP", rule="greater")
)
