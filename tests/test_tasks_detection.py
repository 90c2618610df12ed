"""Detection: COCO annotations -> target sequence -> parse -> COCO results, and training requests."""

import numpy as np
import pytest
from transformers import AutoTokenizer

from visionllm.evaluation import prediction_to_coco
from visionllm.pretrained import minilm_dir
from visionllm.structures import Prediction
from visionllm.tasks import DetectionTask, ImageAnnotations, SegmentationTask, build_task
from visionllm.tasks.detection import sample_class_list
from visionllm.vocab import TaskVocab

CLASSES = ["circle", "square", "triangle", "star", "hexagon", "cross"]
CATEGORY_IDS = [3, 5, 7, 11, 13, 17]  # COCO ids of CLASSES, deliberately not 0..n-1


@pytest.fixture(scope="module")
def vocab():
    return TaskVocab(AutoTokenizer.from_pretrained(minilm_dir()))


@pytest.fixture(scope="module")
def detect(vocab):
    return build_task("detect", vocab)


def random_coco_annotations(rng, width, height, count, min_size=8.0):
    annotations = []
    for _ in range(count):
        w, h = rng.uniform(min_size, width / 2), rng.uniform(min_size, height / 2)
        x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
        category = int(rng.choice(CATEGORY_IDS))
        annotations.append({"bbox": [x, y, w, h], "category_id": category, "iscrowd": 0})
    return annotations


def test_coco_boxes_round_trip_within_a_bin(detect, vocab):
    rng = np.random.default_rng(0)
    for _ in range(40):
        width, height = rng.integers(200, 1000, size=2)
        scale = float(rng.uniform(0.5, 2.0))
        canvas = int(np.ceil(max(width, height) * scale))
        coco = random_coco_annotations(rng, width, height, int(rng.integers(0, 12)))
        annotations = ImageAnnotations.from_coco(coco, CATEGORY_IDS, canvas, (scale, scale))
        request = detect.request_for_eval(CLASSES)

        targets = detect.encode_objects(request, annotations, CLASSES)
        result = detect.parse(detect.target_sequence(targets), request, canvas)
        image_meta = dict(ori_shape=(int(height), int(width)), scale_factor=(scale, scale))
        prediction = Prediction.from_parsed(result, request, image_meta, "autoregressive", CLASSES)
        results = prediction_to_coco(prediction, 42, dict(zip(CLASSES, CATEGORY_IDS)))

        assert not result.dropped and result.finished and len(results) == len(coco)
        original_pixel_bin = vocab.bin_size(canvas) / scale
        expected = sorted(coco, key=lambda ann: (ann["bbox"][1], ann["bbox"][0]))
        for predicted, truth in zip(results, expected):
            assert predicted["category_id"] == truth["category_id"] and predicted["image_id"] == 42
            assert np.abs(np.asarray(predicted["bbox"]) - truth["bbox"]).max() <= original_pixel_bin


def test_boxes_below_one_bin_are_widened_and_stay_valid(detect, vocab):
    canvas = 512  # one pixel per bin
    boxes = np.array([[10.2, 10.2, 10.4, 10.9], [511.5, 0.0, 512.0, 0.3], [0.0, 100.0, 0.0, 300.0]])
    annotations = ImageAnnotations(boxes, [0, 1, 2], canvas)
    request = detect.request_for_eval(CLASSES)
    objects = detect.parse(
        detect.target_sequence(detect.encode_objects(request, annotations, CLASSES)), request, canvas
    )
    assert len(objects.objects) == 3 and not objects.dropped
    boxes_by_class = {obj.class_index: np.asarray(obj.box) for obj in objects.objects}
    for label, box in enumerate(boxes):
        parsed = boxes_by_class[label]
        assert parsed[0] < parsed[2] and parsed[1] < parsed[3]
        assert np.abs(parsed - box).max() <= 1.5 * vocab.bin_size(canvas)


def test_targets_hold_only_the_requested_classes_indexed_by_the_request_in_raster_order(detect, vocab):
    boxes = [[300, 300, 400, 400], [10, 300, 50, 350], [20, 20, 80, 80], [500, 10, 600, 90], [5, 5, 9, 9]]
    labels = [0, 1, 0, 2, 4]  # circle, square, circle, triangle, hexagon
    annotations = ImageAnnotations(boxes, labels, canvas_size=640)
    request = detect.build_request(["triangle", "circle", "cross", "square"])

    targets = detect.encode_objects(request, annotations, CLASSES)

    requested = [
        (box, request.classes.index(CLASSES[label])) for box, label in zip(boxes, labels) if label != 4
    ]
    requested.sort(key=lambda item: (item[0][1], item[0][0]))
    assert targets.class_index.tolist() == [k for _, k in requested]
    assert np.allclose(targets.boxes.numpy(), [box for box, _ in requested])
    assert targets.bins.shape == (4, 4) and targets.bins.tolist() == [
        vocab.quantize(np.asarray(box, dtype=float), 640).tolist() for box, _ in requested
    ]
    sequence = detect.target_sequence(targets)
    assert len(sequence) == 4 * detect.object_length + 1 and sequence[-1] == vocab.eoo_id
    assert sequence[:: detect.object_length][:4] == [vocab.class_id(k) for k in targets.class_index.tolist()]


