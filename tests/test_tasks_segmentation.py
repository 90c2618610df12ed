"""Segmentation: canonical K-point polygons, round trips through the grammar, COCO RLE output."""

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from transformers import AutoTokenizer

from visionllm.evaluation import prediction_to_coco
from visionllm.pretrained import minilm_dir
from visionllm.structures import Prediction
from visionllm.tasks import ImageAnnotations, SegmentationTask
from visionllm.tasks.segmentation import resample_polygon, signed_area
from visionllm.vocab import TaskVocab

CLASSES = ["circle", "square", "triangle", "star"]


@pytest.fixture(scope="module")
def vocab():
    return TaskVocab(AutoTokenizer.from_pretrained(minilm_dir()))


@pytest.fixture(scope="module")
def segment(vocab):
    return SegmentationTask(vocab)


def star_polygon(rng, centre, radius, vertices):
    """A random star-shaped polygon (flat x,y) around ``centre``, counter-clockwise on screen."""
    angles = np.sort(rng.uniform(0, 2 * np.pi, vertices))[::-1]
    radii = radius * rng.uniform(0.75, 1.0, vertices)
    return np.stack([centre[0] + radii * np.cos(angles), centre[1] + radii * np.sin(angles)], 1).reshape(-1)


def mask_iou(polygon_a, polygon_b, height, width):
    rle_a, rle_b = (
        mask_utils.merge(mask_utils.frPyObjects([list(p)], height, width)) for p in (polygon_a, polygon_b)
    )
    return float(mask_utils.iou([rle_a], [rle_b], [0])[0, 0])


def test_resampling_is_canonical_evenly_spaced_and_clockwise():
    square = np.array([[100, 0], [100, 100], [0, 100], [0, 0]], dtype=float)  # starts elsewhere, clockwise
    resampled = resample_polygon(square, 16)
    assert resampled.shape == (16, 2) and signed_area(resampled) > 0
    assert np.allclose(resampled[0], [0, 0])  # the vertex nearest the top-left of the bounds
    steps = np.linalg.norm(np.diff(np.vstack([resampled, resampled[:1]]), axis=0), axis=1)
    assert np.allclose(steps, 25.0)  # perimeter 400 / 16 points, corners included
    for variant in (square[::-1], np.roll(square, 1, axis=0), np.vstack([square, square[:1]])):
        assert np.allclose(resample_polygon(variant, 16), resampled)  # orientation, start, repeated vertex
    assert resample_polygon(np.array([[0, 0], [10, 10], [20, 20]], dtype=float), 16) is None  # no area


def test_random_polygons_round_trip_within_half_a_bin_and_keep_their_shape(segment, vocab):
    rng = np.random.default_rng(0)
    canvas, ious = 800, []
    for _ in range(30):
        count = int(rng.integers(1, 5))
        centres = rng.uniform(100, canvas - 100, size=(count, 2))
        polygons = [star_polygon(rng, c, rng.uniform(40, 100), int(rng.integers(5, 12))) for c in centres]
        boxes = [[*p.reshape(-1, 2).min(0), *p.reshape(-1, 2).max(0)] for p in polygons]
        labels = rng.integers(0, len(CLASSES), size=count)
        annotations = ImageAnnotations(boxes, labels, canvas, [[p] for p in polygons])
        request = segment.request_for_eval(CLASSES)

        targets = segment.encode_objects(request, annotations, CLASSES)
        result = segment.parse(segment.target_sequence(targets), request, canvas)

        assert not result.dropped and len(result.objects) == count
        for obj, bins, box in zip(result.objects, targets.bins, targets.boxes):
            points = np.asarray(obj.polygon).reshape(-1, 2)
            assert np.allclose(points, vocab.dequantize(bins.numpy().reshape(-1, 2), canvas))
            assert np.abs(np.asarray(obj.box) - box.numpy()).max() <= vocab.bin_size(canvas) / 2 + 1e-6
        resampled = [resample_polygon(p.reshape(-1, 2), segment.num_points) for p in polygons]
        order = sorted(range(count), key=lambda i: (resampled[i][:, 1].min(), resampled[i][:, 0].min()))
        for i, obj in zip(order, result.objects):  # canonical order: raster order of the box corner
            parsed = np.asarray(obj.polygon).reshape(-1, 2)
            assert obj.class_index == request.classes.index(CLASSES[labels[i]])
            assert np.abs(parsed - resampled[i]).max() <= vocab.bin_size(canvas) / 2 + 1e-6
            ious.append(mask_iou(parsed.reshape(-1), polygons[i], canvas, canvas))
    assert min(ious) > 0.9


