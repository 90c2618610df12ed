"""Atomic file writes: a reader (or a crash) never sees a half-written checkpoint, JSON or results file."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

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


def write_json_atomic(data: Any, path: str | os.PathLike) -> None:
    """Write ``data`` as compact JSON with :func:`atomic_write`."""
    atomic_write(json.dumps(data, separators=(",", ":")).encode(), path)
