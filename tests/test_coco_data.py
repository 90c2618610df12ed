"""VisionLLM's COCO data layer: validation, robustness to bad samples, and a real mmdet pipeline."""

import copy
import io
import json
import logging
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from mmcv.transforms import LoadImageFromFile
from mmdet.datasets.transforms import LoadAnnotations
from mmdet.evaluation import CocoMetric
from mmdet.structures import DetDataSample
from mmengine.logging import MMLogger
from mmengine.registry import DefaultScope
from mmengine.structures import InstanceData
from PIL import Image

from visionllm.data.coco import NO_POLYGON, VisionLLMCocoDataset
from visionllm.data.loading import LoadImageRGB
from visionllm.evaluation import VisionLLMCocoMetric
from visionllm.registry import DATASETS
from visionllm.tasks.segmentation import largest_part

COCO128_ANN = "annotations/instances_train2017.json"


@pytest.fixture(autouse=True)
def visionllm_scope():
    """Pipelines name VisionLLM and mmdet transforms, as configs do under ``default_scope='visionllm'``."""
    with DefaultScope.overwrite_default_scope("visionllm"):
        yield


@pytest.fixture
def logged_warnings():
    """Messages of the warnings that mmengine's current logger (``print_log(logger='current')``) emits."""
    messages: list[str] = []
    handler = logging.Handler(level=logging.WARNING)
    handler.emit = lambda record: messages.append(record.getMessage())
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    yield messages
    logger.removeHandler(handler)


def write_json(path: Path, content) -> Path:
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def tiny_coco(**changes) -> dict:
    """Two images, two categories, three annotations (one with attributes, one crowd RLE)."""
    coco = {
        "images": [
            {"id": 1, "file_name": "a.png", "height": 20, "width": 30},
            {"id": 2, "file_name": "b.png", "height": 20, "width": 30},
        ],
        "categories": [{"id": 3, "name": "circle"}, {"id": 5, "name": "square"}],
        "annotations": [
            {
                "id": 10,
                "image_id": 1,
                "category_id": 3,
                "bbox": [1, 2, 10, 8],
                "area": 80,
                "iscrowd": 0,
                "segmentation": [[1, 2, 11, 2, 11, 10, 1, 10]],
                "attributes": {"color": "red", "size": "small"},
            },
            {
                "id": 11,
                "image_id": 1,
                "category_id": 5,
                "bbox": [12, 4, 6, 6],
                "area": 36,
                "iscrowd": 0,
                "segmentation": [[12, 4, 18, 4, 18, 10, 12, 10]],
            },
            {
                "id": 12,
                "image_id": 1,
                "category_id": 3,
                "bbox": [0, 0, 4, 4],
                "area": 16,
                "iscrowd": 1,
                "segmentation": {"size": [20, 30], "counts": [0, 4, 16, 4, 16, 4, 16, 4, 536]},
            },
        ],
    }
    coco.update(changes)
    return coco


def build(ann_file: Path, **kwargs) -> VisionLLMCocoDataset:
    kwargs.setdefault("pipeline", [])
    return VisionLLMCocoDataset(ann_file=str(ann_file), data_prefix=dict(img=str(ann_file.parent)), **kwargs)


# ---------------------------------------------------------------- annotation file validation


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", r"bad\.json is not a JSON file"),
        ([1, 2], r"bad\.json: expected a COCO object .* got list"),
        ({"images": [], "annotations": []}, r"bad\.json: missing the 'categories' list"),
        (
            tiny_coco(images=[{"id": 1, "file_name": "a.png"}]),
            r"bad\.json: images\[0\] lacks \['height', 'width'\]",
        ),
    ],
    ids=["not-json", "not-a-dict", "no-categories", "image-without-size"],
)
def test_malformed_files_fail_fast_naming_the_file(tmp_path, content, message):
    with pytest.raises(ValueError, match=message):
        build(write_json(tmp_path / "bad.json", content))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        (
            "category_id",
            99,
            r"bad\.json: annotation id 11 has category_id 99, which is not among the file's categories",
        ),
        (
            "image_id",
            42,
            r"bad\.json: annotation id 11 has image_id 42, which is not among the file's images",
        ),
        ("id", 10, r"bad\.json: annotation id 10 is used twice"),
    ],
)
def test_dangling_references_name_the_annotation(tmp_path, field, value, message):
    coco = tiny_coco()
    coco["annotations"][1][field] = value
    with pytest.raises(ValueError, match=message):
        build(write_json(tmp_path / "bad.json", coco))


