"""Regions, points and answers in words (issue #22): the RoI / point path against plain references, every
new task's targets and metric, a tiny model trained with every task in one batch, and every bad input."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from mmdet.structures.bbox import bbox_xyxy_to_cxcywh
from mmengine.config import Config
from PIL import Image
from transformers import AutoTokenizer

from tests.conftest import REPO
from tests.test_model import CANVAS, make_sample, tiny_config
from visionllm.apis import Predictor, draw_predictions
from visionllm.cli import main
from visionllm.engine.hooks import dataset_attribute_values
from visionllm.evaluation.task_metric import TaskExamplesMetric
from visionllm.models.decoding import embed_batch
from visionllm.models.prompt_encoder import PromptEncoder, relative_geometry, roi_align, sample_points
from visionllm.pretrained import minilm_dir
from visionllm.registry import MODELS
from visionllm.structures import Prediction
from visionllm.tasks import TASKS, ImageAnnotations, NoReferentError, Request, TextTask, build_task
from visionllm.tasks.points import mask_iou, visible_point
from visionllm.vocab import TaskVocab

CLASSES = ["circle", "square", "triangle", "star", "cross"]
NEW_TASKS = (
    "region_classify", "region_describe", "region_compare", "point_classify", "point_segment", "detect_like",
    "caption", "count", "color_question",
)  # fmt: skip


def bilinear(feature: np.ndarray, y: float, x: float) -> np.ndarray:
    """Plain bilinear sample (C,) of (C,H,W) at pixel-centre coordinates, clamped at the edges."""
    height, width = feature.shape[1:]
    y, x = min(max(y, 0.0), height - 1.0), min(max(x, 0.0), width - 1.0)
    y0, x0 = int(np.floor(y)), int(np.floor(x))
    y1, x1 = min(y0 + 1, height - 1), min(x0 + 1, width - 1)
    dy, dx = y - y0, x - x0
    return (
        feature[:, y0, x0] * (1 - dy) * (1 - dx)
        + feature[:, y0, x1] * (1 - dy) * dx
        + feature[:, y1, x0] * dy * (1 - dx)
        + feature[:, y1, x1] * dy * dx
    )


def reference_roi_align(feature: np.ndarray, box, size: int, scale: float, ratio: int) -> np.ndarray:
    """RoIAlign (aligned=True) by its definition: each of size x size bins averages ratio^2 samples."""
    x1, y1, x2, y2 = (v * scale - 0.5 for v in box)
    bin_w, bin_h = (x2 - x1) / size, (y2 - y1) / size
    out = np.zeros((feature.shape[0], size, size))
    for i in range(size):
        for j in range(size):
            samples = [
                bilinear(feature, y1 + (i + (a + 0.5) / ratio) * bin_h, x1 + (j + (b + 0.5) / ratio) * bin_w)
                for a in range(ratio)
                for b in range(ratio)
            ]
            out[:, i, j] = np.mean(samples, axis=0)
    return out


def test_roi_align_and_point_sampling_match_plain_references():
    rng = np.random.default_rng(0)
    features = torch.tensor(rng.normal(size=(2, 3, 9, 12)), dtype=torch.float32)
    rois = torch.tensor([[0, 3.0, 5.0, 40.0, 30.0], [1, 0.0, 0.0, 48.0, 36.0], [0, 10.5, 2.2, 14.1, 9.9]])
    pooled = roi_align(features, rois, output_size=3, spatial_scale=0.25, sampling_ratio=2)
    for k, (image, *box) in enumerate(rois.tolist()):
        expected = reference_roi_align(features[int(image)].numpy(), box, 3, 0.25, 2)
        np.testing.assert_allclose(pooled[k].numpy(), expected, atol=1e-5)
    points = torch.tensor([[1, 17.0, 9.0], [0, 0.0, 35.9]])
    sampled = sample_points(features, points, spatial_scale=0.25)
    for k, (image, x, y) in enumerate(points.tolist()):
        expected = bilinear(features[int(image)].numpy(), y * 0.25 - 0.5, x * 0.25 - 0.5)
        np.testing.assert_allclose(sampled[k].numpy(), expected, atol=1e-5)


@pytest.fixture(scope="module")
def vocab():
    return TaskVocab(AutoTokenizer.from_pretrained(minilm_dir()), num_bins=64, max_classes=10)


def scene() -> ImageAnnotations:
    """Two red circles (left), a small blue star and a green cross, on a 100 px canvas."""
    boxes = [[5, 10, 25, 30], [30, 50, 60, 80], [62, 5, 72, 15], [75, 40, 95, 70]]
    polygons = [[np.array([x1, y1, x2, y1, x2, y2, x1, y2], dtype=float)] for x1, y1, x2, y2 in boxes]
    attributes = [
        {"color": "red", "size": "medium"},
        {"color": "red", "size": "large"},
        {"color": "blue", "size": "small"},
        {"color": "green", "size": "medium"},
    ]
    return ImageAnnotations(np.array(boxes, float), np.array([0, 0, 3, 4]), 100, polygons, attributes)


def test_text_answers_follow_the_annotations(vocab):
    annotations, rng = scene(), np.random.default_rng(0)
    caption = build_task("caption", vocab)
    assert caption.answer(caption.build_request([]), annotations, CLASSES) == (
        "two red circles, a small blue star and a medium green cross"
    )
    count = build_task("count", vocab)
    assert count.build_request(["cross"]).text.endswith("How many crosses are there?")
    assert [count.answer(count.build_request([name]), annotations, CLASSES) for name in CLASSES] == [
        "2", "0", "0", "1", "1",
    ]  # fmt: skip
    colour = build_task("color_question", vocab)
    asked = dict((phrase, index) for index, phrase in colour.askable(annotations, CLASSES))
    assert asked == {"medium circle": 0, "large circle": 1, "star": 2, "cross": 3}
    assert colour.answer(colour.build_request(["star"], target_indices=[2]), annotations, CLASSES) == "blue"
    describe = build_task("region_describe", vocab)
    request = describe.sample_request(CLASSES, annotations, rng)
    index = request.target_indices[0]
    assert describe.answer(request, annotations, CLASSES).endswith(CLASSES[annotations.labels[index]])
    box, region = annotations.boxes[index], np.array(request.regions[0])
    assert np.all(np.abs(region - box) <= 0.1 * np.tile(box[2:] - box[:2], 2) + 1e-6)  # jittered, not lost
    compare = build_task("region_compare", vocab)
    answers = {}
    for request, answer in compare.eval_examples(CLASSES, annotations, rng):
        a, b = request.target_indices
        answers[compare.kind(compare.templates.index(request.text.split("words. ")[1]))] = (a, b, answer)
    a, b, answer = answers["left"]
    assert answer == ("first" if annotations.boxes[a, 0] < annotations.boxes[b, 0] else "second")
    a, b, answer = answers["color"]
    assert answer == (
        "yes" if annotations.attributes[a]["color"] == annotations.attributes[b]["color"] else "no"
    )


def test_comparison_accuracy_is_also_reported_per_kind(vocab):
    """A model right about positions only: 1.0 on "further left", 0.0 on sizes and colours."""
    compare, rng = build_task("region_compare", vocab), np.random.default_rng(0)
    meta = {"ori_shape": (100, 100), "scale_factor": (1.0, 1.0)}
    opposite = {"yes": "no", "no": "yes", "first": "second", "second": "first"}
    examples = []
    for request, reference in compare.eval_examples(CLASSES, scene(), rng):
        answer = reference if compare._kind_of(request) == "left" else opposite[reference]
        examples.append((Prediction.from_text(answer, 1.0, request, meta, "parallel"), reference))
    scores = compare.summarize(examples)
    assert scores == {"accuracy": 1 / 3, "accuracy_larger": 0.0, "accuracy_left": 1.0, "accuracy_color": 0.0}


def test_object_tasks_with_inputs_round_trip_their_targets(vocab):
    annotations, rng = scene(), np.random.default_rng(1)
    like = build_task("detect_like", vocab)
    request = like.request_like(1, annotations, 0)  # the large circle as the example
    assert request.text.index("<region>") < request.text.index("<c0>")  # the pointer reads the region
    targets = like.encode_objects(request, annotations, CLASSES)
    parsed = like.parse(like.target_sequence(targets), request, 100)
    assert len(parsed.objects) == 2 and not parsed.dropped  # both circles
    segment = build_task({"type": "point_segment", "num_points": 8}, vocab)
    for index in range(len(annotations)):
        request = segment.request_at(index, annotations, 0, rng)
        x, y = request.points[0]
        x1, y1, x2, y2 = annotations.boxes[index]
        assert x1 <= x <= x2 and y1 <= y <= y2
        [obj] = segment.parse(
            segment.target_sequence(segment.encode_objects(request, annotations, CLASSES)), request, 100
        ).objects
        assert mask_iou([obj.polygon], [p.tolist() for p in annotations.polygons[index]], 100, 100) > 0.8


def test_a_click_lands_on_the_visible_part_of_an_occluded_instance():
    below = [np.array([0, 0, 40, 0, 40, 40, 0, 40], dtype=float)]
    above = [np.array([0, 0, 40, 0, 40, 30, 0, 30], dtype=float)]  # covers the top three quarters
    annotations = ImageAnnotations(
        np.array([[0, 0, 40, 40], [0, 0, 40, 30]], float), [0, 1], 50, [below, above]
    )
    rng = np.random.default_rng(0)
    assert all(visible_point(annotations, 0, rng)[1] > 30 for _ in range(20))


def test_every_task_scores_its_examples_with_its_own_metric(vocab):
    rng, full = np.random.default_rng(2), scene()
    images = [full] + [
        ImageAnnotations(
            full.boxes[keep],
            full.labels[keep],
            100,
            [full.polygons[i] for i in keep],
            [full.attributes[i] for i in keep],
        )  # fmt: skip
        for keep in ([0, 1, 2], [2, 3])
    ]
    meta = {"ori_shape": (100, 100), "scale_factor": (1.0, 1.0)}
    for name in NEW_TASKS:
        task = build_task(name, vocab)
        # three images: CIDEr weighs n-grams by how rare they are across images
        examples = [(e, image) for image in images for e in task.eval_examples(CLASSES, image, rng)]
        assert examples, name
        perfect, wrong = [], []
        for (request, reference), image in examples:
            if isinstance(TASKS[request.task](None), TextTask):
                perfect.append((Prediction.from_text(reference, 1.0, request, meta, "parallel"), reference))
                wrong.append((Prediction.from_text("zebra", 1.0, request, meta, "parallel"), reference))
                continue
            boxes = (
                reference[1] if isinstance(reference, tuple) else image.boxes[list(request.target_indices)]
            )
            polygons = (
                [[*b[[0, 1, 2, 1, 2, 3, 0, 3]]] for b in np.asarray(boxes)]
                if name == "point_segment"
                else None
            )
            none = np.zeros(len(boxes))
            right = Prediction(request, "parallel", 100, 100, boxes, none + 1, none, none, polygons)
            perfect.append((right, reference))
            empty = Prediction(
                request, "parallel", 100, 100, np.zeros((0, 4)), [], [], [], [] if polygons else None
            )
            wrong.append((empty, reference))
        best, worst = task.summarize(perfect), task.summarize(wrong)
        headline = next(iter(best))
        assert best[headline] > 0.99 if headline != "CIDEr" else best[headline] > 1.0, (name, best)
        assert worst[headline] == 0.0, (name, worst)


@pytest.fixture(scope="module")
def generalist():
    cfg = tiny_config()
    cfg.tasks = {name: dict() for name in ("detect", "segment", "ground", *NEW_TASKS)}
    cfg.tasks["segment"] = cfg.tasks["point_segment"] = dict(num_points=8)
    cfg.eval_tasks = NEW_TASKS
    torch.manual_seed(0)
    return MODELS.build(cfg)


def test_region_inputs_are_written_over_their_placeholders(generalist):
    model = generalist
    request = Request("region_compare", [], "Answer in words. Is <region> larger than <region>?",
                      regions=[(1, 1, 20, 20), (30, 30, 60, 50)])  # fmt: skip
    tokens = model.image_tokenizer(torch.randn(1, 3, CANVAS, CANVAS), [request.plain_text])
    query = model._query(model.tasks["region_compare"], request)
    model._fill_prompt_inputs(tokens, [query])
    embeds, mask, _ = embed_batch(
        model.llm, tokens.embeds, [query.prompt_ids], prompt_inputs=[query.prompt_inputs]
    )
    positions = [i for i, t in enumerate(query.prompt_ids) if t == model.vocab.region_id]
    assert len(positions) == 2
    torch.testing.assert_close(embeds[0, positions], query.prompt_inputs)
    assert not torch.allclose(query.prompt_inputs[0], query.prompt_inputs[1])  # each box its own features


def test_a_click_request_trains_the_tokens_on_every_object_and_the_slots_on_the_clicked_one(generalist):
    """The tokenizer does not see the click: for "segment the object at <point>" its tokens learn every
    annotated object as <c0> ("object"), the slots only the clicked one; a detection request's tokens
    learn what it asks for."""
    model = generalist
    model.train()
    seen = []
    original = model.token_loss
    model.token_loss = lambda boxes, logits, gt_boxes, gt_classes, **kw: (
        seen.append((gt_boxes, gt_classes)) or original(boxes, logits, gt_boxes, gt_classes, **kw)
    )
    for name, classes in (("point_segment", None), ("detect", ["triangle"])):

        def sample(annotations, rng, task=model.tasks[name], classes=classes):
            if classes is None:
                return task, task.sample_request(model._class_names(), annotations, rng)
            return task, task.build_request(classes, 0)

        model._sample_request = sample
        model.loss(torch.randn(1, 3, CANVAS, CANVAS), [make_sample()])
    del model._sample_request
    model.token_loss = original
    (click_boxes,), (click_classes,) = seen[0]
    (detect_boxes,), (detect_classes,) = seen[1]
    torch.testing.assert_close(click_boxes, make_sample().gt_instances.bboxes)  # both objects, as <c0>
    assert click_classes.tolist() == [0, 0]
    assert detect_boxes.tolist() == [[30.0, 30.0, 60.0, 50.0]] and detect_classes.tolist() == [0]


def test_the_click_prior_reads_where_the_click_lies_in_each_seed_box(generalist):
    model = generalist
    boxes = torch.tensor([[10.0, 10.0, 30.0, 20.0], [0.0, 0.0, 4.0, 4.0]])
    where = model._click_in_boxes((25.0, 12.5), boxes)
    torch.testing.assert_close(where, torch.tensor([[0.5, -0.5], [11.5, 5.25]]))  # inside: both in [-1, 1]
    # added to the seeds' class prior of a click request only
    model.eval()
    with torch.no_grad():
        model.click_prior.layers[-1].bias.fill_(5.0)
        click = model.tasks["point_segment"]
        requests = [
            click.build_request(click.fixed_classes, 0, points=[(20.0, 20.0)]),
            model.tasks["segment"].request_for_eval(["object"]),
        ]
        queries = [model._query(model.tasks[r.task], r) for r in requests]
        tokens = model.image_tokenizer(
            torch.randn(1, 3, CANVAS, CANVAS).expand(2, -1, -1, -1), [r.plain_text for r in requests]
        )
        logits = [torch.zeros(model.image_tokenizer.num_queries, 1)] * 2
        _, priors, _ = model._slot_inputs(tokens, logits, queries, [CANVAS, CANVAS])
        model.click_prior.layers[-1].bias.zero_()
    column = model.vocab.class_local_ids(1)
    assert (priors[0][:, 0, column] == 5.0).all() and (priors[1][:, 0, column] == 0.0).all()


def test_relative_geometry_gives_each_box_where_the_others_are():
    lone, pair = (
        torch.tensor([[0.5, 0.5, 0.2, 0.2]]),
        torch.tensor([[0.2, 0.3, 0.1, 0.2], [0.7, 0.1, 0.4, 0.1]]),
    )
    triple = torch.tensor([[0.1, 0.1, 0.1, 0.1], [0.5, 0.5, 0.1, 0.1], [0.9, 0.3, 0.1, 0.1]])
    out = relative_geometry([lone, pair, triple])
    torch.testing.assert_close(out[0], torch.zeros(4))  # alone: nothing to relate to
    ratio_w, ratio_h = float(np.log(4.0)), float(np.log(0.5))
    # the other box is right of and above the first, 4x as wide and half as high
    torch.testing.assert_close(out[1], torch.tensor([0.5, -0.2, ratio_w, ratio_h]))
    torch.testing.assert_close(out[2], torch.tensor([-0.5, 0.2, -ratio_w, -ratio_h]))
    torch.testing.assert_close(out[3:, :2], torch.tensor([[0.6, 0.3], [0.0, -0.3], [-0.6, 0.0]]))  # means


@pytest.mark.parametrize("relations", [True, False])
def test_a_region_input_knows_where_the_request_s_other_regions_are(relations):
    """With relations, a box's input changes when only the other box of its request moves, and differs
    from the same box asked about alone; without them, it changes in neither case."""
    torch.manual_seed(0)
    encoder = PromptEncoder(embed_dims=16, llm_dims=32, num_levels=2, region_relations=relations)
    maps, canvas = [torch.randn(1, 16, 8, 8), torch.randn(1, 16, 4, 4)], (64, 64)
    here, other, moved = [4.0, 4, 20, 20], [30.0, 2, 40, 12], [2.0, 40, 12, 50]

    def first_input(*boxes) -> torch.Tensor:
        return encoder.regions(maps, [torch.tensor(boxes)], canvas)[0][0]

    with_other, with_moved, alone = first_input(here, other), first_input(here, moved), first_input(here)
    assert (not torch.allclose(with_other, with_moved, atol=1e-5)) == relations
    assert (not torch.allclose(with_other, alone, atol=1e-5)) == relations


def test_where_a_region_is_stays_readable_however_large_its_content():
    """Over maps that are the same everywhere (two boxes of one size pool the same content), moving a box
    changes its input by a share of the input's norm that does not shrink when the maps grow 100x: the
    content is normalised, so a content term that grows in training cannot drown the position."""
    torch.manual_seed(0)
    encoder = PromptEncoder(embed_dims=16, llm_dims=32, num_levels=2)
    channels = torch.linspace(0.5, 1.5, 16).view(1, 16, 1, 1)
    here, there = torch.tensor([[4.0, 4, 20, 20]]), torch.tensor([[40.0, 30, 56, 46]])
    shares = []
    for scale in (1.0, 100.0):
        maps = [scale * channels.expand(1, 16, 8, 8), scale * channels.expand(1, 16, 4, 4)]
        a, b = (encoder.regions(maps, [box], (64, 64))[0][0] for box in (here, there))
        shares.append(float((a - b).norm() / a.norm()))
    assert shares[0] > 0.05 and shares[1] > 0.5 * shares[0], shares


def test_the_geometry_encodings_are_fixed_as_large_as_the_content_and_tell_left_from_right():
    """The sine encodings in a region's or point's geometry term have no parameter (training cannot shrink
    them, as it shrank a geometry term that was only an MLP), their norm is that of a layer-normalised
    content term, and a box whose partner is on its left gets other encodings than one whose partner is on
    its right."""
    encoder = PromptEncoder(embed_dims=16, llm_dims=32, num_levels=2)
    box = torch.tensor([[0.5, 0.5, 0.2, 0.2]]).expand(2, 4)
    partner_right, partner_left = torch.tensor([[0.3, 0.0, 0.0, 0.0], [-0.3, 0.0, 0.0, 0.0]]).unbind()
    regions = encoder.geometry_encoding([box, torch.stack([partner_right, partner_left])])
    points = encoder.geometry_encoding([torch.tensor([[0.1, 0.9], [0.9, 0.1]])])
    for term in (regions, points):
        assert term.shape == (2, 32) and not term.requires_grad
        torch.testing.assert_close(term.norm(dim=-1), torch.full((2,), 32**0.5))
        assert (term[0] - term[1]).norm() > 0.2 * term[0].norm()


def test_an_llm_width_the_geometry_cannot_be_shared_over_is_a_clear_error():
    with pytest.raises(ValueError, match="llm_dims=40 must be a multiple of 16"):
        PromptEncoder(embed_dims=16, llm_dims=40, num_levels=2)  # 8 coordinates per region
    PromptEncoder(embed_dims=16, llm_dims=40, num_levels=2, region_relations=False)  # 4: fits


def test_a_batch_with_every_task_trains_every_part(generalist):
    model = generalist
    model.train()
    names = list(model.tasks)
    batch = [make_sample() for _ in names]

    def next_task(annotations, rng):  # one image per task, every task in the batch
        for name in order:
            try:
                return model.tasks[name], model.tasks[name].sample_request(
                    model._class_names(), annotations, rng
                )
            except NoReferentError:
                continue

    model._sample_request = next_task
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    history = []
    for _ in range(8):  # the same requests, jitter and dropout at every step: one batch, trained on
        order = iter(names * 100)
        torch.manual_seed(0)
        losses = model.loss(
            torch.randn(len(batch), 3, CANVAS, CANVAS, generator=torch.Generator().manual_seed(0)), batch
        )
        assert {"loss_text", "loss_slot_cls", "loss_sequence", "loss_token_cls", "loss_prompt_class"} <= set(
            losses
        )
        optimizer.zero_grad()
        sum(losses.values()).backward()
        if not history:
            for part in (
                "prompt_encoder.region_hidden",
                "prompt_encoder.point_hidden",
                "prompt_encoder.region_class",
                "prompt_encoder.point_class",
                "prompt_encoder.region_out",
            ):
                grads = [p.grad for n, p in model.named_parameters() if n.startswith(part)]
                assert grads and all(g is not None and g.abs().sum() > 0 for g in grads), part
        optimizer.step()
        history.append({k: float(v) for k, v in losses.items()})
    del model._sample_request
    assert history[-1]["loss_text"] < history[0]["loss_text"]
    assert history[-1]["loss_slot_cls"] < history[0]["loss_slot_cls"]


def test_region_and_point_class_features_learn_the_class_on_every_image():
    """``loss_prompt_class`` trains what the LLM's region / point input carries: after a few steps on
    one detection-only batch, every annotated box and click scores its own class highest."""
    cfg = tiny_config()
    cfg.tasks, cfg.eval_task = dict(detect=dict(), region_classify=dict()), "detect"
    torch.manual_seed(0)
    model = MODELS.build(cfg)
    model._sample_request = lambda annotations, rng: (
        model.tasks["detect"],
        model.tasks["detect"].sample_request(model._class_names(), annotations, rng),
    )  # the loss comes from every image, whatever its task
    model.train()
    sample = make_sample()
    images = torch.randn(2, 3, CANVAS, CANVAS, generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3)
    first = None
    for _ in range(30):
        losses = model.loss(images, [sample, make_sample()])
        first = first if first is not None else float(losses["loss_prompt_class"])
        optimizer.zero_grad()
        losses["loss_prompt_class"].backward()
        optimizer.step()
    del model._sample_request
    with torch.no_grad():
        tokens = model.image_tokenizer(images, ["Find every circle."] * 2)
        names = model.image_tokenizer.name_features([model._class_names()], images.device)[0]
        boxes = [sample.gt_instances.bboxes] * 2
        clicks = [(sample.gt_instances.bboxes[:, :2] + sample.gt_instances.bboxes[:, 2:]) / 2] * 2
        encoder = model.prompt_encoder
        features = torch.cat(
            [
                encoder.region_class(encoder.region_features(tokens.feature_maps, boxes, tokens.canvas)),
                encoder.point_class(encoder.point_features(tokens.feature_maps, clicks, tokens.canvas)),
            ]
        )
        assert (features @ names.T).argmax(-1).tolist() == sample.gt_instances.labels.tolist() * 4
    assert float(losses["loss_prompt_class"]) < first / 4

    model.prompt_class_loss_weight = 0.0
    assert "loss_prompt_class" not in model.loss(images, [sample, make_sample()])


ATTRIBUTE_VALUES = dict(color=["blue", "green", "red"], size=["large", "small"])


def attribute_model(weight: float = 1.0):
    cfg = tiny_config()
    cfg.tasks, cfg.eval_task = dict(detect=dict(), region_classify=dict()), "detect"
    cfg.attribute_loss_weight, cfg.attribute_values = weight, ATTRIBUTE_VALUES
    torch.manual_seed(0)
    return MODELS.build(cfg)


def test_attribute_loss_teaches_region_and_point_features_their_objects_attributes():
    """``loss_prompt_attribute``: after a few steps on one batch, the attribute head of every annotated
    box and click names its object's colour and size among the attributes' words."""
    model = attribute_model()
    model.train()
    samples = [make_sample(), make_sample()]
    images = torch.randn(2, 3, CANVAS, CANVAS, generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3)
    first = None
    for _ in range(30):
        losses = model.loss(images, samples)
        first = first if first is not None else float(losses["loss_prompt_attribute"])
        optimizer.zero_grad()
        losses["loss_prompt_attribute"].backward()
        optimizer.step()
    assert float(losses["loss_prompt_attribute"]) < first / 4
    with torch.no_grad():
        tokens = model.image_tokenizer(images, ["Find every circle."] * 2)
        encoder, maps, canvas = model.prompt_encoder, tokens.feature_maps, tokens.canvas
        boxes = [sample.gt_instances.bboxes for sample in samples]
        clicks = [(box[:, :2] + box[:, 2:]) / 2 for box in boxes]
        features = torch.cat(
            [
                encoder.region_attribute(encoder.region_features(maps, boxes, canvas)),
                encoder.point_attribute(encoder.point_features(maps, clicks, canvas)),
            ]
        )
        for key, values in ATTRIBUTE_VALUES.items():
            words = model.image_tokenizer.name_features([values], images.device)[0]
            named = [values[i] for i in (features @ words.T).argmax(-1).tolist()]
            expected = [attrs[key] for attrs in samples[0].metainfo["instance_attributes"]]
            assert named == expected * 4, key


def test_token_attribute_loss_trains_exactly_the_tokens_that_overlap_an_object():
    """``loss_token_attribute`` reaches a visual token only when its box overlaps an annotated object by
    IoU >= 0.5: here token 3 of image 0 sits on object 0 and token 5 of image 1 nearly on object 1."""
    model = attribute_model()
    samples = [make_sample(), make_sample()]
    with torch.no_grad():
        tokens = model.image_tokenizer(torch.randn(2, 3, CANVAS, CANVAS), ["Find every circle."] * 2)
    boxes = tokens.layer_boxes.clone()
    boxes[-1] = torch.tensor([0.01, 0.01, 0.01, 0.01])  # a pixel in the corner: overlaps nothing
    gt = samples[0].gt_instances.bboxes / CANVAS
    boxes[-1, 0, 3] = bbox_xyxy_to_cxcywh(gt[0])
    boxes[-1, 1, 5] = bbox_xyxy_to_cxcywh(gt[1] + torch.tensor([0.02, 0.0, 0.02, 0.0]))  # IoU ~0.9
    features = tokens.layer_features.detach().clone().requires_grad_()
    tokens = dataclasses.replace(tokens, layer_boxes=boxes, layer_features=features)
    annotations = [model._annotations(sample) for sample in samples]
    loss = model._token_attribute_loss(tokens, annotations, model._attribute_words(features.device))
    loss.backward()
    assert (features.grad[-1].abs().sum(-1) > 0).nonzero().tolist() == [[0, 3], [1, 5]]
    assert float(loss) > 0


def test_attribute_heads_exist_only_when_their_loss_is_on():
    model = attribute_model(weight=0.0)
    assert model.prompt_encoder.region_attribute is None and model.token_attribute is None
    model.train()
    losses = model.loss(torch.randn(2, 3, CANVAS, CANVAS), [make_sample(), make_sample()])
    assert not {"loss_prompt_attribute", "loss_token_attribute"} & set(losses)


def test_attribute_values_come_from_the_training_set():
    """``ClassNamesHook`` gives the model each attribute's words as the training annotations spell them
    (numbers as text); a dataset without attributes gives none."""

    class Annotated:
        instances = [
            [{"attributes": {"color": "red", "size": 3}}, {"attributes": {"color": "blue"}}],
            [{}, {"attributes": {"color": "red", "size": 10}}],
            [],
        ]

        def __len__(self):
            return len(self.instances)

        def get_data_info(self, index):
            return {"instances": self.instances[index]}

    assert dataset_attribute_values(Annotated()) == {"color": ["blue", "red"], "size": ["10", "3"]}
    Annotated.instances = [[{"bbox": [0, 0, 1, 1]}]]
    assert dataset_attribute_values(Annotated()) == {}


def test_word_tags_add_the_llm_s_own_words_for_what_each_token_detects():
    """``word_tags``: answers in words read a token that the tokenizer scores as a class with the LLM's
    embedding of its name added, and with attribute heads that of its colour word (weighted by how surely it
    is an object), as loud as the token; a token that shows nothing is read as it is; the LM loss reaches
    the word embeddings through the tags; without ``token_loss`` the option is a clear error."""
    cfg = tiny_config()
    cfg.tasks = dict(detect=dict(), count=dict(), color_question=dict(), region_classify=dict())
    cfg.eval_task = "detect"
    cfg.attribute_loss_weight, cfg.attribute_values, cfg.word_tags = 1.0, ATTRIBUTE_VALUES, True
    torch.manual_seed(0)
    model = MODELS.build(cfg)
    with torch.no_grad():
        tokens = model.image_tokenizer(torch.randn(2, 3, CANVAS, CANVAS), ["How many stars are there?"] * 2)
    names, red = model._class_names(), ATTRIBUTE_VALUES["color"].index("red")
    logits = torch.full((2, tokens.embeds.shape[1], len(names)), -30.0)
    logits[0, 3, -1] = 30.0  # token 3 of image 0 is surely the last class; every other token shows nothing
    model.image_tokenizer.class_logits = lambda features, names: list(logits)
    words = {
        key: model.image_tokenizer.name_features([v], tokens.embeds.device)[0]
        for key, v in ATTRIBUTE_VALUES.items()
    }
    attribute_features = torch.zeros(2, tokens.embeds.shape[1], words["color"].shape[1])
    attribute_features[0, 3] = 1e3 * words["color"][red]  # its colour head names "red"
    model.token_attribute.forward = lambda features: attribute_features
    tag_words = model._tag_words(tokens.embeds.device)
    tagged = model._tagged_tokens(tokens.embeds, tokens.features, tag_words)
    added = tagged - tokens.embeds
    assert added[0, :3].abs().max() < 1e-6 and added[1].abs().max() < 1e-6
    norm = tokens.embeds[0, 3].norm()
    expected_colour = model._word_embeddings(["red"])[0]
    sizes = model._word_embeddings(ATTRIBUTE_VALUES["size"])
    size_weights = (attribute_features[0, 3] @ words["size"].T / attribute_features.shape[-1] ** 0.5).softmax(
        -1
    )
    expected = model._word_embeddings(names[-1:])[0] + expected_colour + size_weights @ sizes
    torch.testing.assert_close(added[0, 3], expected * norm, rtol=1e-4, atol=1e-4)
    assert torch.allclose(added[0, 3].norm(), (expected.norm() * norm), rtol=1e-4)
    # the word embeddings learn from what the tags make the LLM answer
    tagged.sum().backward()
    assert model.llm.llm.get_input_embeddings().weight.grad.abs().sum() > 0
    # a region's input is tagged from its own class features (softmax over the names) and attributes
    name_features = model.image_tokenizer.name_features([names], tokens.embeds.device)[0]
    inputs = torch.randn(1, tokens.embeds.shape[-1])
    with torch.no_grad():
        added = model._tag_prompt(inputs, 1e3 * name_features[:1], None, tag_words) - inputs
    torch.testing.assert_close(
        added[0], model._word_embeddings(names[:1])[0] * inputs.norm(), rtol=1e-4, atol=1e-4
    )
    seen = []
    boxes = [torch.tensor([[4.0, 4.0, 30.0, 30.0]])]
    with torch.no_grad():
        plain = model.prompt_encoder.regions(tokens.feature_maps, boxes, tokens.canvas)
        tagged_regions = model.prompt_encoder.regions(
            tokens.feature_maps, boxes, tokens.canvas, lambda x, c, a: seen.append((c, a)) or x + 1
        )
        class_features = model.prompt_encoder.region_class_features(tokens.feature_maps, boxes, tokens.canvas)
    torch.testing.assert_close(tagged_regions[0], plain[0] + 1)
    torch.testing.assert_close(seen[0][0], class_features[0])
    assert seen[0][1] is not None and seen[0][1].shape == class_features[0].shape
    model.word_tags = False
    assert model._tag_words(tokens.embeds.device) is None
    assert torch.equal(model._tagged_tokens(tokens.embeds, tokens.features, None), tokens.embeds)
    cfg.token_loss = None
    with pytest.raises(ValueError, match="word_tags needs token_loss"):
        MODELS.build(cfg)


def test_extra_questions_train_answers_in_words_on_images_of_other_tasks():
    """``extra_questions``: a detection-only batch still trains answers in words, each question reading
    its own image's regions, and only when asked for."""
    cfg = tiny_config()
    cfg.tasks, cfg.eval_task = dict(detect=dict(), region_classify=dict()), "detect"
    cfg.extra_questions = 2
    torch.manual_seed(0)
    model = MODELS.build(cfg)
    model.train()
    detect = model.tasks["detect"]
    sample_request = model._sample_request
    model._sample_request = lambda annotations, rng, names=None: (
        sample_request(annotations, rng, names)
        if names
        else (detect, detect.sample_request(model._class_names(), annotations, rng))
    )  # every image's own task is detection; only the extra questions are in words
    images = torch.randn(2, 3, CANVAS, CANVAS, generator=torch.Generator().manual_seed(0))
    asked = []
    text_loss = model._text_loss
    model._text_loss = lambda visual, queries, answers: (
        asked.append((visual, queries)) or text_loss(visual, queries, answers)
    )
    made = []
    model.image_tokenizer.register_forward_hook(lambda module, args, out: made.append(out))
    losses = model.loss(images, [make_sample(), make_sample()])
    visual, queries = asked[0]
    assert [q.task.name for q in queries] == ["region_classify"] * 4
    torch.testing.assert_close(visual, made[0].embeds[[0, 0, 1, 1]])  # two questions per image
    for row, query in zip([0, 0, 1, 1], queries):  # each region pooled from its own image's maps
        maps = [level[row : row + 1] for level in made[0].feature_maps]
        box = torch.as_tensor([query.request.regions[0]], dtype=torch.float32)
        torch.testing.assert_close(
            query.prompt_inputs, model.prompt_encoder.regions(maps, [box], made[0].canvas)[0]
        )
    losses["loss_text"].backward()
    region_grads = [p.grad for n, p in model.named_parameters() if n.startswith("prompt_encoder.region_out")]
    assert region_grads and all(g is not None and g.abs().sum() > 0 for g in region_grads)

    model.extra_questions = 0
    assert "loss_text" not in model.loss(images, [make_sample(), make_sample()])


