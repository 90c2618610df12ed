"""Convert Pascal VOC XML annotations into one COCO JSON file.

Why: VisionLLM trains and evaluates on COCO-format annotations only (pycocotools / mmdet
``CocoDataset``); this turns any VOC-style set into that format.

Conventions (the same as mmdet's ``XMLDataset`` and its ``pascal_voc.py`` converter):

* VOC boxes are 1-based and inclusive. Every coordinate is shifted by -1 and the width is
  ``xmax - xmin``: ``bbox = [xmin - 1, ymin - 1, xmax - xmin, ymax - ymin]``. Coordinates stay floats
  (mmdet truncates to int; VOC files hold integers, so this only matters for float-valued exports).
* ``area`` is ``w * h`` and ``segmentation`` is the box as a 4-point polygon: VOC XML has no masks.
* ``<difficult>1</difficult>`` objects get ``"iscrowd": 1``: pycocotools' evaluation then neither
  rewards nor penalises detections of them, and mmdet marks them ``ignore_flag`` in training.
* Category ids are 1-based in ``classes`` order; image and annotation ids are 1-based in file order.
"""

from __future__ import annotations

import warnings
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from visionllm.fileio import write_json_atomic


def _find_xml_files(source: list[Path] | Path, split: str | None) -> list[Path]:
    """The XML files named by ``source``: a list, one file, a directory of XMLs or a VOC root."""
    if isinstance(source, list):
        if split is not None:
            raise ValueError(
                "split needs a VOC root (with Annotations/ and ImageSets/Main/), not a file list"
            )
        return [Path(p) for p in source]
    source = Path(source)
    if source.is_file():
        return [source]
    annotation_dir = source / "Annotations"
    if annotation_dir.is_dir():
        if split is None:
            return sorted(annotation_dir.glob("*.xml"))
        split_file = source / "ImageSets" / "Main" / f"{split}.txt"
        if not split_file.is_file():
            raise ValueError(f"{split_file}: split file not found")
        names = [line.split()[0] for line in split_file.read_text().splitlines() if line.strip()]
        return [annotation_dir / f"{name}.xml" for name in names]
    if split is not None:
        raise ValueError(f"{source}: split needs a VOC root with Annotations/ and ImageSets/Main/")
    if not source.is_dir():
        raise ValueError(f"{source}: no such file or directory")
    return sorted(source.glob("*.xml"))


def _text(element: ET.Element, tag: str, xml_file: Path, where: str) -> str:
    """Stripped text of the required child ``tag``, or a ValueError naming the file and place."""
    child = element.find(tag)
    if child is None or child.text is None or not child.text.strip():
        raise ValueError(f"{xml_file}: {where}: missing <{tag}>")
    return child.text.strip()


def _number(element: ET.Element, tag: str, xml_file: Path, where: str) -> float:
    text = _text(element, tag, xml_file, where)
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{xml_file}: {where}: <{tag}> is not a number: {text!r}") from None


def _parse_xml(xml_file: Path) -> dict[str, Any]:
    """One VOC XML as ``{"file_name", "width", "height", "objects": [{"name", "box", "difficult"}]}``."""
    try:
        root = ET.parse(xml_file).getroot()
    except (ET.ParseError, OSError) as error:
        raise ValueError(f"{xml_file}: cannot read VOC XML: {error}") from error
    size = root.find("size")
    if size is None:
        raise ValueError(f"{xml_file}: missing <size>")
    width, height = (_number(size, tag, xml_file, "<size>") for tag in ("width", "height"))
    if width <= 0 or height <= 0 or not width.is_integer() or not height.is_integer():
        raise ValueError(f"{xml_file}: <size> must be positive integers, got {width} x {height}")
    objects = []
    for index, obj in enumerate(root.findall("object")):
        where = f"object {index}"
        name = _text(obj, "name", xml_file, where)
        where = f"object {index} ({name})"
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise ValueError(f"{xml_file}: {where}: missing <bndbox>")
        x1, y1, x2, y2 = (_number(bndbox, tag, xml_file, where) for tag in ("xmin", "ymin", "xmax", "ymax"))
        if x2 <= x1 or y2 <= y1:  # real datasets have a few (BCCD: 1 of 4,888); one must not stop the rest
            box = f"xmin={x1} ymin={y1} xmax={x2} ymax={y2}"
            warnings.warn(f"{xml_file}: {where}: dropping an empty box {box}", stacklevel=2)
            continue
        difficult = obj.find("difficult")
        is_difficult = difficult is not None and (difficult.text or "0").strip() == "1"
        objects.append({"name": name, "box": (x1, y1, x2, y2), "difficult": is_difficult})
    return {
        "file_name": _text(root, "filename", xml_file, "annotation"),
        "width": int(width),
        "height": int(height),
        "objects": objects,
    }


def convert_voc(
    annotation_files: list[Path] | Path,
    out_json: Path,
    classes: Sequence[str] | None = None,
    split: str | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Convert VOC XMLs to COCO, write ``out_json`` atomically and return the COCO dict.

    ``annotation_files``: a list of XML files, one XML file, a directory of XMLs, or a VOC root
    (``Annotations/`` + ``ImageSets/Main/<split>.txt``; without ``split`` all of ``Annotations/``).
    ``classes``: category order; default the sorted set of names seen. An object whose name is not in
    ``classes``, malformed XML or a missing ``<size>`` raise ValueError naming the file; an empty box is
    dropped with a warning naming the file and the object. ``progress`` shows a progress bar on stderr.
    """
    xml_files = _find_xml_files(annotation_files, split)
    files = tqdm(
        xml_files, desc=f"converting {Path(out_json).name}", unit="file", disable=not progress, leave=False
    )
    parsed = [(xml_file, _parse_xml(xml_file)) for xml_file in files]
    if classes is None:
        classes = sorted({obj["name"] for _, record in parsed for obj in record["objects"]})
    if len(set(classes)) != len(classes):
        raise ValueError(f"classes must be unique, got {list(classes)}")
    category_ids = {name: i + 1 for i, name in enumerate(classes)}

    images, annotations = [], []
    for image_id, (xml_file, record) in enumerate(parsed, start=1):
        images.append(
            {
                "id": image_id,
                "file_name": record["file_name"],
                "width": record["width"],
                "height": record["height"],
            }
        )
        for index, obj in enumerate(record["objects"]):
            if obj["name"] not in category_ids:
                raise ValueError(
                    f"{xml_file}: object {index} has unknown class {obj['name']!r} (classes: {list(classes)})"
                )
            x1, y1, x2, y2 = obj["box"]
            x, y, w, h = x1 - 1, y1 - 1, x2 - x1, y2 - y1
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": category_ids[obj["name"]],
                    "bbox": [x, y, w, h],
                    "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]],
                    "area": w * h,
                    "iscrowd": int(obj["difficult"]),
                }
            )
    coco = {
        "info": {"description": "converted from Pascal VOC by visionllm.data.voc2coco", "split": split},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i, "name": name, "supercategory": "none"} for name, i in category_ids.items()],
    }
    write_json_atomic(coco, Path(out_json))
    return coco
