"""Parsing never crashes: property tests over random token sequences, for every task's parser."""

from collections import Counter

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer

from visionllm.pretrained import minilm_dir
from visionllm.tasks import TASKS, ImageAnnotations, Task, build_task
from visionllm.tasks.base import OBJECT_DROP_REASONS
from visionllm.vocab import TaskVocab

CANVAS = 640
NUM_CLASSES = 5  # classes in the request; the vocabulary has more class tokens, so some are out of range
TOKEN_REASONS = ("unexpected_token", "after_end")
RAW_ANSWERS = st.binary(max_size=120)  # decoded by decode_tokens
PROPERTY_SETTINGS = settings(
    max_examples=10_000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture(scope="module")
def vocab():
    return TaskVocab(AutoTokenizer.from_pretrained(minilm_dir()), num_bins=64, max_classes=10)


#: The tasks answered in the object grammar (the others answer in words and have no token parser).
OBJECT_TASKS = [name for name, task in TASKS.items() if issubclass(task, Task)]


def make_task(name, vocab):
    return build_task(name, vocab, **({"num_points": 6} if name == "segment" else {}))


@pytest.fixture(scope="module", params=OBJECT_TASKS)
def task(request, vocab):
    return make_task(request.param, vocab)


@pytest.fixture(scope="module")
def all_tasks(vocab):
    return [make_task(name, vocab) for name in OBJECT_TASKS]


def build_request(task, classes, **options):
    """``task.build_request`` with a region / point input for each placeholder its templates hold."""
    regions = [(1.0, 1.0, 5.0, 5.0)] * task.region_inputs
    points = [(2.0, 2.0)] * task.point_inputs
    return task.build_request(classes, regions=regions, points=points, **options)


def requested_classes(task):
    return ["phrase"] if task.name == "ground" else [f"class{k}" for k in range(NUM_CLASSES)]


def decode_tokens(raw: bytes, task) -> list[int]:
    """Bytes -> a random answer, so that hypothesis draws one cheap byte string per example (and
    shrinks it). Chunks: an object-like chunk (any class token, usually all its bins, sometimes too
    few), an empty parallel slot, one task token, an arbitrary 64-bit integer, or ``<eoo>``."""
    vocab, num_bins = task.vocab, task.object_length - 1
    data = iter(raw)
    tokens = []
    for kind in data:
        kind %= 8
        if kind <= 3:
            tokens.append(vocab.class_id(next(data, 0) % vocab.max_classes))
            count = next(data, 0)
            count = num_bins if count < 200 else count % num_bins
            tokens.extend(vocab.bin_id(next(data, 0) % vocab.num_bins) for _ in range(count))
        elif kind == 4:
            tokens.append(vocab.noobj_id)
            tokens.extend(
                vocab.bin_id(next(data, 0) % vocab.num_bins) for _ in range(next(data, 0) % (num_bins + 1))
            )
        elif kind == 5:
            tokens.append(vocab.first_id + (next(data, 0) * 256 + next(data, 0)) % vocab.num_tokens)
        elif kind == 6:
            tokens.append(int.from_bytes(bytes(next(data, 0) for _ in range(8)), "little", signed=True))
        else:
            tokens.append(vocab.eoo_id)
    return tokens


def assert_valid_objects(task, result, classes):
    for obj in result.objects:
        assert 0 <= obj.class_index < len(classes)
        x1, y1, x2, y2 = obj.box
        assert 0 <= x1 < x2 <= CANVAS and 0 <= y1 < y2 <= CANVAS
        if task.predicts_polygons:
            points = np.asarray(obj.polygon).reshape(-1, 2)
            assert len(obj.polygon) == 2 * task.num_points
            assert np.allclose([*points.min(axis=0), *points.max(axis=0)], obj.box)
        else:
            assert obj.polygon is None


def check_parse(task, tokens):
    classes = requested_classes(task)
    request = build_request(task, classes)
    scores = [float(position) for position in range(len(tokens))]  # score = position of the token

    result = task.parse(tokens, request, CANVAS, token_scores=scores)

    assert_valid_objects(task, result, classes)
    for obj in result.objects:  # the score comes from the object's own class token
        assert task.vocab.class_index(tokens[int(obj.score)]) == obj.class_index
    assert set(result.dropped) <= set(OBJECT_DROP_REASONS + TOKEN_REASONS)
    assert all(count > 0 for count in result.dropped.values())
    answer = tokens[: tokens.index(task.vocab.eoo_id)] if task.vocab.eoo_id in tokens else tokens
    assert result.finished == (task.vocab.eoo_id in tokens)
    assert result.dropped["after_end"] == len(tokens) - len(answer) - result.finished
    # every class token of the answer became an object or one counted object drop
    class_tokens = sum(bool(task.vocab.is_class(token)) for token in answer)
    assert class_tokens == len(result.objects) + sum(result.dropped[r] for r in OBJECT_DROP_REASONS)


@PROPERTY_SETTINGS
@given(raw=RAW_ANSWERS)
def test_any_token_sequence_parses_into_valid_objects_and_counted_drops(all_tasks, raw):
    """10,000 random answers for each parser (every example is decoded for every task, which
    costs a third of the time of three separate runs)."""
    for task in all_tasks:
        check_parse(task, decode_tokens(raw, task))


def random_annotations(rng, canvas, count, num_labels):
    """Boxes of at least 20 px (larger than a bin) with square-ish polygons inside them."""
    top_left = rng.uniform(0, canvas - 30, size=(count, 2))
    size = rng.uniform(20, canvas / 2, size=(count, 2))
    boxes = np.concatenate([top_left, np.minimum(top_left + size, canvas)], axis=1)
    polygons = [[np.array([x1, y1, x2, y1, x2, y2, x1, y2])] for x1, y1, x2, y2 in boxes]
    return ImageAnnotations(boxes, rng.integers(0, num_labels, size=count), canvas, polygons)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), raw_prefix=RAW_ANSWERS, raw_suffix=RAW_ANSWERS)
