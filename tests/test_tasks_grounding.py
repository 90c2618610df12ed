"""Visual grounding: unambiguous generated phrases, round trips, and the Acc@0.5 metric."""

import numpy as np
import pytest
import torch
from mmengine.structures import InstanceData
from transformers import AutoTokenizer

from visionllm.pretrained import minilm_dir
from visionllm.registry import METRICS
from visionllm.tasks import GroundingTask, ImageAnnotations, NoReferentError
from visionllm.tasks.base import DetectedObject
from visionllm.vocab import TaskVocab

SHAPES = ["circle", "square", "triangle", "star", "hexagon", "cross"]
COLORS = ["red", "green", "blue"]
SIZES = {"small": 30, "medium": 60, "large": 100}
POSITIONS = {"on the left": (0, -1), "on the right": (0, 1), "at the top": (1, -1), "at the bottom": (1, 1)}
CANVAS = 640


@pytest.fixture(scope="module")
def ground():
    return GroundingTask(TaskVocab(AutoTokenizer.from_pretrained(minilm_dir())))


def synthetic_scene(rng, count, with_attributes=True):
    """Shapes of few colours and sizes, so that many instances look alike."""
    labels = rng.integers(0, 3, size=count)  # few categories: duplicates are common
    sizes = rng.choice(list(SIZES), size=count)
    side = np.array([SIZES[s] for s in sizes], dtype=float)
    top_left = rng.uniform(0, CANVAS - side[:, None], size=(count, 2))
    boxes = np.concatenate([top_left, top_left + side[:, None]], axis=1)
    attributes = [
        {"color": str(rng.choice(COLORS)), "size": str(size)} if with_attributes else {} for size in sizes
    ]
    return ImageAnnotations(boxes, labels, CANVAS, attributes=attributes)


def referents(phrase, annotations, margin):
    """An independent reading of a generated phrase: the instances it can designate."""
    words = phrase.removeprefix("the ").split()
    position = next((p for p in POSITIONS if phrase.endswith(p)), None)
    if position:
        words = words[: -len(position.split())]
    *adjectives, noun = words
    required = {("color" if word in COLORS else "size"): word for word in adjectives}
    candidates = [
        i
        for i in range(len(annotations))
        if SHAPES[annotations.labels[i]] == noun
        and all(annotations.attributes[i].get(key, word) == word for key, word in required.items())
    ]
    if position is None:
        return candidates
    axis, sign = POSITIONS[position]
    centres = (annotations.boxes[:, axis] + annotations.boxes[:, axis + 2]) / 2
    extreme = max(candidates, key=lambda i: sign * centres[i])
    return [i for i in candidates if i == extreme or sign * (centres[extreme] - centres[i]) < margin]


@pytest.mark.parametrize("with_attributes", [True, False])
def test_every_generated_phrase_designates_exactly_its_instance(ground, with_attributes):
    rng = np.random.default_rng(0)
    margin = ground.position_margin * CANVAS
    described, phrases = 0, set()
    for _ in range(200):
        annotations = synthetic_scene(rng, int(rng.integers(1, 9)), with_attributes)
        expressions = ground.referring_expressions(SHAPES, annotations)
        for expression in expressions:
            assert referents(expression.phrase, annotations, margin) == [expression.index], expression
            phrases.add(expression.phrase)
        described += len({e.index for e in expressions})
    assert described > 200  # most instances get at least one phrase
    if with_attributes:
        assert "the large red circle on the left" in phrases and "the small triangle at the top" in phrases
    else:
        assert all(not any(c in p for c in COLORS + list(SIZES)) for p in phrases)


def test_sampled_requests_round_trip_to_the_target_box(ground):
    rng = np.random.default_rng(1)
    vocab = ground.vocab
    for _ in range(100):
        annotations = synthetic_scene(rng, int(rng.integers(1, 6)))
        try:
            request = ground.sample_request(SHAPES, annotations, rng)
        except NoReferentError:
            continue
        [phrase], [index] = request.classes, request.target_indices
        assert request.task == "ground" and f"{phrase} <c0>" in request.text
        assert index in {
            e.index for e in ground.referring_expressions(SHAPES, annotations) if e.phrase == phrase
        }

        targets = ground.encode_objects(request, annotations, SHAPES)
        sequence = ground.target_sequence(targets)
        result = ground.parse(sequence, request, CANVAS)

        assert len(sequence) == 6 and sequence[0] == vocab.class_id(0) and sequence[-1] == vocab.eoo_id
        best = ground.referent(result.objects)
        assert np.abs(np.asarray(best.box) - annotations.boxes[index]).max() <= vocab.bin_size(CANVAS) / 2


def test_images_without_a_describable_instance_raise_a_specific_error(ground):
    twins = ImageAnnotations([[10, 10, 50, 50], [10, 10, 50, 50]], [0, 0], CANVAS)
    with pytest.raises(NoReferentError):
        ground.sample_request(SHAPES, twins, np.random.default_rng(0))
    with pytest.raises(NoReferentError):
        ground.sample_request(
            SHAPES, ImageAnnotations(np.zeros((0, 4)), [], CANVAS), np.random.default_rng(0)
        )


def test_evaluation_requests_take_one_phrase(ground):
    request = ground.request_for_eval(["the blue square"])
    assert request.classes == ["the blue square"] and "the blue square <c0>" in request.text
    with pytest.raises(ValueError, match="one phrase"):
        ground.request_for_eval(["a", "b"])


def test_the_referent_is_the_best_scoring_candidate(ground):
    candidates = [DetectedObject(0, (0, 0, 1, 1), 0.2), DetectedObject(0, (5, 5, 9, 9), 0.9)]
    assert ground.referent(candidates).box == (5, 5, 9, 9) and ground.referent([]) is None


def grounding_sample(predicted_boxes, scores, target_box):
    predictions = InstanceData(bboxes=torch.tensor(predicted_boxes, dtype=torch.float32).reshape(-1, 4))
    if scores is not None:
        predictions.scores = torch.tensor(scores)
    return {"pred_instances": predictions.to_dict(), "gt_instances": {"bboxes": torch.tensor([target_box])}}


def test_grounding_accuracy_counts_phrases_whose_top_box_overlaps_the_target():
    metric = METRICS.build(dict(type="GroundingAccuracy"))
    target = [0.0, 0.0, 100.0, 100.0]
    metric.process(
        {},
        [
            grounding_sample([[0, 0, 100, 60]], None, target),  # IoU 0.6: hit
            grounding_sample([[0, 0, 100, 40], [0, 0, 100, 90]], [0.1, 0.8], target),  # the 0.8 box: hit
            grounding_sample([[0, 0, 100, 90], [0, 0, 100, 40]], [0.1, 0.8], target),  # IoU 0.4: miss
            grounding_sample(np.zeros((0, 4)), [], target),  # nothing predicted: miss
        ],
    )
    assert metric.compute_metrics(metric.results) == {"acc@0.5": 0.5}
    strict = METRICS.build(dict(type="GroundingAccuracy", iou_threshold=0.7))
    strict.process({}, [grounding_sample([[0, 0, 100, 60]], None, target)])
    assert strict.compute_metrics(strict.results) == {"acc@0.7": 0.0}
