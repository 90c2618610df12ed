"""Held-out splits of COCO-format data: a committed file of validation image ids, applied to the data."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO
from visionllm.data.coco import load_coco_json
from visionllm.data.split import draw_split, split_coco, write_split

SPLIT_SCRIPT = REPO / "datasets/split_coco.py"


def _coco(num_images: int = 6) -> dict:
    return dict(
        images=[dict(id=i, file_name=f"{i}.jpg", height=10, width=10) for i in range(1, num_images + 1)],
        annotations=[
            dict(id=10 * i + k, image_id=i, category_id=1 + k % 2, bbox=[0, 0, 2, 2], area=4)
            for i in range(1, num_images + 1)
            for k in range(i % 3)
        ],
        categories=[dict(id=1, name="cat"), dict(id=2, name="dog")],
    )


def test_a_split_partitions_images_and_their_annotations_and_keeps_every_class():
    data = _coco()
    val_ids = draw_split(data, 2, seed=0)
    assert val_ids == draw_split(data, 2, seed=0) and len(set(val_ids)) == 2  # seeded, no repeats
    train, val = split_coco(data, val_ids, "split.json")
    assert {i["id"] for i in val["images"]} == set(val_ids)
    assert {i["id"] for i in train["images"]} == {i["id"] for i in data["images"]} - set(val_ids)
    assert all(a["image_id"] in val_ids for a in val["annotations"])
    assert all(a["image_id"] not in val_ids for a in train["annotations"])
    assert len(train["annotations"]) + len(val["annotations"]) == len(data["annotations"])
    assert train["categories"] == val["categories"] == data["categories"]


def test_a_split_naming_an_unknown_image_is_refused_with_the_split_file_named():
    with pytest.raises(ValueError, match=r"split\.json.*\[99\]"):
        split_coco(_coco(), [1, 99], "split.json")
    with pytest.raises(ValueError, match="num_val"):
        draw_split(_coco(), 6, seed=0)


def test_the_script_draws_a_split_once_and_never_overwrites_it(tmp_path):
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps(_coco()))
    split = tmp_path / "split.json"
    command = [sys.executable, str(SPLIT_SCRIPT), str(ann), str(tmp_path / "out"), "--split", str(split)]
    subprocess.run([*command, "--new", "2"], check=True, capture_output=True)
    val_ids = json.loads(split.read_text())["val_image_ids"]
    val = json.loads((tmp_path / "out/instances_val.json").read_text())
    assert sorted(i["id"] for i in val["images"]) == val_ids
    again = subprocess.run([*command, "--new", "3"], capture_output=True, text=True)
    assert again.returncode != 0 and "never overwritten" in again.stderr
    assert json.loads(split.read_text())["val_image_ids"] == val_ids


def test_the_committed_coco128_split_holds_out_26_of_its_128_images(coco128, tmp_path):
    data = load_coco_json(str(coco128 / "annotations/instances_train2017.json"))
    train, val = write_split(data, REPO / "datasets/splits/coco128_val26.json", tmp_path)
    assert (len(train["images"]), len(val["images"])) == (102, 26)
    assert all((coco128 / "train2017" / image["file_name"]).is_file() for image in val["images"])
    assert json.loads((tmp_path / "instances_val.json").read_text()) == val
