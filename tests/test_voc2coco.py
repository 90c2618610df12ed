"""Pascal VOC XML -> COCO JSON: boxes, categories, ids, difficult objects, splits and error messages."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO

from tests.conftest import voc_xml
from visionllm.data.voc2coco import convert_voc

REPO = Path(__file__).resolve().parents[1]

#: name -> (width, height, [(class, (xmin, ymin, xmax, ymax), difficult)]), as VOC writes them (1-based)
IMAGES = {
    "000005": (500, 375, [("chair", (263, 211, 324, 339), False), ("chair", (165, 264, 253, 372), True)]),
    "000007": (500, 333, [("car", (141, 50, 500, 330), False)]),
    "000009": (500, 375, [("horse", (69, 172, 270, 330), False), ("person", (150, 141, 229, 284), False)]),
}
SPLITS = {"trainval": ["000005", "000009"], "test": ["000007"]}


@pytest.fixture()
def voc_root(tmp_path: Path) -> Path:
    root = tmp_path / "VOC2007"
    (root / "Annotations").mkdir(parents=True)
    (root / "ImageSets" / "Main").mkdir(parents=True)
    for name, (width, height, objects) in IMAGES.items():
        (root / "Annotations" / f"{name}.xml").write_text(voc_xml(name, width, height, objects))
    for split, names in SPLITS.items():
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(names) + "\n")
    return root


def _expected_objects(names: list[str]) -> list[tuple[str, list[float], int]]:
    """(class, COCO bbox, iscrowd) in file order, by the documented mmdet convention."""
    return [
        (cls, [x1 - 1, y1 - 1, x2 - x1, y2 - y1], int(difficult))
        for name in names
        for cls, (x1, y1, x2, y2), difficult in IMAGES[name][2]
    ]


def test_voc_root_split(voc_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "out" / "trainval.json"
    coco = convert_voc(voc_root, out, split="trainval")
    assert json.loads(out.read_text()) == coco
    names = SPLITS["trainval"]
    classes = sorted({cls for name in names for cls, _, _ in IMAGES[name][2]})
    assert [c["name"] for c in coco["categories"]] == classes
    assert [c["id"] for c in coco["categories"]] == list(range(1, len(classes) + 1))
    assert coco["images"] == [
        {"id": i + 1, "file_name": f"{name}.jpg", "width": IMAGES[name][0], "height": IMAGES[name][1]}
        for i, name in enumerate(names)
    ]
    expected = _expected_objects(names)
    anns = coco["annotations"]
    assert [ann["id"] for ann in anns] == list(range(1, len(expected) + 1))
    assert [(classes[a["category_id"] - 1], a["bbox"], a["iscrowd"]) for a in anns] == expected
    assert [a["image_id"] for a in anns] == [i + 1 for i, name in enumerate(names) for _ in IMAGES[name][2]]

    api = COCO(str(out))
    for ann in anns:
        x, y, w, h = ann["bbox"]
        assert ann["area"] == w * h
        mask = api.annToMask(ann)
        rows, cols = np.nonzero(mask)
        assert (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1) == (x, y, x + w, y + h)


def test_all_annotations_directory_list_and_given_classes(voc_root: Path, tmp_path: Path) -> None:
    classes = ["person", "horse", "car", "chair", "dog"]
    xml_files = sorted((voc_root / "Annotations").glob("*.xml"))
    from_root = convert_voc(voc_root, tmp_path / "a.json", classes=classes)
    from_dir = convert_voc(voc_root / "Annotations", tmp_path / "b.json", classes=classes)
    from_list = convert_voc(xml_files, tmp_path / "c.json", classes=classes)
    assert from_root == from_dir == from_list
    assert [c["name"] for c in from_root["categories"]] == classes
    names = sorted(IMAGES)
    assert [img["file_name"] for img in from_root["images"]] == [f"{name}.jpg" for name in names]
    got = [(classes[a["category_id"] - 1], a["bbox"], a["iscrowd"]) for a in from_root["annotations"]]
    assert got == _expected_objects(names)


def _write_bad(voc_root: Path, name: str, text: str) -> Path:
    path = voc_root / "Annotations" / f"{name}.xml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "text, message",
    [
        ("<annotation><size><width>5</width>", "cannot read VOC XML"),
        ("<annotation><filename>x.jpg</filename></annotation>", "missing <size>"),
        (voc_xml("bad", 100, 80, [("car", (1, 1, 50, "a"), False)]), "not a number"),
    ],
)
def test_malformed_files_are_named(voc_root: Path, tmp_path: Path, text: str, message: str) -> None:
    bad = _write_bad(voc_root, "bad", text)
    out = tmp_path / "out.json"
    with pytest.raises(ValueError, match=message) as error:
        convert_voc(voc_root, out)
    assert str(bad) in str(error.value)
    assert not out.exists()


def test_an_empty_box_is_dropped_with_a_warning_naming_file_and_object(
    voc_root: Path, tmp_path: Path
) -> None:
    """Real datasets have a few (BCCD: 2 of 4,888 boxes): one must not stop the conversion."""
    bad = _write_bad(
        voc_root,
        "bad",
        voc_xml("bad", 100, 80, [("car", (1, 1, 50, 50), False), ("car", (40, 10, 40, 30), False)]),
    )
    with pytest.warns(UserWarning, match=rf"{bad}: object 1 \(car\): dropping an empty box"):
        coco = convert_voc(voc_root, tmp_path / "out.json")
    [image] = [i for i in coco["images"] if i["file_name"] == "bad.jpg"]
    assert [a["bbox"] for a in coco["annotations"] if a["image_id"] == image["id"]] == [[0, 0, 49, 49]]


def test_unknown_class_names_file_and_object(voc_root: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'horse'") as error:
        convert_voc(voc_root, tmp_path / "out.json", classes=["chair", "car", "person"])
    assert str(voc_root / "Annotations" / "000009.xml") in str(error.value)


def test_missing_split_file(voc_root: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="val.txt"):
        convert_voc(voc_root, tmp_path / "out.json", split="val")


def _load_cli():
    spec = importlib.util.spec_from_file_location("voc2coco_cli", REPO / "datasets" / "voc2coco.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli(voc_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cli = _load_cli()
    out = tmp_path / "test.json"
    cli.main([str(voc_root), str(out), "--split", "test", "--classes", "car", "person"])
    coco = json.loads(out.read_text())
    assert [img["file_name"] for img in coco["images"]] == [f"{name}.jpg" for name in SPLITS["test"]]
    assert [c["name"] for c in coco["categories"]] == ["car", "person"]
    assert "1 images" in capsys.readouterr().out

    assert (
        cli.run_command(cli.main, "voc2coco", [str(voc_root), str(tmp_path / "bad.json"), "--classes", "car"])
        == 2
    )
    assert "000005.xml" in capsys.readouterr().err
