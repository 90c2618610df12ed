"""bench/yolo_peer.py without training: the COCO -> Ultralytics label conversion read back, and the pure-torch
NMS it puts under ``torchvision.ops.nms`` (in a subprocess, so Ultralytics' import-time settings stay out of
this one) against a plain greedy NMS."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch
import yaml
from mmengine.config import Config

from tests.conftest import REPO


def load_peer():
    spec = importlib.util.spec_from_file_location("yolo_peer", REPO / "bench" / "yolo_peer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_coco(path, images, annotations):
    categories = [dict(id=7, name="cat"), dict(id=3, name="dog")]  # ids neither sorted nor contiguous
    path.write_text(json.dumps(dict(images=images, annotations=annotations, categories=categories)))


def test_coco_to_yolo_writes_the_boxes_visionllm_trains_on_and_they_read_back(tmp_path):
    peer = load_peer()
    image_dir = tmp_path / "img"
    image_dir.mkdir()
    for name in ("a.png", "b.jpg", "c.png"):
        (image_dir / name).write_bytes(b"")
    images = [
        dict(id=11, file_name="a.png", width=200, height=100),
        dict(id=12, file_name="b.jpg", width=50, height=50),
        dict(id=13, file_name="c.png", width=64, height=64),
    ]
    box = dict(iscrowd=0, area=100.0)
    annotations = [
        dict(box, id=1, image_id=11, category_id=3, bbox=[10.0, 20.0, 40.0, 30.0]),
        dict(box, id=2, image_id=11, category_id=7, bbox=[180.0, 90.0, 40.0, 20.0]),  # clipped to the image
        dict(
            box, id=3, image_id=12, category_id=7, bbox=[5.0, 5.0, 10.0, 10.0], iscrowd=1
        ),  # crowd: left out
        dict(box, id=4, image_id=13, category_id=3, bbox=[5.0, 5.0, 0.5, 10.0]),  # under one pixel: left out
    ]
    coco = tmp_path / "train.json"
    write_coco(coco, images, annotations)
    out = tmp_path / "yolo"

    assert peer.coco_to_yolo(coco, image_dir, out, "train", skip_empty=True) == 1  # b and c: no box left
    assert sorted(p.name for p in (out / "images/train").iterdir()) == ["11.png"]
    assert (out / "images/train/11.png").resolve() == (image_dir / "a.png").resolve()
    rows = [line.split() for line in (out / "labels/train/11.txt").read_text().splitlines()]
    back = []
    for cls, cx, cy, w, h in rows:  # normalised centre boxes back to COCO pixels
        cx, cy, w, h = float(cx) * 200, float(cy) * 100, float(w) * 200, float(h) * 100
        back.append((int(cls), [cx - w / 2, cy - h / 2, w, h]))
    assert [cls for cls, _ in back] == [1, 0]  # dog is the 2nd category of the file, cat the 1st
    assert back[0][1] == pytest.approx([10.0, 20.0, 40.0, 30.0], abs=1e-3)
    assert back[1][1] == pytest.approx([180.0, 90.0, 20.0, 10.0], abs=1e-3)

    assert peer.coco_to_yolo(coco, image_dir, out, "val", skip_empty=False) == 3  # val keeps every image
    assert (out / "labels/val/12.txt").read_text() == ""
    spec = dict(train=str(coco), val=str(coco), image_dir=str(image_dir), classes=["cat", "dog"])
    data = yaml.safe_load(peer.write_yolo_data(spec, out).read_text())
    assert data["names"] == {0: "cat", 1: "dog"} and data["train"] == "images/train"
    assert len(list((out / "images/train").iterdir())) == 1  # rewritten, not appended to


def iou(a: list[float], b: list[float]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union


def greedy_nms(boxes: torch.Tensor, scores: torch.Tensor, threshold: float) -> list[int]:
    """Textbook NMS: take the best remaining box, drop those overlapping it by more than ``threshold``."""
    rows = boxes.tolist()
    order = sorted(range(len(rows)), key=lambda i: -float(scores[i]))
    keep = []
    while order:
        best, *order = order
        keep.append(best)
        order = [j for j in order if iou(rows[best], rows[j]) <= threshold]
    return keep


# not importorskip: importing Ultralytics here would write its settings and set OMP_NUM_THREADS here
@pytest.mark.skipif(
    importlib.util.find_spec("ultralytics") is None, reason="the optional benchmark peer (make peer)"
)
def test_torchvision_nms_runs_in_pure_torch_and_matches_a_greedy_reference(tmp_path):
    generator = torch.Generator().manual_seed(0)
    xy = torch.rand(300, 2, generator=generator) * 100
    boxes = torch.cat([xy, xy + 5 + torch.rand(300, 2, generator=generator) * 30], dim=1)
    scores = torch.rand(300, generator=generator)
    torch.save(dict(boxes=boxes, scores=scores), tmp_path / "boxes.pt")
    script = f"""