@pytest.mark.parametrize(
    "changes",
    [
        *(dict(bbox=bbox) for bbox in ([5, 5, 0, 4], [5, 5, 3, -2], [5, 5, float("nan"), 4], [5, 5, 4])),
        # what mmdet skips silently: reported too, so the metric can leave the same annotations out
        dict(bbox=[40, 5, 3, 3]),  # outside the 30x20 image
        dict(bbox=[5, 5, 0.5, 4]),  # under one pixel wide
        dict(area=0),
        dict(ignore=1),
    ],
)
def test_unusable_annotations_are_dropped_with_a_warning(tmp_path, logged_warnings, changes):
    coco = tiny_coco()
    coco["annotations"][1].update(changes)
    dataset = build(write_json(tmp_path / "boxes.json", coco))
    kept_boxes = [inst["bbox"] for inst in dataset.get_data_info(0)["instances"]]
    assert kept_boxes == [[1, 2, 11, 10], [0, 0, 4, 4]]  # annotation 10 and the crowd one stay
    assert any("boxes.json" in m and "annotation id 11" in m and "a.png" in m for m in logged_warnings), (
        logged_warnings
    )
    assert list(dataset.dropped_annotations) == [11]


def test_instances_keep_extra_fields_and_crowd_is_ignored(tmp_path):
    dataset = build(write_json(tmp_path / "ok.json", tiny_coco()))
    circle, square, crowd = dataset.get_data_info(0)["instances"]
    assert circle["attributes"] == {"color": "red", "size": "small"}
    assert (circle["bbox_label"], square["bbox_label"]) == (0, 1)
    assert "attributes" not in square
    assert crowd["ignore_flag"] == 1 and crowd["mask"]["size"] == [20, 30] and circle["ignore_flag"] == 0


def test_classes_come_from_the_file_unless_configured(tmp_path):
    ann_file = write_json(tmp_path / "ok.json", tiny_coco())
    assert build(ann_file).metainfo["classes"] == ("circle", "square")

    only_squares = build(ann_file, metainfo=dict(classes=("square",)))
    assert only_squares.metainfo["classes"] == ("square",)
    assert [inst["bbox_label"] for inst in only_squares.get_data_info(0)["instances"]] == [0]

    with pytest.raises(ValueError, match=r"ok\.json: configured classes \['triangle'\] are not among"):
        build(ann_file, metainfo=dict(classes=("square", "triangle")))


def test_images_without_annotations_follow_filter_cfg(tmp_path):
    ann_file = write_json(tmp_path / "ok.json", tiny_coco())  # image 2 has no annotations
    kept = build(ann_file, filter_cfg=dict(filter_empty_gt=False))
    assert [kept.get_data_info(i)["img_id"] for i in range(len(kept))] == [1, 2]
    assert kept.get_data_info(1)["instances"] == []
    filtered = build(ann_file, filter_cfg=dict(filter_empty_gt=True))
    assert [filtered.get_data_info(i)["img_id"] for i in range(len(filtered))] == [1]


# ---------------------------------------------------------------- LoadImageRGB


def save(image: Image.Image, path: Path, **kwargs) -> dict:
    image.save(path, **kwargs)
    return {"img_path": str(path)}


def mmdet_load(results: dict) -> np.ndarray:
    """mmdet's default image loading (OpenCV): the reference for what downstream transforms expect."""
    return LoadImageFromFile()(dict(results))["img"]


@pytest.fixture
def rgb_pixels() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)


@pytest.mark.parametrize("mode", ["RGB", "L", "LA", "RGBA", "P", "I;16"])
def test_load_image_matches_mmdet_for_lossless_modes(tmp_path, rgb_pixels, mode):
    if mode == "I;16":
        image = Image.fromarray(rgb_pixels[..., 0].astype(np.uint16) * 257 + 3)  # 16-bit grey
        assert image.mode == "I;16"
    elif mode == "LA":
        image = Image.fromarray(rgb_pixels).convert("LA")
    else:
        image = Image.fromarray(rgb_pixels).convert(mode)
    results = save(image, tmp_path / "img.png")
    loaded = LoadImageRGB()(dict(results))
    assert loaded["img"].dtype == np.uint8 and loaded["img"].shape == (5, 7, 3)
    assert loaded["img_shape"] == loaded["ori_shape"] == (5, 7)
    np.testing.assert_array_equal(loaded["img"], mmdet_load(results))  # BGR, exactly as mmdet loads it
    if mode == "RGB":
        np.testing.assert_array_equal(loaded["img"], rgb_pixels[..., ::-1])
        np.testing.assert_array_equal(LoadImageRGB(channel_order="rgb")(dict(results))["img"], rgb_pixels)
    if mode == "I;16":
        np.testing.assert_array_equal(loaded["img"][..., 1], rgb_pixels[..., 0])  # top 8 bits, not clipped


