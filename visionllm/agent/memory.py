"""A conversation's memory: every artifact under a stable name, and what follow-ups refer to.

Images are written as ``image/<8 hex>.png`` in the memory folder (the hex from the pixels, so the
same image keeps one name); other values are kept JSON-able under ``<kind>/<8 hex>`` (objects as
dicts with class, score, box, ...), and written beside them as ``.json``. The memory also remembers
the conversation's image (``$input``) and the last image, object and objects a turn produced
(``$last_image``, ``$last_object``, ``$last_objects``), which is what "it" and "them" mean.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from visionllm.agent.tools import Object, Objects
from visionllm.structures import ObjectPrediction

#: The names the memory can provide to a plan, the type of each.
MEMORY_NAMES = {
    "input": Image.Image,
    "last_image": Image.Image,
    "last_object": Object,
    "last_objects": Objects,
}


def to_jsonable(value: Any) -> Any:
    """Objects as dicts, lists element-wise, numbers and text as they are (images are stored as files)."""
    if isinstance(value, ObjectPrediction):
        return {k: list(v) if k == "box" else v for k, v in asdict(value).items()}
    if isinstance(value, list):
        return [to_jsonable(v) for v in value]
    return value


def _kind(value: Any) -> str:
    if isinstance(value, ObjectPrediction):
        return "object"
    if isinstance(value, list) and value and all(isinstance(v, ObjectPrediction) for v in value):
        return "objects"
    return "value"


class Memory:
    """The artifacts of one conversation (in ``folder``, a new temporary one by default): ``artifacts``
    maps each stable name to its image or JSON-able value, ``current`` the memory names to theirs."""

    def __init__(self, folder: str | Path | None = None) -> None:
        self.folder = Path(folder or tempfile.mkdtemp(prefix="visionllm-agent-"))
        self.artifacts: dict[str, Any] = {}
        self.current: dict[str, Any] = {}  # the MEMORY_NAMES that are set, -> their values

    def store(self, value: Any) -> str:
        """Keep ``value`` and return its stable name (a list of images: one name per image, joined by ',')."""
        if isinstance(value, Image.Image):
            digest = hashlib.sha1(np.asarray(value).tobytes() + str(value.size).encode()).hexdigest()
            name = f"image/{digest[:8]}.png"
            if name not in self.artifacts:
                (self.folder / "image").mkdir(parents=True, exist_ok=True)
                value.save(self.folder / name)
            self.artifacts[name] = value
            return name
        if isinstance(value, list) and value and all(isinstance(v, Image.Image) for v in value):
            return ",".join(self.store(v) for v in value)
        data = to_jsonable(value)
        text = json.dumps(data, sort_keys=True, default=str)  # a custom tool's odd value: its str
        name = f"{_kind(value)}/{hashlib.sha1(text.encode()).hexdigest()[:8]}"
        (self.folder / name).parent.mkdir(parents=True, exist_ok=True)
        (self.folder / f"{name}.json").write_text(text)
        self.artifacts[name] = data
        return name

    def path(self, name: str) -> Path:
        """Where an image artifact's file is."""
        return self.folder / name

    def set_input(self, image: Image.Image) -> str:
        """Make ``image`` the conversation's image; a different image forgets the last objects (their
        boxes belong to the old one). Returns its name."""
        name = self.store(image)
        previous = self.current.get("input")
        if previous is None or self.store(previous) != name:
            self.current = {"input": image}
        return name

    def remember(self, value: Any, kind: Any) -> None:
        """Update what "it" and "them" refer to with a step's output of the tool output type ``kind``."""
        if kind is Image.Image:
            self.current["last_image"] = value
        elif kind is Object:
            self.current["last_object"] = value
        elif kind == Objects:
            self.current["last_objects"] = value
            if len(value) == 1:
                self.current["last_object"] = value[0]
            else:  # "it" no longer means one object
                self.current.pop("last_object", None)

    def available(self) -> dict[str, Any]:
        """The memory names a plan may refer to now, and their types."""
        return {name: MEMORY_NAMES[name] for name in self.current}
