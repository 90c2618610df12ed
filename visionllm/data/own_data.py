"""Your own data, found without config edits: a COCO file, a COCO folder or a Pascal VOC folder becomes COCO
train / val / test files whose ``file_name`` entries are relative to one image folder.

- A COCO JSON file: its images are looked for beside it, in ``images/`` beside it, one level up or in a
  sibling folder (``annotations/instances_train2017.json`` + ``train2017/``).
- A folder with ``annotations/*.json``: ``*train*`` / ``*val*`` / ``*test*`` files by name.
- A Pascal VOC folder (``Annotations/``, ``JPEGImages/``, optional ``ImageSets/Main/{train,val,test}.txt``;
  the root may sit one level down, as in ``bccd/BCCD``): converted to COCO with the training split's class
  list (sorted names) for every split.
- Without a validation split, one is drawn from the training images (``val_fraction``, seeded) and written
  next to the run with its image ids (``split.json``), so the run can be repeated and checked.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from visionllm.data.coco import load_coco_json
from visionllm.data.split import draw_split, split_coco
from visionllm.data.voc2coco import convert_voc
from visionllm.fileio import write_json_atomic

SPLITS = ("train", "val", "test")


@dataclass
class DataSplits:
    """COCO files of one dataset and the folder their ``file_name`` entries are relative to."""

    image_dir: Path
    classes: list[str]
    train: Path | None = None
    val: Path | None = None
    test: Path | None = None
    has_polygons: bool = False

    def summary(self) -> str:
        """One line: classes, shapes, image folder and each split's file and image count."""
        names = ", ".join(self.classes[:8]) + (
            f", ... ({len(self.classes)} in all)" if len(self.classes) > 8 else ""
        )
        splits = [
            f"{name}: {path} ({_count_images(path)} images)"
            for name in SPLITS
            if (path := getattr(self, name))
        ]
        shapes = "boxes and polygons" if self.has_polygons else "boxes only"
        return f"classes {names}; {shapes}; images in {self.image_dir}; " + "; ".join(splits)


def prepare_data(
    data: str | Path,
    out_dir: str | Path,
    val: str | Path | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
    classes: list[str] | None = None,
) -> DataSplits:
    """Find or make the COCO files of ``data`` (a file or folder, see the module docstring) in ``out_dir``.

    ``val`` (a COCO file) overrides the validation split found in ``data``; without either, ``val_fraction``
    of the training images are held out with ``seed``. ``classes`` (e.g. a checkpoint's) fixes the class list
    and order of converted VOC data. Raises ValueError naming the path when nothing usable is found.
    """
    data, out_dir = Path(data), Path(out_dir)
    if not data.exists():
        raise ValueError(f"{data}: no such file or folder")
    voc_root = find_voc_root(data)
    if voc_root is not None:
        splits = _convert_voc_splits(voc_root, out_dir / "data", classes)
    elif data.is_file():
        splits = _coco_splits({"train": data})
    else:
        splits = _coco_splits(_coco_files_in(data))
    if val is not None:
        splits.val = Path(val)
    if splits.train is not None and splits.val is None:
        splits.train, splits.val = _hold_out(splits.train, out_dir / "data", val_fraction, seed)
    return splits


def prepare_test_data(data: str | Path, out_dir: str | Path, classes: list[str]) -> tuple[Path, Path]:
    """The COCO file to evaluate on and its image folder: ``data``'s test split, else its val split, else
    all of it (a single COCO file, or a VOC folder without split lists)."""
    data = Path(data)
    voc_root = find_voc_root(data)
    if voc_root is not None:
        lists = voc_root / "ImageSets" / "Main"
        split = next((s for s in ("test", "val") if (lists / f"{s}.txt").is_file()), None)
        out = Path(out_dir) / "data" / f"{split or 'all'}.json"
        convert_voc(voc_root, out, classes=classes, split=split, progress=True)
        return out, voc_root / "JPEGImages"
    if data.is_file():
        return data, find_image_dir(data)
    files = _coco_files_in(data)
    chosen = files.get("test") or files.get("val") or files.get("train")
    return chosen, find_image_dir(chosen)


def find_voc_root(path: Path) -> Path | None:
    """``path`` or its only subfolder when it has ``Annotations/`` and ``JPEGImages/``, else None."""
    if not path.is_dir():
        return None
    candidates = [path, *sorted(p for p in path.iterdir() if p.is_dir())]
    for candidate in candidates:
        if (candidate / "Annotations").is_dir() and (candidate / "JPEGImages").is_dir():
            return candidate
    return None