import json, sys, torch
sys.path.insert(0, {str(REPO / "bench")!r})
from yolo_peer import patch_torchvision_nms
patched = patch_torchvision_nms()
import torchvision
data = torch.load({str(tmp_path / "boxes.pt")!r})
keep = {{t: torchvision.ops.nms(data["boxes"], data["scores"], t).tolist() for t in (0.3, 0.5, 0.7)}}
print(json.dumps(dict(patched=patched, keep=keep)))
"""
    env = dict(os.environ, YOLO_CONFIG_DIR=str(tmp_path), YOLO_OFFLINE="1")
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    # patched where torchvision's compiled ops do not load (the PyPI CUDA wheel on this CPU torch)
    for threshold, keep in result["keep"].items():
        assert keep == greedy_nms(boxes, scores, float(threshold))


def test_cfg_options_parse_as_tools_train_parses_them():
    options = load_peer().parse_cfg_options(["model.num_slots=4", "model.token_loss.iou_aware_power=0.5"])
    assert options == {"model.num_slots": 4, "model.token_loss.iou_aware_power": 0.5}


def test_the_synthetic_recipe_trains_what_the_peer_scores():
    cfg = load_peer().visionllm_config(dict(dataset="synthetic"), "effnet", 128)
    assert list(cfg.model.tasks) == ["detect"] and cfg.model.eval_task == "detect"
    assert tuple(cfg.model.train_modes) == ("parallel",)


def test_deformable_detr_takes_the_recipes_backbone_data_and_query_count():
    peer = load_peer()
    spec = dict(dataset="synthetic")
    tiny = peer.deformable_detr_config(peer.visionllm_config(spec, "tiny", 128), num_classes=6)
    baseline = Config.fromfile(peer.DETR_CONFIG)
    assert tiny.model.to_dict() == baseline.model.to_dict()  # the tiny recipe: the baseline config itself
    assert tiny.optim_wrapper.to_dict() == baseline.optim_wrapper.to_dict()

    effnet = peer.deformable_detr_config(peer.visionllm_config(spec, "effnet", 128), num_classes=3)
    model = effnet.model
    assert model.backbone.model_name == "tf_efficientnet_lite0" and model.backbone.checkpoint
    assert model.neck.in_channels == [40, 112, 320]  # read from the built backbone
    assert model.bbox_head.num_classes == 3
    assert model.data_preprocessor.mean == [127.5] * 3  # the ImageNet weights' normalisation
    assert effnet.optim_wrapper.paramwise_cfg.custom_keys["backbone"] == dict(lr_mult=0.1)
    assert effnet.train_dataloader.to_dict() == baseline.train_dataloader.to_dict()


@pytest.mark.slow
@pytest.mark.parametrize("method", ["visionllm", "deformable_detr"])
def test_each_side_trains_for_its_budget_and_writes_box_results(tmp_path, method):
    from argparse import Namespace

    peer = load_peer()
    spec = peer.prepare_dataset("synthetic", None, tmp_path)
    args = Namespace(
        worker=method,
        threads=2,
        workers=0,
        budget_minutes=0.05,
        visionllm_model="tiny",
        image_size=128,
        small_layers=8,
        cfg_options=["model.num_slots=4"],  # VisionLLM's config only
    )
    result = peer.run_with_runner(spec, args, tmp_path / method)
    assert ("num_slots=4" in result["label"]) == (method == "visionllm")
    assert result["iterations"] >= 1 and result["images"] == result["iterations"] * result["batch_size"]
    assert (tmp_path / method / "final.pth").is_file()  # for bench/slot_ablation.py
    val_images = {image["id"] for image in json.loads(open(spec["val"]).read())["images"]}
    decoders = ("parallel", "tokens") if method == "visionllm" else ("detr",)
    assert set(result["results"]) == set(decoders)
    for decoder in decoders:
        detections = json.loads(open(result["results"][decoder]).read())
        assert detections and {d["image_id"] for d in detections} <= val_images
        # asked to detect, as YOLO is scored: boxes, not the segmentation task's polygons
        assert all(len(d["bbox"]) == 4 and "segmentation" not in d for d in detections)
    scores = peer.score(spec["val"], result["results"][decoders[0]])
    assert 0.0 <= scores["AP"] <= 1.0
