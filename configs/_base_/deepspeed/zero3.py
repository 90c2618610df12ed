# DeepSpeed ZeRO-3: parameters, gradients and optimizer states sharded across ranks (see zero2.py for
# how it is used). Checkpoints hold sharded model states too; `zero_to_fp32.py` (in the work dir) merges
# them, and the 16-bit gather below lets checkpoints saved without the optimizer (save_optimizer=False)
# hold one consolidated state dict. Options, as --cfg-options after --deepspeed:
#   bf16: strategy.bf16.enabled=True
#   CPU offload: use zero3_offload.py
_base_ = ["zero2.py"]
strategy = dict(
    zero_optimization=dict(
        stage=3,
        stage3_gather_16bit_weights_on_model_save=True,
        offload_param=dict(device="none", pin_memory=True),
    )
)
