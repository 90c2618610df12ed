# Baseline for the COCO128 runs: mmdet's Deformable DETR (3 encoder + 3 decoder layers, ImageNet
# EfficientNet-Lite0, long side 512, batch 2) at the tiny baseline's width (_base_/models/deformable_detr.py:
# 128-d, 4 heads, instead of mmdet's 256-d, 8 heads, which are much slower on CPU), 100 queries (COCO's 100
# detections), otherwise mmdet's recipe (dropout 0.1, AdamW 2e-4 with 0.1x on the backbone, sampling offsets
# and reference points, gradients clipped at 0.1). The model is written out as in
# deformable_detr_tiny_synthetic.py. The data, time-based schedule and runtime are those of
# visionllm_effnet_coco128_512.py, so the two curves differ only in the model:
#   python tools/train.py configs/deformable_detr_effnet_coco128.py --time-budget 20 --val-every 5
_base_ = ["visionllm_effnet_coco128_512.py", "_base_/models/deformable_detr.py"]

__width, __attn = _base_.embed_dims, _base_.deformable_attention
__self_attn = dict(embed_dims=__width, num_heads=_base_.num_heads, dropout=0.1, batch_first=True)
ffn = dict(embed_dims=__width, feedforward_channels=4 * __width, ffn_drop=0.1)
model = dict(
    _delete_=True,
    type="DeformableDETR",
    num_queries=100,
    num_feature_levels=_base_.num_levels,
    with_box_refine=False,
    as_two_stage=False,
    # EfficientNet-Lite0 and its input normalisation, as in the VisionLLM config
    data_preprocessor=_base_.model.data_preprocessor,
    backbone=dict(type="TimmBackbone", **_base_.model.image_tokenizer.backbone),
    neck=dict(
        type="ChannelMapper",
        in_channels=[40, 112, 320],  # EfficientNet-Lite0 at out_indices (2, 3, 4)
        kernel_size=1,
        out_channels=__width,
        act_cfg=None,
        norm_cfg=dict(type="GN", num_groups=32),
        num_outs=_base_.num_levels,
    ),
    encoder=dict(num_layers=3, layer_cfg=dict(self_attn_cfg=__attn, ffn_cfg=ffn)),
    decoder=dict(
        num_layers=3,
        return_intermediate=True,
        layer_cfg=dict(self_attn_cfg=__self_attn, cross_attn_cfg=__attn, ffn_cfg=ffn),
        post_norm_cfg=None,
    ),
    positional_encoding=dict(num_feats=__width // 2, normalize=True, offset=-0.5),
    bbox_head=dict(
        type="DeformableDETRHead",
        embed_dims=__width,
        num_classes=80,
        sync_cls_avg_factor=True,
        **_base_.deformable_detr_losses,
    ),
    train_cfg=_base_.deformable_detr_train_cfg,
    test_cfg=dict(max_per_img=100),
)
optim_wrapper = dict(
    optimizer=dict(lr=2e-4, weight_decay=1e-4, betas=(0.9, 0.999)),
    clip_grad=dict(max_norm=0.1, norm_type=2),
    paramwise_cfg=dict(
        _delete_=True,
        custom_keys={
            "backbone": dict(lr_mult=0.1),
            "sampling_offsets": dict(lr_mult=0.1),
            "reference_points": dict(lr_mult=0.1),
        },
    ),
)
