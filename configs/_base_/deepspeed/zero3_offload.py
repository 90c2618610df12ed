# DeepSpeed ZeRO-3 with parameters and optimizer states offloaded to CPU memory (ZeRO-Infinity without
# NVMe): the largest models per GPU, at the cost of PCIe traffic. DeepSpeed steps offloaded states with
# its own CPU Adam; the experiment's torch optimizer is allowed too (slower; zero_force_ds_cpu_optimizer).
_base_ = ["zero3.py"]
strategy = dict(
    zero_optimization=dict(
        offload_optimizer=dict(device="cpu", pin_memory=True),
        offload_param=dict(device="cpu", pin_memory=True),
    ),
    config=dict(zero_force_ds_cpu_optimizer=False),
)
