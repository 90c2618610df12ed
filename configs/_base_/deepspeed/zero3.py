# DeepSpeed ZeRO-3: parameters, gradients and optimizer states sharded across ranks (see zero2.py for
# how it is used). Checkpoints gather the 16-bit weights on rank 0 so that `zero_to_fp32.py` is not needed
# to read them. Options, as --cfg-options after --deepspeed:
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
