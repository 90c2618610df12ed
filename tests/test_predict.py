"""Predictor, drawing and ``tools/predict.py`` on a tiny random-weight model: structure and invariants
(same answer whatever the image's form, original-image pixels, files written), not accuracy."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mmengine.config import Config
from PIL import Image, ImageDraw
from pycocotools import mask as mask_utils

from tests.conftest import TINY_CLASSES as CLASSES
from visionllm.apis import Prediction, Predictor, draw_predictions
from visionllm.cli import main
from visionllm.evaluation import polygons_to_rle, prediction_to_coco

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "visionllm_tiny_synthetic.py"
WIDTH, HEIGHT = 200, 120  # not square, smaller than the 256 model input


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint: Path) -> Path:
    return tiny_checkpoint


@pytest.fixture(scope="module")
def predictor(checkpoint: Path) -> Predictor:
    return Predictor.from_checkpoint(CONFIG, checkpoint)


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with one non-square PNG of a few shapes."""
    folder = tmp_path_factory.mktemp("images")
    image = Image.new("RGB", (WIDTH, HEIGHT), (200, 190, 170))
    draw = ImageDraw.Draw(image)
    draw.ellipse((20, 20, 80, 80), fill=(200, 30, 30))
    draw.rectangle((110, 40, 170, 100), fill=(30, 30, 200))
    draw.polygon([(90, 110), (120, 60), (150, 110)], fill=(30, 160, 30))
    image.save(folder / "shapes.png")
    return folder


@pytest.fixture(scope="module")
def segmented(predictor: Predictor, image_dir: Path) -> Prediction:
    """The model's default request (its eval task, segmentation, over all classes) on the PNG."""
    [prediction] = predictor.predict(image_dir / "shapes.png")
    return prediction


def _summary(prediction: Prediction) -> tuple[list, np.ndarray]:
    names = [(obj.class_name, obj.label) for obj in prediction.objects]
    numbers = np.array([[obj.score, *obj.box] for obj in prediction.objects]).reshape(-1, 5)
    return names, numbers


def test_class_names_come_from_the_checkpoint(predictor: Predictor) -> None:
    assert predictor.model.class_names == CLASSES


def test_every_form_of_an_image_gives_the_same_prediction(
    predictor: Predictor, image_dir: Path, segmented: Prediction
) -> None:
    path = image_dir / "shapes.png"
    pixels = np.asarray(Image.open(path).convert("RGB"))
    names, numbers = _summary(segmented)
    assert names, "the random model should find some objects in this image"
    runs = [
        predictor.predict(str(path)),
        predictor.predict(Image.open(path)),
        predictor.predict(pixels),
        predictor.predict([path, pixels], batch_size=2),
        predictor.predict(image_dir),
    ]
    for predictions in runs:
        for prediction in predictions:
            other_names, other_numbers = _summary(prediction)
            assert other_names == names
            np.testing.assert_allclose(other_numbers, numbers, atol=1e-3)
    assert runs[0][0].file_name == str(path) and runs[2][0].file_name is None


def test_objects_are_in_original_image_pixels(segmented: Prediction) -> None:
    assert (segmented.width, segmented.height) == (WIDTH, HEIGHT)
    assert segmented.request.task == "segment" and segmented.request.classes == CLASSES
    assert segmented.decode_mode == "parallel"
    assert all(isinstance(n, int) for n in segmented.dropped_tokens.values())
    for obj in segmented.objects:
        x1, y1, x2, y2 = obj.box
        assert 0 <= x1 < x2 <= WIDTH and 0 <= y1 < y2 <= HEIGHT
        assert 0 <= obj.score <= 1 and obj.label == CLASSES.index(obj.class_name)
        # the box is the slot's seed box (``boxes_from_seed``): the polygon may reach past it
        assert obj.mask["size"] == [HEIGHT, WIDTH] and mask_utils.area(obj.mask) > 0
        # the drawn polygon is the predicted one (K points), and the mask was filled from it
        [polygon] = obj.polygons
        assert polygon == obj.polygon
        points = np.asarray(polygon).reshape(-1, 2)
        assert (points >= 0).all() and (points <= [WIDTH, HEIGHT]).all()
        assert len(points) == Config.fromfile(CONFIG).model.tasks.segment.num_points
        assert polygons_to_rle([polygon], HEIGHT, WIDTH) == obj.mask


def test_without_seeds_a_polygons_box_is_its_extent(predictor: Predictor, image_dir: Path) -> None:
    """Autoregressive decoding has no seeds: mask and box come from the same polygon, so the mask lies
    within the box (to a pixel)."""
    [prediction] = predictor.predict(image_dir / "shapes.png", decode="autoregressive")
    assert prediction.decode_mode == "autoregressive"
    for obj in prediction.objects:
        x1, y1, x2, y2 = obj.box
        mx, my, mw, mh = mask_utils.toBbox(obj.mask)
        assert x1 - 1 <= mx and y1 - 1 <= my and mx + mw <= x2 + 1 and my + mh <= y2 + 1


