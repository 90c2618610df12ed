"""DeepSpeed ZeRO through mmengine's ``FlexibleRunner`` and ``DeepSpeedStrategy``.

An experiment config targets mmengine's ``Runner`` (``OptimWrapper`` with ``clip_grad`` and
``accumulative_counts``); DeepSpeed owns those settings itself and mmengine's ``DeepSpeedOptimWrapper``
takes nothing but the optimizer. :func:`use_deepspeed` moves them over, so any config trains under a
preset from ``configs/_base_/deepspeed/`` (``tools/train.py CONFIG --deepspeed zero2``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from mmengine.config import Config
from mmengine.registry import STRATEGIES
from torch import nn

from visionllm.mmengine_private import DeepSpeedStrategy

#: The presets ``--deepspeed NAME`` finds by name.
PRESET_DIR = Path(__file__).resolve().parents[2] / "configs" / "_base_" / "deepspeed"


def find_preset(name_or_path: str) -> Path:
    """A preset config: a path, or a name in ``configs/_base_/deepspeed/`` (``zero2``, ``zero3``, ...)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    preset = PRESET_DIR / f"{name_or_path}.py"
    if not preset.is_file():
        names = sorted(p.stem for p in PRESET_DIR.glob("*.py"))
        raise FileNotFoundError(f"no DeepSpeed preset '{name_or_path}': give a config path or one of {names}")
    return preset


def use_deepspeed(cfg: Config, preset: str) -> None:
    """Turn ``cfg`` into a ``FlexibleRunner`` + ``DeepSpeedStrategy`` config from the preset ``preset``.

    The experiment's settings carry over unless the preset sets them: ``clip_grad.max_norm`` becomes
    ``gradient_clipping`` (L2 norm only, as in DeepSpeed), ``accumulative_counts`` becomes
    ``gradient_accumulation_steps`` and the train loader's batch size ``train_micro_batch_size_per_gpu``.
    The optimizer and its ``paramwise_cfg`` stay as they are.
    """
    spec = Config.fromfile(find_preset(preset))
    strategy = spec.strategy.to_dict()
    optim_wrapper = cfg.optim_wrapper.to_dict()
    optim_wrapper.pop("type", None)
    clip = optim_wrapper.pop("clip_grad", None)
    if clip:
        if clip.get("norm_type", 2) != 2 or clip.get("type", "norm") != "norm":
            raise ValueError(f"DeepSpeed clips the L2 norm of the gradients only, not {clip}")
        strategy.setdefault("gradient_clipping", clip["max_norm"])
    strategy.setdefault("gradient_accumulation_steps", optim_wrapper.pop("accumulative_counts", 1))
    strategy.setdefault("train_micro_batch_size_per_gpu", cfg.train_dataloader.batch_size)
    cfg.optim_wrapper = dict(type="DeepSpeedOptimWrapper", **optim_wrapper)
    cfg.strategy = strategy
    cfg.runner_type = spec.get("runner_type", "FlexibleRunner")


def cast_norm_statistics(model: nn.Module) -> None:
    """Give every BatchNorm's running statistics its parameters' dtype.

    Under bf16/fp16, DeepSpeed (0.19) casts parameters but keeps buffers as loaded, so that buffers such as
    LLaMA's rotary frequencies stay fp32. A BatchNorm with bf16 weights and fp32 running statistics then
    fails in ``batch_norm`` ("expected scalar type BFloat16 but found Float"). Only these statistics follow
    their layer; every other buffer keeps its dtype.
    """
    batch_norms = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
    for module in model.modules():
        if isinstance(module, batch_norms) and module.weight is not None:
            for buffer in (module.running_mean, module.running_var):
                if buffer is not None:
                    buffer.data = buffer.data.to(module.weight.dtype)


@STRATEGIES.register_module()
class VisionLLMDeepSpeedStrategy(DeepSpeedStrategy):
    """mmengine's ``DeepSpeedStrategy`` with two fixes.

    - ``resume`` calls its ``callback`` (the runner's ``after_load_checkpoint`` hooks), which mmengine's
      leaves out: ``ResumableCheckpointHook`` restores the RNG states from the checkpoint's meta there, so
      DeepSpeed runs resume exactly too.
    - Under bf16/fp16 the BatchNorm statistics follow their layer's dtype (``cast_norm_statistics``), so a
      BatchNorm backbone (ResNet, EfficientNet) trains in bf16.
    """

    # overrides a private mmengine method (listed in visionllm/mmengine_private.py)
    def _wrap_model(self, model: nn.Module) -> nn.Module:
        wrapper = super()._wrap_model(model)
        cast_norm_statistics(wrapper.model.module)  # wrapper -> DeepSpeed engine -> the model
        return wrapper

    def resume(self, filename: str, *, callback: Callable | None = None, **kwargs) -> dict:
        checkpoint = super().resume(filename, **kwargs)
        if callback is not None:
            callback(checkpoint)
        return checkpoint