def test_a_valid_answer_embedded_in_garbage_still_yields_its_objects(task, seed, raw_prefix, raw_suffix):
    classes = requested_classes(task)
    annotations = random_annotations(np.random.default_rng(seed), CANVAS, 4, len(classes))
    request = build_request(task, classes, target_indices=[0] if task.names_kind != "classes" else [])
    answer = task.target_sequence(task.encode_objects(request, annotations, classes))[:-1]  # no <eoo>
    expected = task.parse(answer, request, CANVAS).objects
    assert len(expected) == (1 if task.names_kind != "classes" else len(annotations))
    prefix = [token for token in decode_tokens(raw_prefix, task) if token != task.vocab.eoo_id]
    suffix = decode_tokens(raw_suffix, task)

    found = task.parse(prefix + answer + suffix, request, CANVAS).objects

    remaining = iter(found)  # the expected objects appear in order among the parsed ones
    assert all(any(obj == candidate for candidate in remaining) for obj in expected)


def test_each_drop_reason_is_counted(task):
    vocab, classes = task.vocab, requested_classes(task)
    request = build_request(task, classes, target_indices=[0] if task.names_kind != "classes" else [])
    annotations = random_annotations(np.random.default_rng(1), CANVAS, 1, 1)
    valid = task.target_sequence(task.encode_objects(request, annotations, classes))[:-1]
    bins = valid[1:]
    degenerate = [vocab.class_id(0)] + [vocab.bin_id(0)] * len(bins)
    tokens = [
        -7,  # unexpected_token
        *valid,
        vocab.class_id(len(classes)), *bins,  # class_out_of_range
        vocab.class_id(0), *bins[:2],  # truncated by the next class token
        *degenerate,  # degenerate geometry
        vocab.noobj_id, *bins[:1],  # an empty parallel slot: not a drop
        *valid,
        vocab.eoo_id, 3, vocab.class_id(0),  # after_end
    ]  # fmt: skip

    result = task.parse(tokens, request, CANVAS)

    geometry_reason = "degenerate_polygon" if task.predicts_polygons else "degenerate_box"
    assert result.dropped == Counter(
        {"unexpected_token": 1, "class_out_of_range": 1, "truncated": 1, geometry_reason: 1, "after_end": 2}
    )
    assert len(result.objects) == 2 and result.objects[0] == result.objects[1] and result.finished
    unfinished = task.parse(valid + [vocab.class_id(0)], request, CANVAS)  # missing <eoo>, cut short
    assert unfinished.objects == result.objects[:1] and not unfinished.finished
    assert unfinished.dropped == Counter({"truncated": 1})


def test_legal_next_tokens_follow_the_grammar(task):
    vocab = task.vocab
    autoregressive = vocab.to_global(task.legal_local_ids(0, 3, parallel=False)).tolist()
    assert autoregressive == [vocab.class_id(0), vocab.class_id(1), vocab.class_id(2), vocab.eoo_id]
    parallel = vocab.to_global(task.legal_local_ids(0, 3, parallel=True)).tolist()
    assert parallel[-1] == vocab.noobj_id and parallel[:-1] == autoregressive[:-1]
    for position in range(1, task.object_length):
        assert vocab.to_global(task.legal_local_ids(position, 3, parallel=True)).tolist() == [
            vocab.bin_id(b) for b in range(vocab.num_bins)
        ]
    with pytest.raises(ValueError):
        task.legal_local_ids(task.object_length, 3, parallel=False)
    assert len(task.format_tokens) == task.object_length == len(task.format_token_ids)
    assert vocab.tokenizer.convert_ids_to_tokens(task.format_token_ids.tolist()) == task.format_tokens