def test_coco_entries(segmented: Prediction) -> None:
    entries = prediction_to_coco(segmented, 7)
    assert len(entries) == len(segmented.objects)
    for entry, obj in zip(entries, segmented.objects):
        x, y, w, h = entry["bbox"]
        np.testing.assert_allclose([x, y, x + w, y + h], obj.box)
        assert entry["image_id"] == 7 and entry["category_name"] == obj.class_name
        assert entry["segmentation"] == obj.mask and "category_id" not in entry
        assert entry["polygon"] == obj.polygon
    with_ids = prediction_to_coco(segmented, 7, {"circle": 11})
    assert [e["category_id"] for e in with_ids] == [11] * sum(
        o.class_name == "circle" for o in segmented.objects
    )
    json.dumps(entries)  # JSON-ready


def test_score_threshold(predictor: Predictor, image_dir: Path, segmented: Prediction) -> None:
    threshold = float(np.median([obj.score for obj in segmented.objects]))
    [kept] = predictor.predict(image_dir, score_thr=threshold)
    assert [obj for obj in segmented.objects if obj.score >= threshold] == kept.objects


def test_detection_instruction_autoregressive_open_vocabulary(predictor: Predictor, image_dir: Path) -> None:
    [prediction] = predictor.predict(image_dir, "find all circles and cups", decode="autoregressive")
    assert prediction.request.task == "detect" and prediction.request.classes == ["circle", "cup"]
    assert prediction.decode_mode == "autoregressive"
    for obj in prediction.objects:
        assert obj.mask is None and obj.polygons == []
        assert obj.label == {"circle": 0, "cup": -1}[obj.class_name]


def test_unusable_requests_and_images_raise_clear_errors(predictor: Predictor, image_dir: Path) -> None:
    with pytest.raises(ValueError, match="cannot tell which task"):
        predictor.predict(image_dir, "tell me a joke")
    with pytest.raises(ValueError, match="trained for"):
        predictor.predict(image_dir, "where is the red circle?")  # grounding: not among the tiny model's
    with pytest.raises(ValueError, match="uint8 RGB"):
        predictor.predict(np.zeros((HEIGHT, WIDTH), dtype=np.uint8))


def test_drawing_scales_small_images_up(image_dir: Path, segmented: Prediction, tmp_path: Path) -> None:
    drawn = draw_predictions(image_dir / "shapes.png", segmented, tmp_path / "drawn.png")
    assert drawn.size == Image.open(tmp_path / "drawn.png").size == (512, round(HEIGHT * 512 / WIDTH))
    with pytest.raises(ValueError, match="200x120"):
        draw_predictions(np.zeros((10, 10, 3), dtype=np.uint8), segmented)


def test_predict_tool_writes_json_and_drawings(checkpoint: Path, image_dir: Path, tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    command = [sys.executable, str(REPO / "tools/predict.py"), str(image_dir), "--config", str(CONFIG)]
    command += ["--checkpoint", str(checkpoint), "--decode", "parallel", "--out-dir", str(out_dir)]
    command += ["--score-thr", "0"]
    run = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "shapes.png: segment," in run.stdout
    entries = json.loads((out_dir / "predictions.json").read_text())
    assert entries, "the random model should find some objects"
    for entry in entries:
        assert {"file_name", "image_id", "category_name", "bbox", "score", "segmentation"} <= set(entry)
        assert entry["file_name"] == str(image_dir / "shapes.png") and entry["image_id"] == 0
    assert Image.open(out_dir / "shapes.png").size == (512, round(HEIGHT * 512 / WIDTH))


def test_cli_reports_an_unsupported_instruction(
    checkpoint: Path, image_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    arguments = ["predict", str(image_dir), "--config", str(CONFIG), "--checkpoint", str(checkpoint)]
    assert main([*arguments, "--instruction", "tell me a joke"]) == 2
    assert capsys.readouterr().err.startswith("visionllm: error: cannot tell which task")


def test_cli_numbers_images_by_their_place_in_the_input(
    checkpoint: Path, image_dir: Path, tmp_path: Path
) -> None:
    """An image given twice is two inputs: image ids 0 and 1, one drawing each (``-<index>`` stems)."""
    image = str(image_dir / "shapes.png")
    arguments = ["predict", image, image, "--config", str(CONFIG), "--checkpoint", str(checkpoint)]
    assert main([*arguments, "--out-dir", str(tmp_path), "--score-thr", "0", "--batch-size", "2"]) == 0
    entries = json.loads((tmp_path / "predictions.json").read_text())
    assert {entry["image_id"] for entry in entries} == {0, 1}
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["shapes-0.png", "shapes-1.png"]
