"""Your own data in three commands: ``visionllm train --data``, ``test --checkpoint``, ``predict`` on VOC and
COCO folders built here, and one test per friction a new user met before (issue: own data)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mmengine.config import Config
from PIL import Image, ImageDraw

from tests.conftest import REPO, voc_xml
from visionllm.data.own_data import find_image_dir, prepare_data, prepare_test_data
from visionllm.engine.launch import MODEL_CONFIGS, load_config, own_data_config

#: A few iterations and small batches: the commands are under test here, not the learning.
QUICK = ["train_cfg.max_iters=2", "train_cfg.val_interval=2", "default_hooks.checkpoint.interval=2"]
QUICK += ["train_dataloader.batch_size=2", "val_dataloader.batch_size=2"]


def cells_image(rng: np.random.Generator, path: Path, boxes: list[tuple[int, int, int, int]]) -> None:
    image = Image.new("RGB", (96, 72), (230, 200, 200))
    draw = ImageDraw.Draw(image)
    for box in boxes:
        draw.ellipse(box, fill=tuple(int(v) for v in rng.integers(60, 200, 3)))
    image.save(path)


@pytest.fixture(scope="module")
def voc_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A boxes-only Pascal VOC dataset laid out like BCCD (the VOC root one level down), with split lists."""
    root = tmp_path_factory.mktemp("bloodcells") / "CELLS"
    for folder in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / folder).mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [f"cell_{i:02d}" for i in range(10)]
    for i, name in enumerate(names):
        boxes = [(10 + 5 * i % 30, 8, 40 + 5 * i % 30, 38), (50, 30, 80, 64)]
        cells_image(rng, root / "JPEGImages" / f"{name}.jpg", boxes)
        objects = [("RBC", (x1 + 1, y1 + 1, x2, y2), False) for x1, y1, x2, y2 in boxes[:1]]
        objects.append(("WBC" if i % 2 else "Platelets", (51, 31, 80, 64), False))
        (root / "Annotations" / f"{name}.xml").write_text(voc_xml(name, 96, 72, objects))
    for split, part in (("train", names[:6]), ("val", names[6:8]), ("test", names[8:])):
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(part) + "\n")
    return root.parent