def test_multi_part_objects_keep_their_largest_part(segment):
    small = [10, 10, 30, 10, 30, 30, 10, 30]
    large = [100, 100, 300, 100, 300, 250, 100, 250]
    annotations = ImageAnnotations([[10, 10, 300, 250]], [1], 512, polygons=[[small, large]])
    request = segment.request_for_eval(CLASSES)
    [obj] = segment.parse(
        segment.target_sequence(segment.encode_objects(request, annotations, CLASSES)), request, 512
    ).objects
    assert np.allclose(obj.box, [100.5, 100.5, 300.5, 250.5])  # bin centres of the large part's corners
    assert mask_iou(obj.polygon, large, 512, 512) > 0.95


def test_instances_without_a_usable_polygon_are_skipped(segment):
    boxes = [[0, 0, 50, 50], [60, 60, 60.2, 60.2], [100, 100, 150, 150], [200, 200, 260, 260]]
    polygons = [
        [],  # RLE only
        [[60, 60, 60.2, 60, 60.2, 60.2]],  # below one bin
        [[100, 100, 150, 150]],  # two points: no area
        [[200, 200, 260, 200, 230, 260]],
    ]
    annotations = ImageAnnotations(boxes, [0, 1, 2, 3], 512, polygons)
    targets = segment.encode_objects(segment.request_for_eval(CLASSES), annotations, CLASSES)
    assert targets.class_index.tolist() == [3] and targets.bins.shape == (1, 2 * segment.num_points)


def test_coco_output_has_rle_masks_in_original_pixels(segment):
    scale, height, width = 2.0, 300, 400
    polygon = np.array([50, 40, 250, 40, 250, 240, 50, 240], dtype=float)  # original pixels
    annotations = ImageAnnotations([[100, 80, 500, 480]], [1], 800, [[polygon * scale]])
    request = segment.build_request(["square"])
    result = segment.parse(
        segment.target_sequence(segment.encode_objects(request, annotations, ["circle", "square"])),
        request,
        800,
    )
    image_meta = dict(ori_shape=(height, width), scale_factor=(scale, scale))
    prediction = Prediction.from_parsed(result, request, image_meta, "autoregressive", with_shapes=True)
    [coco] = prediction_to_coco(prediction, 7, {"square": 99})
    assert (
        coco["category_id"] == 99
        and coco["image_id"] == 7
        and isinstance(coco["segmentation"]["counts"], str)
    )
    assert coco["segmentation"]["size"] == [height, width]
    assert np.abs(np.asarray(coco["bbox"]) - [50, 40, 200, 200]).max() <= 800 / 512 / scale
    rle = dict(coco["segmentation"], counts=coco["segmentation"]["counts"].encode())
    assert abs(float(mask_utils.area(rle)) - 200 * 200) / (200 * 200) < 0.03


def test_the_number_of_points_is_configurable(vocab):
    task = SegmentationTask(vocab, num_points=5)
    assert task.format_tokens == ["<cls>"] + ["<px>", "<py>"] * 5 and task.object_length == 11
    with pytest.raises(ValueError):
        SegmentationTask(vocab, num_points=2)