def test_load_cmyk_jpeg(tmp_path):
    red = Image.new("RGB", (7, 5), (255, 0, 0)).convert("CMYK")
    results = save(red, tmp_path / "cmyk.jpg", quality=95)
    assert Image.open(results["img_path"]).mode == "CMYK"
    loaded = LoadImageRGB(to_float32=True)(dict(results))["img"]
    assert loaded.dtype == np.float32 and loaded.shape == (5, 7, 3)
    np.testing.assert_allclose(loaded, np.broadcast_to([0, 0, 255], (5, 7, 3)), atol=3)  # red, in BGR
    np.testing.assert_allclose(loaded, mmdet_load(results), atol=3)


def test_load_applies_exif_orientation_like_mmdet(tmp_path, rgb_pixels):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    results = save(Image.fromarray(rgb_pixels), tmp_path / "rotated.jpg", exif=exif, quality=100)
    loaded = LoadImageRGB()(dict(results))["img"]
    assert loaded.shape == (7, 5, 3)
    np.testing.assert_allclose(loaded, mmdet_load(results), atol=3)


def truncated_jpeg(path: Path) -> dict:
    buffer = io.BytesIO()
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(buffer, "JPEG")
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    return {"img_path": str(path)}


@pytest.mark.parametrize("case", ["missing", "corrupt", "truncated"])
def test_unreadable_images_give_none_and_a_warning(tmp_path, logged_warnings, case):
    path = tmp_path / f"{case}.jpg"
    if case == "corrupt":
        path.write_bytes(b"definitely not an image")
    if case == "truncated":
        truncated_jpeg(path)
    assert LoadImageRGB()({"img_path": str(path)}) is None
    assert any(f"{case}.jpg" in message for message in logged_warnings), logged_warnings


# ---------------------------------------------------------------- coco128 through a standard mmdet pipeline

PIPELINE = [
    dict(type="LoadImageRGB"),
    dict(type="LoadAnnotations", with_bbox=True, with_mask=True, poly2mask=False),
    dict(type="Resize", scale=(256, 256), keep_ratio=True),
    dict(type="RandomFlip", prob=0.5),
    dict(type="Pad", size=(256, 256)),
    dict(type="PackDetInputs"),
]


def test_coco128_through_mmdet_pipeline(coco128):
    raw = json.loads((coco128 / COCO128_ANN).read_text())
    dataset = DATASETS.build(
        dict(
            type="VisionLLMCocoDataset",
            data_root=str(coco128),
            ann_file=COCO128_ANN,
            data_prefix=dict(img="train2017/"),
            filter_cfg=dict(filter_empty_gt=False),
            pipeline=PIPELINE,
        )
    )
    assert len(dataset) == len(raw["images"]) == 128
    assert dataset.metainfo["classes"] == tuple(c["name"] for c in raw["categories"])

    crowd_image_ids = sorted({a["image_id"] for a in raw["annotations"] if a["iscrowd"]})
    indices = {dataset.get_data_info(i)["img_id"]: i for i in range(len(dataset))}
    crowd_boxes_seen = []
    for img_id in [crowd_image_ids[0], raw["images"][0]["id"]]:
        anns = [a for a in raw["annotations"] if a["image_id"] == img_id]
        sample = dataset[indices[img_id]]
        inputs, data_sample = sample["inputs"], sample["data_samples"]
        assert isinstance(data_sample, DetDataSample)
        assert inputs.shape == (3, 256, 256) and inputs.dtype == torch.uint8
        assert data_sample.img_id == img_id and max(data_sample.img_shape) == 256

        gt, ignored = data_sample.gt_instances, data_sample.ignored_instances
        assert len(gt) == len(gt.labels) == len(gt.masks) == sum(not a["iscrowd"] for a in anns) > 0
        assert len(ignored) == sum(a["iscrowd"] for a in anns)
        label_of = {c["id"]: i for i, c in enumerate(raw["categories"])}
        assert sorted(gt.labels.tolist()) == sorted(
            label_of[a["category_id"]] for a in anns if not a["iscrowd"]
        )
        boxes = gt.bboxes.tensor
        assert (boxes[:, 2:] > boxes[:, :2]).all() and (boxes >= 0).all() and (boxes <= 256).all()
        crowd_areas = sorted(a["bbox"][2] * a["bbox"][3] for a in anns if a["iscrowd"])
        scale_x, scale_y = data_sample.scale_factor
        ignored_areas = sorted(ignored.bboxes.areas.div(scale_x * scale_y).tolist())
        assert ignored_areas == pytest.approx(crowd_areas, rel=1e-3)
        crowd_boxes_seen.append(len(ignored))
    assert crowd_boxes_seen[0] > 0, "the first image checked has crowd annotations"


