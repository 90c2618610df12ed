# DeepSpeed ZeRO-2 (optimizer states and gradients sharded across ranks) through mmengine's FlexibleRunner
# and DeepSpeedStrategy. Used as `tools/train.py CONFIG --deepspeed zero2`, which carries the experiment's
# optimizer, gradient clipping, accumulation and batch size over (visionllm.engine.deepspeed).
# Options, as --cfg-options after --deepspeed:
#   bf16: strategy.bf16.enabled=True
#   optimizer states in CPU memory: strategy.zero_optimization.offload_optimizer.device=cpu
# The same file serves one node and many: the launcher (torchrun or `deepspeed --hostfile`) makes the
# difference; see docs/training.md.
runner_type = "FlexibleRunner"
strategy = dict(
    type="VisionLLMDeepSpeedStrategy",  # mmengine's, calling after_load_checkpoint hooks on resume
    zero_optimization=dict(
        stage=2,
        overlap_comm=True,
        contiguous_gradients=True,
        reduce_bucket_size=int(5e8),
        allgather_bucket_size=int(5e8),
        offload_optimizer=dict(device="none", pin_memory=True),
    ),
    bf16=dict(enabled=False),
    # the images (the data preprocessor's ``inputs``) follow the parameters' dtype (bf16 when enabled)
    inputs_to_half=["inputs"],
)
