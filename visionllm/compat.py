"""Platform fixes, applied once before anything imports torchvision, mmcv or mmengine.

Three traps on CPU-only machines, each fixed in the narrowest place:

1. The PyPI torchvision wheel is a CUDA build. On CPU torch its compiled ``_C`` does not load and
   ``import torchvision`` dies in its fake-tensor registrations with
   ``operator torchvision::nms does not exist`` -- which breaks timm, transformers and mmengine.
   We declare the missing operator schemas (no kernels) so the import succeeds; torchvision's
   compiled ops still do not run, and VisionLLM never calls them.
2. ``mmcv-lite`` has no compiled ``mmcv._ext``, yet mmdet imports ``mmcv.ops`` at import time.
   We install a stand-in module whose ops raise a clear error. The one mmcv op VisionLLM runs,
   multi-scale deformable attention (mmdet's deformable layers), is sent down mmcv's own
   pure-PyTorch ``grid_sample`` path; nothing runs NMS or RoIAlign. A full mmcv install is left
   untouched.
3. torch>=2.6 loads checkpoints with ``weights_only=True``. mmengine checkpoints carry a few
   non-tensor objects in ``meta`` / ``message_hub``; we allow exactly those classes.
4. transformers>=5.25 "kernelizes" every ``from_pretrained`` model with kernels fetched from the
   Hugging Face Hub, which needs the network and rejects models built on the meta device
   (``Unsupported device type 'meta'``). VisionLLM loads local weights only, so hub kernels are off
   unless the user sets ``USE_HUB_KERNELS`` themselves.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
import types
from pathlib import Path

import torch

#: ``torchvision`` operators that its Python side registers fake kernels for by name.
_TORCHVISION_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_torchvision_stub_library: torch.library.Library | None = None


def _torchvision_ops_loadable() -> bool:
    """True when torchvision's compiled extension loads into this torch (e.g. matching CUDA builds)."""
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        return True  # nothing to fix
    for lib in Path(spec.origin).parent.glob("_C*.so"):
        try:
            torch.ops.load_library(str(lib))
        except (OSError, RuntimeError):
            return False
    try:
        torch.ops.torchvision.nms  # noqa: B018  (raises if the schema is missing)
    except (AttributeError, RuntimeError):
        return False
    return True


def patch_torchvision() -> bool:
    """Declare torchvision's operator schemas when its compiled ops cannot load. Returns True if patched."""
    global _torchvision_stub_library
    if "torchvision" in sys.modules or _torchvision_stub_library is not None:
        return _torchvision_stub_library is not None
    if _torchvision_ops_loadable():
        return False
    _torchvision_stub_library = torch.library.Library("torchvision", "DEF")  # noqa: TOR901
    for schema in _TORCHVISION_SCHEMAS.values():
        _torchvision_stub_library.define(schema)
    return True


class _MissingExtension(types.ModuleType):
    """Stand-in for ``mmcv._ext`` under mmcv-lite: importable, every op raises a clear error."""

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)

        def _unavailable(*args, **kwargs):
            raise RuntimeError(
                f"mmcv op '{name}' needs the compiled mmcv, but mmcv-lite is installed. VisionLLM runs "
                "only multi-scale deformable attention, on mmcv's pure-PyTorch path; install a full "
                "mmcv<2.2 built for your torch to use other mmcv ops."
            )

        return _unavailable


def mmcv_has_compiled_ops() -> bool:
    """True when a full mmcv with its compiled ``_ext`` is installed."""
    ext = sys.modules.get("mmcv._ext")
    if ext is not None:
        return not isinstance(ext, _MissingExtension)
    try:
        return importlib.util.find_spec("mmcv._ext") is not None
    except (ImportError, ValueError):
        return False


def patch_mmcv() -> bool:
    """Install the ``mmcv._ext`` stand-in when mmcv is lite. Returns True if patched."""
    if importlib.util.find_spec("mmcv") is None or mmcv_has_compiled_ops():
        return False
    stub = _MissingExtension("mmcv._ext", "stand-in for mmcv's compiled ops (mmcv-lite)")
    stub.__spec__ = importlib.machinery.ModuleSpec("mmcv._ext", loader=None)
    sys.modules["mmcv._ext"] = stub
    # Force mmcv's deformable attention onto its grid_sample path even on CUDA tensors.
    import mmcv.ops.multi_scale_deform_attn as msda

    msda.IS_CUDA_AVAILABLE = False
    msda.IS_MLU_AVAILABLE = False
    return True


def checkpoint_safe_globals() -> list:
    """The non-tensor classes found in mmengine checkpoints, for ``torch.load(weights_only=True)``."""
    import numpy as np
    from mmengine.logging import HistoryBuffer

    from visionllm.mmengine_private import history_buffer_statistics_methods

    np_core = getattr(np, "_core", None) or np.core  # numpy 2 renamed np.core
    dtype_classes = [type(np.dtype(t)) for t in ("float64", "float32", "int64", "int32", "bool", "uint32")]

    def history_buffer_method(owner: type, name: str):
        """Stands in for ``builtins.getattr``, which pickle uses to store a HistoryBuffer's statistics
        methods (``getattr(HistoryBuffer, 'mean')``); any other attribute lookup is refused."""
        import pickle

        methods = {"min", "max", "current", "mean", *history_buffer_statistics_methods()}
        if owner is HistoryBuffer and name in methods:
            return getattr(HistoryBuffer, name)
        raise pickle.UnpicklingError(
            f"checkpoint asks for getattr({owner!r}, {name!r}), which is not allowed"
        )

    return [
        HistoryBuffer,
        np.ndarray,
        np.dtype,
        np_core.multiarray._reconstruct,
        np_core.multiarray.scalar,
        *dtype_classes,
        (history_buffer_method, "builtins.getattr"),
    ]


def allow_mmengine_checkpoints() -> None:
    """Let ``weights_only`` loading accept mmengine checkpoints, and nothing beyond that allow-list."""
    torch.serialization.add_safe_globals(checkpoint_safe_globals())


def disable_hub_kernels() -> None:
    """Keep transformers from replacing layers with kernels downloaded from the Hub (offline, meta-safe)."""
    os.environ.setdefault("USE_HUB_KERNELS", "0")


def apply() -> None:
    """Apply every fix; idempotent."""
    disable_hub_kernels()
    patch_torchvision()
    patch_mmcv()
    allow_mmengine_checkpoints()


apply()
