"""The task vocabulary: location bins, class references and structural tokens, added to a tokenizer.

All task tokens are added in one ``add_tokens`` call so their ids form one contiguous block
``[first_id, first_id + num_tokens)``. The model scores only that block, so a *local* id is
``global_id - first_id``. Local layout::

    [0, num_bins)                               <bin0> ... <bin{num_bins-1}>
    [num_bins, num_bins + max_classes)          <c0> ... <c{max_classes-1}>
    then STRUCTURAL_TOKENS, then FORMAT_TOKENS  (in the order listed below)

Bins split a square canvas of ``canvas_size`` pixels (the padded model input) into ``num_bins`` equal
cells per axis. Class tokens carry no meaning of their own: ``<ck>`` refers to the k-th class written
in the instruction, so a request can name any classes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

DEFAULT_NUM_BINS = 512
DEFAULT_MAX_CLASSES = 100

IMAGE_TOKEN = "<image>"  # where the model splices image features into the prompt
END_OF_OBJECTS = "<eoo>"  # ends an autoregressive answer
NO_OBJECT = "<noobj>"  # class slot of an empty parallel-decoding object slot
POLYGON = "<poly>"  # names the polygon output format in segmentation instructions
REGION = "<region>"  # placeholder for a region input (RoI features), one per Request.regions entry
POINT = "<point>"  # placeholder for a point input (a click), one per Request.points entry
STRUCTURAL_TOKENS = (IMAGE_TOKEN, END_OF_OBJECTS, NO_OBJECT, POLYGON, REGION, POINT)
#: Output-format tokens: written in instructions to state the answer format, and used as the
#: per-position queries of the parallel decoder.
FORMAT_TOKENS = ("<cls>", "<x1>", "<y1>", "<x2>", "<y2>", "<px>", "<py>")
CONFIG_NAME = "task_vocab.json"

#: Matches any task token (whatever the number of bins/classes), e.g. to strip them from text.
TASK_TOKEN_PATTERN = re.compile(
    r"<bin\d+>|<c\d+>|" + "|".join(re.escape(token) for token in STRUCTURAL_TOKENS + FORMAT_TOKENS)
)


def task_token_names(num_bins: int, max_classes: int) -> list[str]:
    """Every task token, in local-id order."""
    bins = [f"<bin{b}>" for b in range(num_bins)]
    classes = [f"<c{k}>" for k in range(max_classes)]
    return bins + classes + list(STRUCTURAL_TOKENS) + list(FORMAT_TOKENS)


def _shift(ids: Any, offset: int) -> Any:
    """``ids + offset`` for an int, a list/tuple of ints, a numpy array or a tensor."""
    if isinstance(ids, (list, tuple)):
        return [int(i) + offset for i in ids]
    return ids + offset


def _in_range(ids: Any, low: int, high: int) -> Any:
    """``low <= ids < high`` elementwise for an int, a numpy array or a tensor."""
    return (ids >= low) & (ids < high)


class TaskVocab:
    """Task tokens registered in a Hugging Face tokenizer, with id and coordinate conversions."""

    def __init__(
        self, tokenizer: Any, num_bins: int = DEFAULT_NUM_BINS, max_classes: int = DEFAULT_MAX_CLASSES
    ) -> None:
        if num_bins < 2 or max_classes < 1:
            raise ValueError(f"need num_bins >= 2 and max_classes >= 1, got {num_bins}, {max_classes}")
        self.tokenizer = tokenizer
        self.num_bins = num_bins
        self.max_classes = max_classes
        self.token_names = task_token_names(num_bins, max_classes)
        self.first_id = self._register(tokenizer, self.token_names)
        self.num_tokens = len(self.token_names)
        self._class_start = self.first_id + num_bins
        self._named_ids = {
            name: self.first_id + num_bins + max_classes + offset
            for offset, name in enumerate(STRUCTURAL_TOKENS + FORMAT_TOKENS)
        }
        self.image_id = self._named_ids[IMAGE_TOKEN]
        self.eoo_id = self._named_ids[END_OF_OBJECTS]
        self.noobj_id = self._named_ids[NO_OBJECT]
        self.region_id = self._named_ids[REGION]
        self.point_id = self._named_ids[POINT]
        # answers in words end with the tokenizer's end-of-sequence token (BERT-style tokenizers: [SEP])
        end = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
        if end is None:
            raise ValueError("the tokenizer has neither an end-of-sequence nor a separator token")
        self.text_end_id = int(end)

    @staticmethod
    def _register(tokenizer: Any, names: list[str]) -> int:
        """Add ``names`` as one contiguous block (or find them already there); return the first id."""
        existing = tokenizer.get_vocab()
        present = [name for name in names if name in existing]
        if not present:
            tokenizer.add_tokens(names, special_tokens=True)
        elif len(present) != len(names):
            raise ValueError(
                f"the tokenizer already has {len(present)} of the {len(names)} task tokens (e.g. "
                f"{present[0]!r}), so they cannot be added as one contiguous block; start from the base "
                "tokenizer, or load the one saved with TaskVocab.save_pretrained"
            )
        ids = tokenizer.convert_tokens_to_ids(names)
        if ids != list(range(ids[0], ids[0] + len(names))):
            raise ValueError("the task tokens in this tokenizer are not contiguous in the expected order")
        return ids[0]

    # ---- ids -------------------------------------------------------------------------------------
    def token_id(self, name: str) -> int:
        """Global id of a structural or format token such as ``"<eoo>"`` or ``"<x1>"``."""
        try:
            return self._named_ids[name]
        except KeyError:
            raise KeyError(
                f"{name!r} is not a structural/format token; known: {list(self._named_ids)}"
            ) from None

    def to_local(self, ids: Any) -> Any:
        """Global ids -> local ids (offsets into the task-token block)."""
        return _shift(ids, -self.first_id)

    def to_global(self, local_ids: Any) -> Any:
        """Local ids -> global tokenizer ids."""
        return _shift(local_ids, self.first_id)

    def bin_id(self, b: int) -> int:
        if not 0 <= b < self.num_bins:
            raise ValueError(f"bin {b} is outside [0, {self.num_bins})")
        return self.first_id + b

    def class_id(self, k: int) -> int:
        if not 0 <= k < self.max_classes:
            raise ValueError(f"class reference {k} is outside [0, {self.max_classes})")
        return self._class_start + k

    def is_bin(self, ids: Any) -> Any:
        return _in_range(ids, self.first_id, self._class_start)

    def is_class(self, ids: Any) -> Any:
        return _in_range(ids, self._class_start, self._class_start + self.max_classes)

    def bin_index(self, ids: Any) -> Any:
        return ids - self.first_id

    def class_index(self, ids: Any) -> Any:
        return ids - self._class_start

    def bin_local_ids(self) -> torch.Tensor:
        """Local ids of all bin tokens."""
        return torch.arange(self.num_bins)

    def class_local_ids(self, n: int) -> torch.Tensor:
        """Local ids of ``<c0>`` ... ``<c{n-1}>``."""
        if not 0 <= n <= self.max_classes:
            raise ValueError(f"{n} classes requested, this vocabulary has {self.max_classes} class tokens")
        return torch.arange(self.num_bins, self.num_bins + n)

    # ---- coordinates -----------------------------------------------------------------------------
    def quantize(self, coords: Any, canvas_size: float) -> Any:
        """Pixel coordinates -> bins: ``floor(x / canvas_size * num_bins)`` clipped to the canvas.

        Returns a LongTensor for tensor input, else an int64 numpy array.
        """
        if isinstance(coords, torch.Tensor):
            bins = torch.floor(coords.double() / canvas_size * self.num_bins)
            return bins.clamp(0, self.num_bins - 1).long()
        bins = np.floor(np.asarray(coords, dtype=np.float64) / canvas_size * self.num_bins)
        return np.clip(bins, 0, self.num_bins - 1).astype(np.int64)

    def dequantize(self, bins: Any, canvas_size: float) -> Any:
        """Bins -> pixel coordinates of the bin centres (error <= half a bin for in-canvas points)."""
        if isinstance(bins, torch.Tensor):
            return (bins.double() + 0.5) * (canvas_size / self.num_bins)
        return (np.asarray(bins, dtype=np.float64) + 0.5) * (canvas_size / self.num_bins)

    def continuous_bins(self, coords: np.ndarray, canvas_size: float) -> np.ndarray:
        """Pixel coordinates -> fractional bin positions, where bin k's centre is k (inverse of
        ``dequantize`` without rounding), clipped to the bin range."""
        bins = np.asarray(coords, dtype=np.float64) / canvas_size * self.num_bins - 0.5
        return np.clip(bins, 0.0, self.num_bins - 1.0)

    def bin_size(self, canvas_size: float) -> float:
        """Side of one bin in pixels."""
        return canvas_size / self.num_bins

    # ---- persistence -----------------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path) -> None:
        """Save the tokenizer (with the task tokens) and ``task_vocab.json``."""
        directory = Path(directory)
        self.tokenizer.save_pretrained(directory)
        config = {"num_bins": self.num_bins, "max_classes": self.max_classes, "first_id": self.first_id}
        (directory / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> TaskVocab:
        """Load a directory written by :meth:`save_pretrained`; ids are identical to the saved ones."""
        from transformers import AutoTokenizer

        directory = Path(directory)
        config = json.loads((directory / CONFIG_NAME).read_text())
        vocab = cls(AutoTokenizer.from_pretrained(directory), config["num_bins"], config["max_classes"])
        if vocab.first_id != config["first_id"]:
            raise ValueError(
                f"task tokens moved from id {config['first_id']} to {vocab.first_id} in {directory}"
            )
        return vocab

    def __repr__(self) -> str:
        return (
            f"TaskVocab(num_bins={self.num_bins}, max_classes={self.max_classes}, "
            f"ids=[{self.first_id}, {self.first_id + self.num_tokens}))"
        )
