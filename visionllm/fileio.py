"""Atomic file writes: a reader (or a crash) never sees a half-written checkpoint, JSON or results file;
and checkpoint reads that name the file when it is not one."""

from __future__ import annotations

import json
import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from visionllm.mmengine_private import _load_checkpoint

#: Suffix of the temporary files that atomic writes rename into place.
PARTIAL_SUFFIX = ".partial"


def atomic_write(data: bytes, path: str | os.PathLike) -> None:
    """Write ``data`` so that ``path`` holds either its previous content or all of ``data``, never a part.

    The bytes go to a hidden ``.<name>.<pid>.partial`` file in the same directory (so the rename stays on
    one file system), are fsynced, then ``os.replace``-d onto ``path``; the directory is fsynced so the
    rename itself survives a power cut.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}{PARTIAL_SUFFIX}")
    try:
        with open(partial, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def partial_writer(path: str | os.PathLike) -> int | None:
    """The pid of the process that writes the partial file ``path`` (named by :func:`atomic_write`), or
    None when ``path`` is not named like one."""
    match = re.fullmatch(rf"\..+\.(\d+){re.escape(PARTIAL_SUFFIX)}", Path(path).name)
    return int(match[1]) if match else None


def write_json_atomic(data: Any, path: str | os.PathLike) -> None:
    """Write ``data`` as compact JSON with :func:`atomic_write`."""
    atomic_write(json.dumps(data, separators=(",", ":")).encode(), path)


def read_checkpoint(path: str | os.PathLike, lazy: bool = False) -> dict:
    """An mmengine checkpoint file, loaded on the CPU with ``weights_only`` (the compat allow-list).
    ``lazy`` leaves the tensors on disk (memory-mapped), for a caller that reads only ``meta`` before the
    Runner loads the weights itself. A missing, empty, truncated or foreign file, or one holding objects
    outside the allow-list, is a ValueError that names it."""
    check_checkpoint_file(path)
    try:
        if lazy:
            return torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        return _load_checkpoint(str(path), map_location="cpu", logger="silent")
    except (RuntimeError, EOFError, pickle.UnpicklingError) as error:
        raise ValueError(f"{path}: cannot load the checkpoint: {error}") from error


def checkpoint_classes(checkpoint: dict) -> list[str]:
    """The class list a checkpoint was trained on (mmengine saves the dataset's in ``meta.dataset_meta``);
    [] when it names none."""
    return list(checkpoint.get("meta", {}).get("dataset_meta", {}).get("classes") or [])


def check_checkpoint_file(path: str | os.PathLike) -> None:
    """Raise ValueError naming ``path`` unless it is a ``torch.save`` archive (DeepSpeed checkpoint
    folders pass: their loader checks them)."""
    path = Path(path)
    if path.is_dir():
        return
    if not path.is_file():
        raise ValueError(f"{path}: no such checkpoint file")
    if path.stat().st_size == 0 or not zipfile.is_zipfile(path):
        raise ValueError(
            f"{path}: not a checkpoint ({path.stat().st_size} bytes; empty, truncated or not written by "
            "torch.save): use a .pth that training wrote"
        )