def test_generate_answers_in_words_and_objects_side_by_side(generalist):
    model = generalist
    model.eval()
    meta = {"ori_shape": (2 * CANVAS, 2 * CANVAS), "scale_factor": (0.5, 0.5), "pad_shape": (CANVAS, CANVAS)}
    requests = [
        Request("region_classify", [], "Answer in words. What is <region>?", regions=[(2, 2, 30, 30)]),
        build_task("detect", model.vocab).build_request(["circle"]),
        Request("point_segment", ["object"], build_task("point_segment", model.vocab).render_text(["object"]),
                points=[(10, 12)]),
    ]  # fmt: skip
    answers = model.generate(torch.randn(3, 3, CANVAS, CANVAS), requests, [meta] * 3)
    assert isinstance(answers[0].text, str) and len(answers[0]) == 0 and 0 < answers[0].text_score <= 1
    assert answers[0].request.regions == [(4, 4, 60, 60)]  # back in original pixels
    assert (
        answers[1].text is None
        and answers[2].polygons is not None
        and answers[2].request.points == [(20, 24)]
    )


def test_bad_region_and_point_inputs_are_clear_errors(generalist, tmp_path, capsys):
    with pytest.raises(ValueError, match="region 1 .* no area"):
        Request("region_classify", [], "What is <region>?", regions=[(5, 5, 5, 9)])
    with pytest.raises(ValueError, match="2 <region> placeholders but 1 inputs"):
        Request("region_compare", [], "Is <region> larger than <region>?", regions=[(1, 1, 5, 5)])
    with pytest.raises(ValueError, match="point 1 must be 2 finite numbers"):
        Request("point_classify", [], "What is at <point>?", points=[(1.0, float("nan"))])
    predictor = Predictor(generalist, Config.fromfile(REPO / "configs/visionllm_tiny_synthetic.py"))
    image = tmp_path / "shapes.png"
    Image.new("RGB", (80, 60), (200, 200, 200)).save(image)
    with pytest.raises(
        ValueError, match=r"region 1 \(10, 10, 90, 50\) is not inside .*shapes.png \(80x60 px\)"
    ):
        predictor.predict(image, "what is this?", regions=[(10, 10, 90, 50)])
    with pytest.raises(ValueError, match=r"point 1 \(5, 60\) is not inside"):
        predictor.predict(image, "segment what I clicked", points=[(5, 60)])
    with pytest.raises(ValueError, match="takes 1 region"):
        predictor.predict(image, "what is this?", task="region_classify")
    [answer] = predictor.predict(image, "what is this?", regions=[(10, 10, 40, 50)])
    assert answer.request.task == "region_classify" and answer.request.regions == [(10, 10, 40, 50)]
    drawn = draw_predictions(image, answer, tmp_path / "answer.png", min_size=160)
    assert drawn.height > drawn.width * 60 / 80  # the answer's band under the picture
    with pytest.raises(SystemExit) as usage:
        main(["predict", str(image), "--checkpoint", "x", "--region", "1,2,3"])
    assert usage.value.code == 2
    assert "expected 4 comma-separated numbers, got '1,2,3'" in capsys.readouterr().err


