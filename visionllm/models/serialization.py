"""Save and load a whole VisionLLM as one self-contained directory.

    <dir>/config.json              the model's init kwargs (with the class names as currently set) and the
                                   transformers configs of the LLM and the text encoder
    <dir>/model.safetensors        every weight: base LLM, LoRA, task-token rows, image tokenizer
    <dir>/tokenizer/               the LLM tokenizer with the task tokens, and task_vocab.json
    <dir>/text_encoder_tokenizer/  the instruction reader's tokenizer

Loading rebuilds the architecture from ``config.json`` alone (random init, then a strict weight load), so
the local LLM, text-encoder and backbone paths the model was first built from need not exist any more.
A save is written to a staging directory beside the target and renamed into place: an interrupted save
leaves the previous save intact.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetensors.torch import load_model, save_model

if TYPE_CHECKING:
    from typing_extensions import Self

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
TOKENIZER_DIR = "tokenizer"
TEXT_TOKENIZER_DIR = "text_encoder_tokenizer"


def init_kwargs(constructor_locals: dict[str, Any]) -> dict[str, Any]:
    """The constructor arguments in ``locals()`` (taken before ``__init__`` binds anything else) as JSON
    data: what ``config.json`` records, and a copy that later changes to the caller's dicts cannot reach."""
    kwargs = {k: v for k, v in constructor_locals.items() if k not in ("self", "__class__")}
    return json.loads(json.dumps(kwargs))


class PretrainedMixin:
    """``save_pretrained`` / ``from_pretrained`` for ``VisionLLM``: it reads the model's ``init_config``,
    ``llm``, ``vocab``, ``image_tokenizer`` and ``class_names``."""

    init_config: dict[str, Any]

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write the model to ``directory``, replacing an earlier save there only once all is written.

        Refuses a non-empty directory that is not a saved model, which replacing would delete.
        """
        directory = Path(directory)
        if directory.is_dir() and any(directory.iterdir()) and not (directory / CONFIG_NAME).is_file():
            raise FileExistsError(f"{directory} is not empty and holds no saved model; not replacing it")
        directory.parent.mkdir(parents=True, exist_ok=True)
        staging = directory.with_name(f".{directory.name}.saving-{uuid.uuid4().hex[:8]}")
        staging.mkdir()
        try:
            self._write(staging)
            _replace_directory(staging, directory)
        finally:
            shutil.rmtree(staging, ignore_errors=True)  # still there only when the save failed
        return directory

    def _write(self, directory: Path) -> None:
        text_encoder = self.image_tokenizer.text_encoder
        self.vocab.save_pretrained(directory / TOKENIZER_DIR)
        text_encoder.tokenizer.save_pretrained(directory / TEXT_TOKENIZER_DIR)
        config = {
            "init_config": {**self.init_config, "class_names": self.class_names},
            "llm_config": self.llm.decoder.config.to_dict(),
            "text_encoder_config": text_encoder.model.config.to_dict(),
        }
        (directory / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
        save_model(self, str(directory / WEIGHTS_NAME), metadata={"format": "pt"})

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> Self:
        """Rebuild a model written by :meth:`save_pretrained` (in eval mode) without any network access
        or the paths it was first built from: the LLM and a pretrained text encoder are rebuilt from
        their saved transformers configs, the backbone without its checkpoint, then all weights load
        strictly."""
        directory = Path(directory)
        if not (directory / CONFIG_NAME).is_file():
            raise FileNotFoundError(f"{directory} is not a saved VisionLLM: {CONFIG_NAME} is missing")
        saved = json.loads((directory / CONFIG_NAME).read_text())
        kwargs = saved["init_config"]
        kwargs["llm"] = {
            **kwargs["llm"],
            "path": None,
            "config": saved["llm_config"],
            "tokenizer_path": str(directory / TOKENIZER_DIR),
        }
        image_tokenizer = kwargs["image_tokenizer"]
        text_encoder = {
            **image_tokenizer["text_encoder"],
            "tokenizer_path": str(directory / TEXT_TOKENIZER_DIR),
        }
        if text_encoder.get("path") is not None:
            text_encoder.update(path=None, config=saved["text_encoder_config"])
        kwargs["image_tokenizer"] = {
            **image_tokenizer,
            "backbone": {**image_tokenizer["backbone"], "checkpoint": None},
            "text_encoder": text_encoder,
        }
        model = cls(**kwargs)
        load_model(model, directory / WEIGHTS_NAME, strict=True)
        return model.eval()


def _replace_directory(new: Path, target: Path) -> None:
    """Move ``new`` to ``target``. An existing ``target`` is first renamed aside and deleted after the
    swap: each step is an atomic rename, and a crash between the two leaves the old save renamed aside
    (``.<name>.old-*``), never half-written."""
    if not target.exists():
        os.replace(new, target)
        return
    old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
    os.replace(target, old)
    os.replace(new, target)
    shutil.rmtree(old)