def find_image_dir(coco_json: Path) -> Path:
    """The folder the first image's ``file_name`` is relative to: beside the file, its ``images/``, one level
    up (``annotations/x.json`` + ``images/``) or a sibling of the file's folder (COCO's ``train2017/``);
    ValueError listing where it looked otherwise."""
    coco = load_coco_json(str(coco_json))
    if not coco["images"]:
        raise ValueError(f"{coco_json}: the file lists no images")
    first = coco["images"][0]["file_name"]
    here = coco_json.resolve().parent
    siblings = sorted(p for p in here.parent.iterdir() if p.is_dir() and p != here)
    candidates = [here, here / "images", here.parent, *siblings]
    for folder in candidates:
        if (folder / first).is_file():
            return folder
    raise ValueError(
        f"{coco_json}: cannot find its first image {first!r} in " + ", ".join(str(c) for c in candidates)
    )


def _coco_files_in(folder: Path) -> dict[str, Path]:
    """``annotations/*.json`` (or ``*.json``) of a COCO folder by split name: the first file whose name
    contains ``train`` / ``val`` / ``test``; a single file without one of those words is the training set."""
    search = folder / "annotations" if (folder / "annotations").is_dir() else folder
    files = sorted(search.glob("*.json"))
    if not files:
        raise ValueError(
            f"{folder}: neither a Pascal VOC folder (Annotations/, JPEGImages/) nor COCO JSON files"
        )
    found = {split: next((f for f in files if split in f.stem), None) for split in SPLITS}
    if found["train"] is None and len(files) == 1:
        found["train"] = files[0]
    if found["train"] is None:
        raise ValueError(f"{search}: no COCO file with 'train' in its name among {[f.name for f in files]}")
    return {split: path for split, path in found.items() if path is not None}


def _coco_splits(files: dict[str, Path]) -> DataSplits:
    train = load_coco_json(str(files["train"]))
    return DataSplits(
        image_dir=find_image_dir(files["train"]),
        classes=[category["name"] for category in train["categories"]],
        has_polygons=_has_polygons(train),
        **files,
    )


def _convert_voc_splits(voc_root: Path, out_dir: Path, classes: list[str] | None) -> DataSplits:
    """Each split list of a VOC root as COCO (all XMLs as training data without lists)."""
    lists = voc_root / "ImageSets" / "Main"
    available = [s for s in SPLITS if (lists / f"{s}.txt").is_file()]
    if "train" not in available and (lists / "trainval.txt").is_file():
        available = ["trainval", *[s for s in available if s == "test"]]
    splits = DataSplits(image_dir=voc_root / "JPEGImages", classes=list(classes or []))
    for split in available or [None]:
        name = "train" if split in (None, "trainval") else split
        out = out_dir / f"{name}.json"
        coco = convert_voc(voc_root, out, classes=splits.classes or None, split=split, progress=True)
        splits.classes = [category["name"] for category in coco["categories"]]
        setattr(splits, name, out)
    return splits


def _hold_out(train_json: Path, out_dir: Path, val_fraction: float, seed: int) -> tuple[Path, Path]:
    """Split ``val_fraction`` of ``train_json``'s images off (seeded); writes both parts and split.json."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    data = load_coco_json(str(train_json))
    num_val = max(1, round(len(data["images"]) * val_fraction))
    val_ids = draw_split(data, num_val, seed)
    train, val = split_coco(data, val_ids, str(train_json))
    write_json_atomic(dict(source=str(train_json), seed=seed, val_image_ids=val_ids), out_dir / "split.json")
    write_json_atomic(train, out_dir / "instances_train.json")
    write_json_atomic(val, out_dir / "instances_val.json")
    return out_dir / "instances_train.json", out_dir / "instances_val.json"


def _has_polygons(coco: dict[str, Any]) -> bool:
    """True when some annotation has a polygon segmentation (of at least 3 points)."""
    return any(
        isinstance(ann.get("segmentation"), list) and any(len(p) >= 6 for p in ann["segmentation"])
        for ann in coco["annotations"]
    )


def _count_images(path: Path) -> int:
    return len(json.loads(Path(path).read_text())["images"])
