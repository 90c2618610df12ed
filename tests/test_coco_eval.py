"""COCO evaluation: pycocotools' reference numbers, the CLI, input checking, and mmdet's CocoMetric."""

import json
import re
import runpy
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from visionllm.evaluation import STAT_NAMES, evaluate_coco, format_stats_table, polygons_to_rle

REPO = Path(__file__).resolve().parents[1]
EXPECTED_KEYS = ["AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large"] + [
    "AR1", "AR10", "AR100", "AR_small", "AR_medium", "AR_large"
]  # fmt: skip


@pytest.fixture(scope="module")
def fake100(shared_data: Path) -> dict:
    root = shared_data / "cocoapi_fake100"
    if not (root / "expected_stats.json").is_file():
        pytest.skip(f"{root} is absent")
    expected = json.loads((root / "expected_stats.json").read_text())["stats"]
    return {
        "gt": root / "instances_val2014_100.json",
        "bbox": root / "instances_val2014_fakebbox100_results.json",
        "segm": root / "instances_val2014_fakesegm100_results.json",
        "expected": {
            iou_type: [values[key] for key in EXPECTED_KEYS] for iou_type, values in expected.items()
        },
    }


def eval_cli(*argv: str) -> int:
    """``tools/eval_coco.py`` in this process: its exit code."""
    script = runpy.run_path(str(REPO / "tools" / "eval_coco.py"), run_name="eval_coco")
    return script["run_command"](script["main"], "tools/eval_coco.py", list(argv))


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_reproduces_pycocotools_reference_numbers(fake100, iou_type):
    stats = evaluate_coco(fake100["gt"], fake100[iou_type], iou_types=(iou_type,))
    assert list(stats) == [iou_type] and len(stats[iou_type]) == len(STAT_NAMES) == 12
    np.testing.assert_allclose(stats[iou_type], fake100["expected"][iou_type], rtol=0, atol=1e-9)


def test_results_given_as_a_list_with_polygons(fake100):
    """Results in memory are accepted; polygon masks are rasterised like the ground truth's polygons."""
    gt = json.loads(fake100["gt"].read_text())
    polygon_anns = [a for a in gt["annotations"] if not a["iscrowd"]][:30]
    results = [
        {
            "image_id": a["image_id"],
            "category_id": a["category_id"],
            "score": 0.9,
            "segmentation": a["segmentation"],
        }
        for a in polygon_anns
    ]
    stats = evaluate_coco(fake100["gt"], results, iou_types=("segm",))["segm"]
    assert 0 < stats[0] < 1 and stats[1] > 0  # perfect masks for 30 of the 839 instances
    assert "bbox" not in results[0] and isinstance(
        results[0]["segmentation"], list
    )  # caller's list untouched


def test_cli_prints_the_table(fake100, capsys):
    eval_cli(str(fake100["gt"]), str(fake100["bbox"]), "--iou-type", "bbox")
    out = capsys.readouterr().out
    header, rule, row = out.strip().splitlines()
    assert header.split("|")[2:-1] == [f" {name} " for name in STAT_NAMES]
    assert row.split("|")[1:-1] == [" bbox "] + [f" {value:.3f} " for value in fake100["expected"]["bbox"]]


def test_format_stats_table():
    table = format_stats_table({"bbox": [0.5] * 12, "segm": [-1.0] + [0.25] * 11})
    lines = table.splitlines()
    assert lines[0] == "| IoU type | " + " | ".join(STAT_NAMES) + " |"
    assert lines[1].count("---") == 13
    assert lines[3].startswith("| segm | -1.000 | 0.250 |")


@pytest.mark.parametrize(
    ("index", "change", "message"),
    [
        (3, {"score": None}, r"result \[3\]: score None is not a finite number"),
        (5, {"bbox": [1, 2, 3]}, r"result \[5\]: bbox \[1, 2, 3\] is not four finite numbers"),
        (7, {"image_id": 123456789}, r"result \[7\]: image_id 123456789 is not in the ground truth"),
        (8, {"category_id": 999}, r"result \[8\]: category_id 999 is not in the ground truth"),
        (9, {"category_id": None, "bbox": None}, r"result \[9\]: category_id None"),
    ],
)
def test_bad_results_file_names_the_entry(fake100, tmp_path, capsys, index, change, message):
    results = json.loads(fake100["bbox"].read_text())
    results[index].update(change)
    bad = tmp_path / "bad_results.json"
    bad.write_text(json.dumps(results))
    with pytest.raises(ValueError, match=r"bad_results\.json: " + message):
        evaluate_coco(fake100["gt"], bad, iou_types=("bbox",))
    assert eval_cli(str(fake100["gt"]), str(bad), "--iou-type", "bbox") == 2
    assert re.match(r"tools/eval_coco.py: error: .*bad_results\.json: " + message, capsys.readouterr().err)