def test_a_box_prior_is_its_outline_in_target_order(segment, vocab):
    canvas = 64
    box = np.array([8.0, 16.0, 40.0, 32.0])
    coords = segment.geometry_from_boxes(box[None], canvas)  # (1, 2K) fractional bins
    assert coords.shape == (1, 2 * segment.num_points)
    points = (coords.reshape(-1, 2) + 0.5) * canvas / vocab.num_bins  # back to pixels
    # the same points the target builder makes from the box drawn as a polygon
    outline = np.array([[8.0, 16.0], [40.0, 16.0], [40.0, 32.0], [8.0, 32.0]])
    np.testing.assert_allclose(points, resample_polygon(outline, segment.num_points), atol=1e-9)
    on_side = np.isclose(points[:, 0], 8) | np.isclose(points[:, 0], 40)
    on_side |= np.isclose(points[:, 1], 16) | np.isclose(points[:, 1], 32)
    assert on_side.all()
    assert np.isfinite(segment.geometry_from_boxes(np.array([[5.0, 5.0, 5.0, 9.0]]), canvas)).all()


def test_object_boxes_replace_the_polygons_extents_in_order_of_class_tokens(segment, vocab):
    """``parse(object_boxes=...)``: the k-th class token's object reports the k-th box (fractional bins ->
    pixels); a box without area keeps the polygon's extent; a dropped object still uses up its box."""
    canvas = vocab.num_bins  # one pixel per bin
    polygon = segment.geometry_from_boxes(np.array([[20.0, 20.0, 60.0, 50.0]]), canvas)[0]
    bins = [vocab.bin_id(int(b)) for b in np.rint(polygon)]
    tokens = [vocab.class_id(3), *bins] + [vocab.class_id(0), *bins] * 2 + [vocab.eoo_id]
    boxes = [[0.0, 0.0, 9.0, 9.0], [10.0, 12.0, 30.0, 40.0], [5.0, 5.0, 5.0, 8.0]]
    request = segment.request_for_eval(CLASSES[:2])
    parsed = segment.parse(tokens, request, canvas, object_boxes=boxes)
    assert parsed.dropped["class_out_of_range"] == 1  # <c3> of two classes: its box is skipped
    first, second = parsed.objects
    assert first.box == pytest.approx((10.5, 12.5, 30.5, 40.5))  # bin k's centre is k + 0.5
    assert second.box == pytest.approx(segment.parse(tokens, request, canvas).objects[1].box)
    assert first.polygon == second.polygon  # the vertices are the tokens' either way


def test_a_polygon_wholly_in_the_padding_is_dropped_even_with_a_box_in_the_image(segment, vocab):
    """With ``boxes_from_seed`` the box may lie in the image while the polygon lies in the padding below
    it: that object has no mask and is dropped; one whose polygon reaches the image is kept."""
    canvas = vocab.num_bins  # one pixel per bin; the image is the canvas's top half
    image_meta = dict(ori_shape=(canvas // 2, canvas), scale_factor=(1.0, 1.0))
    below = segment.geometry_from_boxes(np.array([[10.0, canvas * 0.6, 30.0, canvas * 0.8]]), canvas)[0]
    above = segment.geometry_from_boxes(np.array([[40.0, 10.0, 60.0, 30.0]]), canvas)[0]
    tokens = []
    for polygon in (below, above):
        tokens += [vocab.class_id(0), *(vocab.bin_id(int(b)) for b in np.rint(polygon))]
    request = segment.request_for_eval(CLASSES[:1])
    in_image = [[10.0, 10.0, 30.0, 30.0], [40.0, 10.0, 60.0, 30.0]]
    parsed = segment.parse([*tokens, vocab.eoo_id], request, canvas, object_boxes=in_image)
    assert len(parsed.objects) == 2
    prediction = Prediction.from_parsed(parsed, request, image_meta, "parallel", with_shapes=True)
    assert len(prediction) == 1 and len(prediction.masks) == len(prediction.polygons) == 1
    np.testing.assert_allclose(prediction.boxes[0], np.array(in_image[1]) + 0.5)