@pytest.fixture(scope="module")
def coco_polygons(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A COCO file with polygons (annotations/instances.json + images/), no val split."""
    root = tmp_path_factory.mktemp("shapes")
    (root / "images").mkdir()
    (root / "annotations").mkdir()
    rng = np.random.default_rng(1)
    images, annotations = [], []
    for i in range(10):
        x = 10 + 4 * i
        cells_image(rng, root / "images" / f"{i}.png", [(x, 10, x + 30, 40)])
        images.append(dict(id=i + 1, file_name=f"{i}.png", height=72, width=96))
        polygon = [x, 10, x + 30, 10, x + 30, 40, x, 40]
        annotations.append(
            dict(id=i + 1, image_id=i + 1, category_id=1 + i % 2, bbox=[x, 10, 30, 30], area=900.0,
                 iscrowd=0, segmentation=[polygon])
        )  # fmt: skip
    categories = [dict(id=1, name="disc"), dict(id=2, name="ring")]
    path = root / "annotations" / "instances.json"
    path.write_text(json.dumps(dict(images=images, annotations=annotations, categories=categories)))
    return path


def visionllm(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", "import sys; from visionllm.cli import main; sys.exit(main())", *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, timeout=600)


# ------------------------------------------------------------------------------------ finding the data
def test_a_voc_folder_becomes_coco_splits_with_one_class_list(voc_folder: Path, tmp_path: Path) -> None:
    splits = prepare_data(voc_folder, tmp_path)
    assert splits.classes == ["Platelets", "RBC", "WBC"] and not splits.has_polygons
    assert splits.image_dir == voc_folder / "CELLS" / "JPEGImages"
    counts = {
        name: len(json.loads(getattr(splits, name).read_text())["images"])
        for name in ("train", "val", "test")
    }
    assert counts == {"train": 6, "val": 2, "test": 2}
    for name in ("val", "test"):
        categories = json.loads(getattr(splits, name).read_text())["categories"]
        assert [c["name"] for c in categories] == splits.classes


def test_without_a_val_split_a_seeded_one_is_written_next_to_the_run(
    coco_polygons: Path, tmp_path: Path
) -> None:
    first = prepare_data(coco_polygons, tmp_path / "a")
    prepare_data(coco_polygons.parent.parent, tmp_path / "b")  # the folder finds the same file
    assert first.has_polygons and first.classes == ["disc", "ring"]
    assert first.image_dir == coco_polygons.parent.parent / "images"
    split = json.loads((tmp_path / "a" / "data" / "split.json").read_text())
    assert split["seed"] == 0 and len(split["val_image_ids"]) == 2
    assert split == json.loads((tmp_path / "b" / "data" / "split.json").read_text())
    val = json.loads(first.val.read_text())
    assert sorted(image["id"] for image in val["images"]) == split["val_image_ids"]


def test_images_that_cannot_be_found_are_a_clear_error(coco_polygons: Path, tmp_path: Path) -> None:
    moved = tmp_path / "elsewhere.json"
    moved.write_text(coco_polygons.read_text())
    with pytest.raises(ValueError, match=r"elsewhere\.json: cannot find its first image '0\.png' in"):
        find_image_dir(moved)


# ------------------------------------------------------------------------------------ frictions
def test_friction_2_boxes_only_data_trains_detection_without_loading_masks(
    voc_folder: Path, tmp_path: Path
) -> None:
    cfg = own_data_config("tiny", prepare_data(voc_folder, tmp_path))
    assert set(cfg.model.tasks) == {"detect"} and cfg.model.eval_task == "detect"
    assert [s for s in cfg.train_dataloader.dataset.pipeline if s.type == "LoadAnnotations"][
        0
    ].with_mask is False
    assert cfg.val_evaluator.metric == ["bbox"]
    with pytest.raises(ValueError, match="--task segment needs polygon annotations"):
        own_data_config("tiny", prepare_data(voc_folder, tmp_path), task="segment")


def test_friction_3_test_data_follows_overridden_val_data(tmp_path: Path) -> None:
    other = str(tmp_path / "mine.json")
    cfg = load_config(
        str(REPO / "configs/visionllm_tiny_synthetic.py"), {"val_dataloader.dataset.ann_file": other}
    )
    assert cfg.test_dataloader.dataset.ann_file == other
    explicit = {"val_dataloader.dataset.ann_file": other, "test_dataloader.dataset.ann_file": "t.json"}
    cfg = load_config(str(REPO / "configs/visionllm_tiny_synthetic.py"), explicit)
    assert cfg.test_dataloader.dataset.ann_file == "t.json"


@pytest.mark.parametrize("model", sorted(MODEL_CONFIGS))
def test_friction_5_every_recipe_reads_the_same_data_the_same_way(
    model: str, coco_polygons: Path, tmp_path: Path
) -> None:
    splits = prepare_data(coco_polygons, tmp_path)
    cfg = own_data_config(model, splits)
    for split in ("train", "val", "test"):
        dataset = cfg[f"{split}_dataloader"].dataset
        assert dataset.ann_file == str((splits.val if split != "train" else splits.train).resolve())
        assert dataset.data_prefix.img == f"{splits.image_dir.resolve()}/"
    assert set(cfg.model.tasks) == {"detect", "segment"} and cfg.val_evaluator.metric == ["bbox", "segm"]
    assert cfg.model.llm.max_classes >= 2
    # a random LLM gets the positions every parallel slot of a 16-point polygon needs
    if cfg.model.llm.get("config"):
        assert cfg.model.llm.config.max_position_embeddings >= cfg.model.num_slots * 33


# ------------------------------------------------------------------------------------ the three commands
@pytest.mark.slow
def test_train_test_predict_on_a_voc_folder_without_overrides(voc_folder: Path, tmp_path: Path) -> None:
    work = tmp_path / "run"
    trained = visionllm("train", "--data", str(voc_folder), "--model", "tiny", "--work-dir", str(work),
                        "--cfg-options", *QUICK, cwd=tmp_path)  # fmt: skip
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "classes Platelets, RBC, WBC; boxes only" in trained.stdout
    assert "converting train.json" in trained.stderr  # the VOC conversion's progress bar
    assert (work / "config.py").is_file() and (work / "iter_2.pth").is_file()
    assert Config.fromfile(work / "config.py").model.eval_task == "detect"

    tested = visionllm("test", "--checkpoint", str(work / "iter_2.pth"), "--data", str(voc_folder),
                       "--out", str(tmp_path / "results.json"), cwd=tmp_path)  # fmt: skip
    assert tested.returncode == 0, tested.stderr[-3000:]
    assert "coco/bbox_mAP" in tested.stdout + tested.stderr
    assert "evaluated 2 images in" in tested.stdout and "evaluating" in tested.stderr  # summary, progress bar
    saved = json.loads((work / "test_metrics.json").read_text())
    assert saved["checkpoint"].endswith("iter_2.pth") and "coco/bbox_mAP" in saved["metrics"]
    test_images = {
        i["id"] for i in json.loads((work / "test_data" / "data" / "test.json").read_text())["images"]
    }
    assert len(test_images) == 2
    assert {r["image_id"] for r in json.loads((tmp_path / "results.json").read_text())} <= test_images

    images = voc_folder / "CELLS" / "JPEGImages"
    predicted = visionllm("predict", str(images), "--checkpoint", str(work / "iter_2.pth"),
                          "--out-dir", str(tmp_path / "pred"), "--score-thr", "0", cwd=tmp_path)  # fmt: skip
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    entries = json.loads((tmp_path / "pred" / "predictions.json").read_text())
    assert {e["category_name"] for e in entries} <= {"Platelets", "RBC", "WBC"} and entries
    assert len(list((tmp_path / "pred").glob("*.png"))) == 10
    assert (
        f"10 images, {len(entries)} objects, 0 skipped" in predicted.stdout
        and "predicting" in predicted.stderr
    )


@pytest.mark.slow
def test_train_and_test_on_a_polygon_coco_file_evaluate_segmentation(
    coco_polygons: Path, voc_folder: Path, tmp_path: Path
) -> None:
    work = tmp_path / "run"
    trained = visionllm("train", "--data", str(coco_polygons), "--model", "tiny", "--work-dir", str(work),
                        "--cfg-options", *QUICK, cwd=tmp_path)  # fmt: skip
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "boxes and polygons" in trained.stdout
    tested = visionllm("test", "--checkpoint", str(work / "iter_2.pth"), cwd=tmp_path)
    assert tested.returncode == 0, tested.stderr[-3000:]
    assert "coco/segm_mAP" in tested.stdout + tested.stderr

    # friction 4: test data of other classes is refused, naming both class lists, by both routes
    other = visionllm(
        "test", "--checkpoint", str(work / "iter_2.pth"), "--data", str(voc_folder), cwd=tmp_path
    )
    assert other.returncode == 2 and "'RBC'" in other.stderr and "Traceback" not in other.stderr
    cells, _ = prepare_test_data(voc_folder, tmp_path / "cells", ["Platelets", "RBC", "WBC"])
    images = voc_folder / "CELLS" / "JPEGImages"
    expert = subprocess.run(
        [sys.executable, str(REPO / "tools/test.py"), str(work / "config.py"), str(work / "iter_2.pth"),
         "--cfg-options", f"test_dataloader.dataset.ann_file={cells}", f"test_evaluator.ann_file={cells}",
         f"test_dataloader.dataset.data_prefix.img={images}/"],
        capture_output=True, text=True, cwd=tmp_path, timeout=600,
    )  # fmt: skip
    assert expert.returncode == 2, expert.stderr[-3000:]
    assert (
        "trained on the classes ['disc', 'ring']" in expert.stderr
        and "['Platelets', 'RBC', 'WBC']" in expert.stderr
    )


def test_friction_6_predict_takes_cfg_options() -> None:
    from visionllm.cli import build_parser

    args = build_parser().parse_args(
        ["predict", "x.png", "--checkpoint", "k.pth", "--cfg-options", "model.max_objects=5"]
    )
    assert args.cfg_options == {"model.max_objects": 5} and args.config is None