def coco128_subset(coco128: Path, tmp_path: Path, num_images: int, missing: int) -> Path:
    """The first images of coco128, with image ``missing`` renamed to a file that does not exist."""
    raw = json.loads((coco128 / COCO128_ANN).read_text())
    images = copy.deepcopy(raw["images"][:num_images])
    images[missing]["file_name"] = "does_not_exist.jpg"
    ids = {image["id"] for image in images}
    subset = dict(raw, images=images, annotations=[a for a in raw["annotations"] if a["image_id"] in ids])
    return write_json(tmp_path / "subset.json", subset)


def test_training_refetches_instead_of_failing_on_a_missing_image(coco128, tmp_path, logged_warnings):
    ann_file = coco128_subset(coco128, tmp_path, num_images=4, missing=1)
    pipeline = [dict(type="LoadImageRGB"), dict(type="LoadAnnotations"), dict(type="PackDetInputs")]
    common = dict(ann_file=str(ann_file), data_prefix=dict(img=str(coco128 / "train2017")), pipeline=pipeline)
    dataset = VisionLLMCocoDataset(**common)
    for index in range(len(dataset)):
        sample = dataset[index]
        assert sample["inputs"].shape[0] == 3
        assert not sample["data_samples"].img_path.endswith("does_not_exist.jpg")
    assert any("does_not_exist.jpg" in message for message in logged_warnings)

    testing = VisionLLMCocoDataset(test_mode=True, **common)
    with pytest.raises(RuntimeError, match=r"sample 1, .*does_not_exist\.jpg"):
        testing[1]
    assert math.isfinite(float(testing[0]["inputs"].float().mean()))


# ---------------------------------------------------------------- bad input (issue #21)
# Each test breaks tiny_coco() in one way and checks the one outcome: a ValueError naming the file and the
# fault, or a warning naming the file and the annotation id with nothing else lost.


@pytest.mark.parametrize("category_name", ["<eoo>", "big <c3> box", "<bin7>"])
def test_category_named_with_a_task_token_is_refused(tmp_path, category_name):
    coco = tiny_coco()
    coco["categories"][1]["name"] = category_name
    message = (
        rf"bad\.json: category id 5 is named '{re.escape(category_name)}', which contains the task token"
    )
    with pytest.raises(ValueError, match=message):
        build(write_json(tmp_path / "bad.json", coco))


@pytest.mark.parametrize(
    ("changes", "filter_cfg", "message"),
    [
        (dict(images=[], annotations=[]), None, r"bad\.json: the file has no images"),
        (
            dict(annotations=[]),
            dict(filter_empty_gt=True),
            r"bad\.json: all 2 images were filtered out: 2 have no usable annotation of the classes "
            r"\['circle', 'square'\] and filter_cfg has filter_empty_gt=True",
        ),
        (
            dict(annotations=[dict(tiny_coco()["annotations"][0], bbox=[1, 2, float("nan"), 8])]),
            dict(filter_empty_gt=True),
            r"bad\.json: all 2 images were filtered out: .*; 1 annotations were dropped as unusable",
        ),
        (
            {},
            dict(min_size=25),
            r"bad\.json: all 2 images were filtered out: 2 are smaller than .*min_size=25",
        ),
    ],
    ids=["no-images", "no-annotations", "only-a-broken-box", "all-too-small"],
)
def test_an_empty_training_set_names_the_file_and_why(tmp_path, changes, filter_cfg, message):
    with pytest.raises(ValueError, match=message):
        build(write_json(tmp_path / "bad.json", tiny_coco(**changes)), filter_cfg=filter_cfg)


