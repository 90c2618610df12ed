# Runtime shared by every VisionLLM experiment: mmengine Runner hooks, logging, visualisation.
default_scope = "visionllm"
custom_imports = dict(
    imports=[
        # mmdet's components (registries are looked up parent-ward, but filled only on import)
        "mmdet.datasets",
        "mmdet.engine",
        "mmdet.evaluation",
        "mmdet.models",
        "mmdet.visualization",
        "visionllm.models",
        "visionllm.data.coco",
        "visionllm.data.loading",
        "visionllm.data.transforms",
        "visionllm.evaluation",
        "visionllm.engine",
    ],
    allow_failed_imports=False,
)

env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method="fork", opencv_num_threads=0),
    dist_cfg=dict(backend="nccl"),  # tools/train.py switches to gloo on CPU-only machines
)

default_hooks = dict(
    timer=dict(type="IterTimerHook"),
    logger=dict(type="LoggerHook", interval=10, log_metric_by_epoch=False),  # metrics keyed by iteration
    param_scheduler=dict(type="ParamSchedulerHook"),
    # mmengine's CheckpointHook made atomic, pruning after the save, and storing RNG states for --resume;
    # frozen pretrained weights (an LLM's base under LoRA) are left out and reloaded from their files
    checkpoint=dict(
        type="ResumableCheckpointHook",
        by_epoch=False,
        interval=500,
        max_keep_ckpts=3,
        save_pretrained_frozen=False,
    ),
    sampler_seed=dict(type="DistSamplerSeedHook"),
    visualization=dict(type="DetVisualizationHook"),
)
custom_hooks = [dict(type="ClassNamesHook")]

vis_backends = [dict(type="LocalVisBackend"), dict(type="TensorboardVisBackend")]
visualizer = dict(type="DetLocalVisualizer", vis_backends=vis_backends, name="visualizer")
log_processor = dict(type="LogProcessor", window_size=10, by_epoch=False)

log_level = "INFO"
load_from = None
resume = False
randomness = dict(seed=0)