def test_crowd_instances_are_not_targets_and_rle_only_instances_are_boxes_but_not_polygons(vocab):
    coco = [
        {
            "bbox": [10, 10, 50, 50],
            "category_id": 3,
            "iscrowd": 1,
            "segmentation": {"size": [9, 9], "counts": "x"},
        },
        {
            "bbox": [100, 10, 50, 50],
            "category_id": 5,
            "iscrowd": 0,
            "segmentation": {"size": [9, 9], "counts": "x"},
        },
        {"bbox": [10, 100, 50, 50], "category_id": 7, "segmentation": [[10, 100, 60, 100, 60, 150, 10, 150]]},
    ]
    annotations = ImageAnnotations.from_coco(coco, CATEGORY_IDS, canvas_size=256)
    assert annotations.labels.tolist() == [1, 2] and annotations.polygons[0] == []
    for task, expected in ((DetectionTask(vocab), [1, 2]), (SegmentationTask(vocab), [2])):
        request = task.request_for_eval(CLASSES)
        assert task.encode_objects(request, annotations, CLASSES).class_index.tolist() == expected


def test_evaluation_request_lists_every_class_in_dataset_order(detect):
    request = detect.request_for_eval(CLASSES)
    assert request.classes == CLASSES and request.task == "detect"
    listing = ", ".join(f"{name} <c{k}>" for k, name in enumerate(CLASSES))
    assert request.text == f"{detect.templates[0].format(classes=listing)} {detect.answer_format}"


def test_training_requests_mix_present_and_absent_classes_in_varying_order(detect):
    annotations = ImageAnnotations(
        [[0, 0, 10, 10], [20, 20, 40, 40]], [0, 2], canvas_size=64
    )  # circle, triangle
    present = {"circle", "triangle"}
    orders, saw_absent, saw_only_absent, saw_full_list, templates = set(), False, False, False, set()
    for seed in range(300):
        request = detect.sample_request(CLASSES, annotations, np.random.default_rng(seed))
        assert request.classes and len(set(request.classes)) == len(request.classes)
        assert set(request.classes) <= set(CLASSES)
        for k, name in enumerate(request.classes):
            assert f"{name} <c{k}>" in request.text
        orders.add(tuple(request.classes))
        saw_absent |= bool(set(request.classes) - present)
        saw_only_absent |= not set(request.classes) & present
        saw_full_list |= request.classes == CLASSES
        templates.add(request.text.split(request.classes[0])[0])

        targets = detect.encode_objects(request, annotations, CLASSES)
        wanted = sorted(
            request.classes.index(CLASSES[label])
            for label in annotations.labels
            if CLASSES[label] in request.classes
        )
        assert sorted(targets.class_index.tolist()) == wanted
    assert saw_absent and saw_only_absent and saw_full_list
    assert len(orders) > 50 and len(templates) == len(detect.templates)


def test_short_and_absent_only_class_lists_are_common_among_many_classes():
    """Among 80 classes, lists as short as "person and dog" and lists naming only absent classes
    (answered by <eoo> alone) both occur often enough to be learnt."""
    classes = [f"class {i}" for i in range(80)]
    present = [0, 0, 3, 17]
    lists = [
        sample_class_list(classes, present, 100, np.random.default_rng(seed), full_list_prob=0.0)
        for seed in range(2000)
    ]
    short = np.mean([len(names) <= 3 for names in lists])
    absent_only = np.mean([not {"class 0", "class 3", "class 17"} & set(names) for names in lists])
    long = np.mean([len(names) >= 40 for names in lists])
    assert short > 0.2 and absent_only > 0.08 and long > 0.1


def test_class_lists_never_exceed_the_vocabulary(vocab):
    detect = DetectionTask(vocab)
    many = [f"class {i}" for i in range(250)]
    annotations = ImageAnnotations(np.tile([0, 0, 5, 5], (120, 1)), np.arange(120), canvas_size=64)
    for seed in range(20):
        request = detect.sample_request(many, annotations, np.random.default_rng(seed))
        assert 1 <= len(request.classes) <= vocab.max_classes
        # more present classes than the list may hold (no room for absent ones): cut to max_classes
        names = sample_class_list(many, np.arange(120), 16, np.random.default_rng(seed), full_list_prob=0.0)
        assert 1 <= len(names) <= 16
    with pytest.raises(ValueError, match="class tokens"):
        detect.request_for_eval(many)


def test_build_task_accepts_names_synonyms_and_configs(vocab):
    assert isinstance(build_task("detection", vocab), DetectionTask)
    segment = build_task({"type": "instance_segmentation", "num_points": 8}, vocab)
    assert isinstance(segment, SegmentationTask) and segment.object_length == 17
    with pytest.raises(ValueError, match="supported tasks"):
        build_task("tracking", vocab)


def test_a_box_prior_sits_on_the_bins_of_the_box(detect, vocab):
    canvas = 100
    boxes = np.array([[10.0, 20.0, 55.0, 90.0], [-5.0, 0.0, 120.0, 40.0]])
    coords = detect.geometry_from_boxes(boxes, canvas)
    assert coords.shape == (2, 4)
    inside = np.clip(boxes[0], 0, canvas)
    # the centre of the bin each coordinate falls in is within half a bin of the fractional position
    assert np.abs(coords[0] - vocab.quantize(inside, canvas)).max() <= 0.5
    assert coords.min() >= 0 and coords.max() <= vocab.num_bins - 1  # clipped to the bins