@pytest.mark.parametrize(
    ("segmentation", "kept_parts", "message"),
    [
        (
            [[1, 2, 11, 2], [1, 2, 11, 2, 11, 10]],
            [[1, 2, 11, 2, 11, 10]],
            r"polygon part 0, which has 2 points",
        ),
        ([[1, 2, 11, 2]], [list(NO_POLYGON)], r"has 2 points, fewer than 3; no polygon is left"),
        ([[1, 2, 11, 2, 11]], [list(NO_POLYGON)], r"part 0, which has an odd number \(5\) of coordinates"),
    ],
    ids=["one-of-two-parts", "only-part", "odd-coordinates"],
)
def test_a_bad_polygon_part_is_dropped_and_the_instance_kept(
    tmp_path, logged_warnings, segmentation, kept_parts, message
):
    coco = tiny_coco()
    coco["annotations"][0]["segmentation"] = segmentation
    dataset = build(write_json(tmp_path / "poly.json", coco))
    circle = dataset.get_data_info(0)["instances"][0]
    assert circle["bbox"] == [1, 2, 11, 10] and circle["mask"] == kept_parts
    assert any(
        "poly.json" in m and "annotation id 10" in m and re.search(message, m) for m in logged_warnings
    ), logged_warnings

    load = LoadAnnotations(with_bbox=True, with_mask=True, poly2mask=False)
    loaded = load(dict(dataset.get_data_info(0), ori_shape=(20, 30)))
    assert loaded["gt_ignore_flags"].tolist() == [False, False, True]  # only the crowd one is ignored
    assert loaded["gt_bboxes"].tensor[0].tolist() == [1, 2, 11, 10]
    if kept_parts == [list(NO_POLYGON)]:  # detection only: segmentation targets skip the instance
        assert largest_part(loaded["gt_masks"].masks[0]) is None


def perfect_scores(metric: CocoMetric) -> dict:
    """``metric``'s results for predictions equal to tiny_coco()'s ground truth (crowd left out)."""
    coco = tiny_coco()
    metric.dataset_meta = dict(classes=tuple(category["name"] for category in coco["categories"]))
    label_of = {category["id"]: label for label, category in enumerate(coco["categories"])}
    for image in coco["images"]:
        anns = [a for a in coco["annotations"] if a["image_id"] == image["id"] and not a["iscrowd"]]
        boxes = [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)]
        sample = DetDataSample(metainfo=dict(img_id=image["id"], ori_shape=(image["height"], image["width"])))
        sample.pred_instances = InstanceData(
            bboxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            scores=torch.ones(len(anns)),
            labels=torch.tensor([label_of[a["category_id"]] for a in anns], dtype=torch.long),
        )
        metric.process({}, [sample.to_dict()])
    return metric.evaluate(size=len(coco["images"]))


@pytest.mark.parametrize(
    "broken_bbox", [[5, 5, float("nan"), 4], [5, 5, -3, 4]], ids=["nan", "negative-width"]
)
def test_the_metric_scores_the_ground_truth_the_dataset_kept(tmp_path, logged_warnings, broken_bbox):
    broken = tiny_coco()
    broken["annotations"].append(dict(broken["annotations"][1], id=13, image_id=2, bbox=broken_bbox))
    clean_file = str(write_json(tmp_path / "clean.json", tiny_coco()))
    broken_file = str(write_json(tmp_path / "broken.json", broken))

    expected = perfect_scores(VisionLLMCocoMetric(ann_file=clean_file))
    logged_warnings.clear()
    scores = perfect_scores(VisionLLMCocoMetric(ann_file=broken_file))
    assert scores["coco/bbox_mAP"] == expected["coco/bbox_mAP"] == 1.0
    assert (scores["coco/dropped_annotations"], expected["coco/dropped_annotations"]) == (1, 0)
    assert [m for m in logged_warnings if "broken.json" in m and "id 13" in m] == [logged_warnings[0]]
    # the dataset dropped the same annotation; mmdet's CocoMetric reading the file counts it as missed
    assert set(build(Path(broken_file)).dropped_annotations) == {13}
    assert perfect_scores(CocoMetric(ann_file=broken_file))["coco/bbox_mAP"] < 1.0