def test_segm_needs_segmentation_and_boxes_come_for_all_or_none(fake100):
    results = json.loads(fake100["bbox"].read_text())
    with pytest.raises(ValueError, match=r"result \[0\] has no 'segmentation'"):
        evaluate_coco(fake100["gt"], results, iou_types=("bbox", "segm"))
    segm_results = json.loads(fake100["segm"].read_text())
    segm_results[0]["bbox"] = [1, 2, 3, 4]
    with pytest.raises(ValueError, match=r"result \[1\]: either every result has a 'bbox' or none"):
        evaluate_coco(fake100["gt"], segm_results, iou_types=("bbox",))


def test_polygons_to_rle_matches_the_rasterised_polygons():
    square = [2, 1, 6, 1, 6, 4, 2, 4]  # x 2..6, y 1..4
    triangle = [8, 5, 11, 5, 8, 9]
    line = [0, 0, 1, 1]  # two points enclose nothing
    rle = polygons_to_rle([square, triangle, line], height=10, width=12)
    assert rle["size"] == [10, 12] and isinstance(rle["counts"], str)
    expected = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([square, triangle], 10, 12)))
    np.testing.assert_array_equal(mask_utils.decode(rle), expected)
    assert expected[1:4, 2:6].all() and expected.sum() == mask_utils.area(rle) > 12
    assert mask_utils.area(polygons_to_rle([], 10, 12)) == 0
    with pytest.raises(ValueError, match="polygon 0 has an odd number of coordinates"):
        polygons_to_rle([[1, 2, 3, 4, 5, 6, 7]], 10, 12)


def test_mmdet_coco_metric_accepts_rle_lists_and_scores_ground_truth_as_perfect(coco128, tmp_path):
    """mmdet's CocoMetric takes ``pred_instances.masks`` as a list of RLE dicts, so no subclass is needed:
    predictions equal to the ground truth of a few coco128 images score AP 1.0 for boxes and masks."""
    from mmdet.evaluation import CocoMetric
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData

    raw = json.loads((coco128 / "annotations" / "instances_train2017.json").read_text())
    images = raw["images"][:4]
    ids = {image["id"] for image in images}
    subset = dict(raw, images=images, annotations=[a for a in raw["annotations"] if a["image_id"] in ids])
    (tmp_path / "gt.json").write_text(json.dumps(subset))
    label_of = {category["id"]: label for label, category in enumerate(raw["categories"])}

    samples = []
    for image in images:
        anns = [a for a in subset["annotations"] if a["image_id"] == image["id"] and not a["iscrowd"]]
        x, y, w, h = np.array([a["bbox"] for a in anns], dtype=np.float32).T
        sample = DetDataSample(metainfo=dict(img_id=image["id"], ori_shape=(image["height"], image["width"])))
        sample.pred_instances = InstanceData(
            bboxes=torch.from_numpy(np.stack([x, y, x + w, y + h], axis=1)),
            scores=torch.linspace(1.0, 0.5, len(anns)),
            labels=torch.tensor([label_of[a["category_id"]] for a in anns]),
            masks=[polygons_to_rle(a["segmentation"], image["height"], image["width"]) for a in anns],
        )
        samples.append(sample.to_dict())

    metric = CocoMetric(ann_file=str(tmp_path / "gt.json"), metric=["bbox", "segm"])
    metric.dataset_meta = dict(classes=tuple(category["name"] for category in raw["categories"]))
    metric.process({}, samples)
    scores = metric.evaluate(size=len(samples))
    assert scores["coco/bbox_mAP"] == pytest.approx(1.0) and scores["coco/segm_mAP"] == pytest.approx(1.0)


def test_no_detections_score_zero(fake100):
    stats = evaluate_coco(fake100["gt"], [], iou_types=("bbox", "segm"))
    assert stats["bbox"][0] == 0.0 and stats["segm"][8] == 0.0  # AP, AR100
