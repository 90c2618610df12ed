"""timm backbones as multi-scale feature extractors (any timm model with ``features_only``)."""

from __future__ import annotations

from pathlib import Path

import timm
import torch
from torch import Tensor, nn

from visionllm.registry import MODELS


@MODELS.register_module()
class TimmBackbone(nn.Module):
    """A timm model in ``features_only`` mode returning NCHW maps at the chosen ``out_indices``.

    ``checkpoint`` is a local state dict (``.safetensors`` or torch file) for the model's features;
    weights are never downloaded. NHWC outputs (Swin, ConvNeXt-V2 variants) are permuted to NCHW.
    """

    def __init__(
        self,
        model_name: str,
        out_indices: tuple[int, ...] = (1, 2, 3),
        checkpoint: str | None = None,
        **kwargs,
    ) -> None:
        super().__init__()
        self.model = timm.create_model(
            model_name, pretrained=False, features_only=True, out_indices=tuple(out_indices), **kwargs
        )
        self.out_channels: list[int] = self.model.feature_info.channels()
        self.channels_last_output = getattr(self.model, "output_fmt", "NCHW") == "NHWC"
        if checkpoint is not None:
            self.model.load_state_dict(load_state_dict(checkpoint, "backbone.checkpoint"), strict=True)

    def forward(self, images: Tensor) -> list[Tensor]:
        feats = self.model(images)
        if self.channels_last_output:
            feats = [f.permute(0, 3, 1, 2).contiguous() for f in feats]
        return feats


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


def build_backbone(cfg: dict) -> nn.Module:
    cfg = dict(cfg)
    cfg.setdefault("type", "TimmBackbone")
    return MODELS.build(cfg)