def test_task_examples_metric_scores_each_task_and_writes_the_answers(tmp_path):
    meta = dict(ori_shape=(60, 80), scale_factor=(2.0, 2.0))  # the model saw the image at twice its size
    asked = Request("region_classify", [], "Answer in words. What is <region>?", regions=[(20, 20, 60, 80)])
    right = Prediction.from_text("circle", 0.9, asked, meta, "parallel")
    wrong = Prediction.from_text("a star", 0.4, asked, meta, "parallel")
    objects = Prediction.from_text("", 1.0, asked, meta, "parallel")
    objects.text = None  # an answer with objects (e.g. point segmentation) is scored, never written
    answers = tmp_path / "answers" / "val.jsonl"
    metric = TaskExamplesMetric(answers_file=str(answers))
    metric.process(None, [dict(img_path="a.png", task_examples=[("region_classify", right, "circle")])])
    metric.process(None, [dict(img_path="b.png", task_examples=[("region_classify", wrong, "Circle.")])])
    metric.process(None, [dict(img_path="c.png", task_examples=[])])
    assert metric.compute_metrics(metric.results) == {"region_classify/accuracy": 0.5}
    lines = [json.loads(line) for line in answers.read_text().splitlines()]
    assert [line["image"] for line in lines] == ["a.png", "b.png"]
    assert lines[1] == dict(
        image="b.png",
        task="region_classify",
        question="Answer in words. What is <region>?",
        regions=[[10.0, 10.0, 30.0, 40.0]],  # back in the image's own pixels
        points=[],
        answer="a star",
        reference="Circle.",
    )
    metric.results = [("d.png", [("point_classify", objects, "circle")])]
    metric.compute_metrics(metric.results)
    assert answers.read_text() == ""
