"""Hold out part of a COCO-format dataset: a split is a committed file of validation image ids, so every
run and every machine trains and evaluates on the same images."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from visionllm.fileio import write_json_atomic


def draw_split(data: dict[str, Any], num_val: int, seed: int) -> list[int]:
    """``num_val`` image ids drawn uniformly without replacement (seeded), sorted."""
    ids = sorted(image["id"] for image in data["images"])
    if not 0 < num_val < len(ids):
        raise ValueError(f"num_val must be between 1 and {len(ids) - 1} for {len(ids)} images, got {num_val}")
    return sorted(int(i) for i in np.random.default_rng(seed).choice(ids, size=num_val, replace=False))


def split_coco(data: dict[str, Any], val_ids: list[int], split_name: str) -> tuple[dict, dict]:
    """(train, val) COCO dicts: the images of ``val_ids`` and their annotations in val, the rest in train;
    both keep every category (the same class list and ids). ``split_name`` names the split in errors."""
    unknown = sorted(set(val_ids) - {image["id"] for image in data["images"]}, key=str)
    if unknown:
        raise ValueError(
            f"{split_name}: val_image_ids {unknown[:5]} are not among the annotation file's images"
        )
    held_out = set(val_ids)

    def subset(keep) -> dict:
        part = {key: value for key, value in data.items() if key not in ("images", "annotations")}
        part["images"] = [image for image in data["images"] if keep(image["id"])]
        part["annotations"] = [ann for ann in data["annotations"] if keep(ann["image_id"])]
        return part

    return subset(lambda i: i not in held_out), subset(lambda i: i in held_out)


def write_split(data: dict[str, Any], split_file: Path, out_dir: Path) -> tuple[dict, dict]:
    """Apply the split file ``{"val_image_ids": [...]}`` to the COCO dict ``data`` (``load_coco_json``);
    writes ``out_dir``/``instances_train.json`` and ``instances_val.json`` (each atomically), returns them."""
    split = load_split(split_file)
    train, val = split_coco(data, split["val_image_ids"], str(split_file))
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(train, out_dir / "instances_train.json")
    write_json_atomic(val, out_dir / "instances_val.json")
    return train, val


def load_split(split_file: Path) -> dict[str, Any]:
    """A split file's contents; ValueError naming the file when ``val_image_ids`` is missing or malformed."""
    try:
        split = json.loads(Path(split_file).read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{split_file} is not a JSON file: {error}") from error
    ids = split.get("val_image_ids") if isinstance(split, dict) else None
    if not isinstance(ids, list) or not ids or not all(isinstance(i, int) for i in ids):
        raise ValueError(f"{split_file}: expected a non-empty 'val_image_ids' list of integer image ids")
    if len(set(ids)) < len(ids):
        raise ValueError(f"{split_file}: val_image_ids repeat an id")
    return split
