"""The VisionLLM model on tiny random weights: losses, gradients, both decoders, grammar, pointer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from mmdet.structures import DetDataSample
from mmdet.structures.mask import PolygonMasks
from mmengine.config import Config
from mmengine.structures import InstanceData

from tests.conftest import REPO
from visionllm.models.decoding import decode_parallel, parallel_slot_logits, per_token
from visionllm.models.image_tokenizer import anchor_boxes, refine
from visionllm.models.visionllm import VisionLLM
from visionllm.registry import MODELS, register_all_modules

CLASSES = ["circle", "square", "triangle"]
CANVAS = 64


def tiny_config(**tokenizer_options) -> Config:
    """The tiny model's config over ``CLASSES`` with 4 slots, ``tokenizer_options`` set in its tokenizer."""
    register_all_modules()
    cfg = Config.fromfile(REPO / "configs/_base_/models/visionllm_tiny.py").model
    cfg.class_names = CLASSES
    cfg.num_slots = 4
    cfg.image_tokenizer.update(tokenizer_options)
    return cfg


@pytest.fixture(scope="module")
def model():
    cfg = tiny_config()
    cfg.max_objects = 3
    torch.manual_seed(0)
    return MODELS.build(cfg)


def make_sample() -> DetDataSample:
    sample = DetDataSample(
        metainfo=dict(
            img_id=1,
            img_shape=(CANVAS, CANVAS),
            pad_shape=(CANVAS, CANVAS),
            batch_input_shape=(CANVAS, CANVAS),
            ori_shape=(2 * CANVAS, 2 * CANVAS),
            scale_factor=(0.5, 0.5),
            instance_attributes=[{"color": "red", "size": "small"}, {"color": "blue", "size": "large"}],
        )
    )
    gt = InstanceData()
    gt.bboxes = torch.tensor([[5.0, 5.0, 20.0, 25.0], [30.0, 30.0, 60.0, 50.0]])
    gt.labels = torch.tensor([0, 2])
    gt.masks = PolygonMasks(
        [[np.array([5, 5, 20, 5, 20, 25, 5, 25.0])], [np.array([30, 30, 60, 30, 45, 50.0])]], CANVAS, CANVAS
    )
    sample.gt_instances = gt
    return sample


def test_loss_is_finite_and_reaches_every_part(model):
    model.train()
    losses = model.loss(torch.randn(2, 3, CANVAS, CANVAS), [make_sample(), make_sample()])
    token_losses = {"loss_token_cls", "loss_token_bbox", "loss_token_iou"}
    earlier_layers = range(model.image_tokenizer.decoder.num_layers - 1)  # d0., d1., ...: auxiliary losses
    assert set(losses) == {
        "loss_slot_cls",
        "loss_slot_bin",
        "loss_slot_l1",
        "loss_sequence",
        *token_losses,
        *(f"d{layer}.{name}" for layer in earlier_layers for name in token_losses),
    }
    assert all(torch.isfinite(v) for v in losses.values())
    model.zero_grad()
    sum(losses.values()).backward()
    for name in (
        "image_tokenizer.backbone",
        "image_tokenizer.text_encoder",
        "image_tokenizer.box_heads",
        "image_tokenizer.class_proj",
        "llm.llm",
        "llm.class_query",
    ):
        grads = [p.grad for n, p in model.named_parameters() if n.startswith(name) and p.grad is not None]
        assert grads and any(g.abs().sum() > 0 for g in grads), f"no gradient reaches {name}"
    assert model.slot_embed.grad.abs().sum() > 0


def generate(model: VisionLLM, inputs: torch.Tensor, request=None, mode: str | None = None):
    """``model.generate`` on one image described by ``make_sample``'s metainfo (scale 0.5)."""
    request = request or model.tasks[model.eval_task].request_for_eval(CLASSES)
    (prediction,) = model.generate(inputs, [request], [make_sample().metainfo], mode)
    return prediction


@pytest.mark.parametrize("mode", ["parallel", "autoregressive", "tokens"])
def test_every_decoder_produces_predictions_in_original_pixels(model, mode):
    model.eval()
    pred = generate(model, torch.randn(1, 3, CANVAS, CANVAS), mode=mode)
    assert pred.decode_mode == mode
    assert len(pred.boxes) == len(pred.scores) == len(pred.labels) == len(pred.class_names)
    if mode != "autoregressive":  # the best (slot or token, class) pairs, most probable first
        assert len(pred) + sum(pred.dropped_tokens.values()) == model.max_objects
        assert (pred.scores[:-1] >= pred.scores[1:]).all()
    assert (pred.boxes >= 0).all() and (pred.boxes <= 2 * CANVAS).all()
    assert ((pred.scores >= 0) & (pred.scores <= 1)).all()
    assert set(pred.class_names) <= set(CLASSES)
    assert pred.labels.tolist() == [CLASSES.index(name) for name in pred.class_names]
    # the eval task is segmentation: every object carries a polygon and an RLE mask of the original size
    assert len(pred.polygons) == len(pred)
    assert all(m["size"] == [2 * CANVAS, 2 * CANVAS] for m in pred.masks)


def test_the_runners_predict_hands_generate_answers_to_mmdet_metrics(model):
    """``predict`` (the Runner's path) is ``generate`` on the eval request, as mmdet ``pred_instances``."""
    model.eval()
    inputs = torch.randn(1, 3, CANVAS, CANVAS)
    want = generate(model, inputs)
    (out,) = model.predict(inputs, [make_sample()])
    got = out.pred_instances
    assert torch.equal(got.bboxes, torch.as_tensor(want.boxes, dtype=torch.float32))
    assert torch.equal(got.scores, torch.as_tensor(want.scores, dtype=torch.float32))
    assert got.labels.tolist() == want.labels.tolist()
    assert got.masks == want.masks


def test_autoregressive_output_follows_the_grammar(model):
    """Constrained decoding never emits a token the parser has to drop."""
    model.eval()
    out = generate(model, torch.randn(1, 3, CANVAS, CANVAS), mode="autoregressive")
    assert out.dropped_tokens.get("unexpected_token", 0) == 0
    assert out.dropped_tokens.get("class_out_of_range", 0) == 0
    assert len(out) + sum(out.dropped_tokens.values()) <= model.max_objects


def test_custom_request_restricts_classes(model):
    """A request naming one class can only yield that class, whatever the dataset has."""
    model.eval()
    request = model.tasks["detect"].build_request(["dog"])
    out = generate(model, torch.randn(1, 3, CANVAS, CANVAS), request)
    assert set(out.class_names) <= {"dog"}
    assert (out.labels == -1).all()  # "dog" is not a dataset class
    assert out.polygons is None and out.masks is None  # detection predicts no shapes


def test_class_pointer_follows_the_names(model):
    """Swapping two names in the instruction swaps which <ck> the pointer favours for a fixed state."""
    task = model.tasks["detect"]
    keys = []
    for classes in (["circle", "square"], ["square", "circle"]):
        query = model._query(task, task.build_request(classes))
        ids = torch.tensor([query.prompt_ids])
        embeds = model.llm.embed(ids)[0]
        keys.append(query.class_keys(embeds * 0, embeds, 0))  # the name-embedding half of the keys
    torch.testing.assert_close(keys[0], keys[1].flip(0))


def test_loss_falls_back_to_another_task_when_grounding_has_no_referent():
    """An image without objects cannot be grounded; training draws the next task instead of failing."""
    register_all_modules()
    cfg = Config.fromfile(REPO / "configs/_base_/models/visionllm_tiny.py").model
    cfg.update(class_names=CLASSES, num_slots=2, eval_task="detect")
    cfg.tasks = dict(ground=dict(weight=1.0), detect=dict(weight=1e-9))
    empty = make_sample()
    empty.gt_instances = empty.gt_instances[torch.zeros(2, dtype=torch.bool)]
    empty.set_metainfo(dict(instance_attributes=[]))
    losses = MODELS.build(cfg).loss(torch.randn(1, 3, CANVAS, CANVAS), [empty])
    assert all(torch.isfinite(v) for v in losses.values())


def test_token_loss_matches_each_object_to_one_token_and_vanishes_when_tokens_are_right():
    register_all_modules()
    loss = MODELS.build(dict(type="TokenDetectionLoss"))
    gt_boxes = torch.tensor([[8.0, 8.0, 24.0, 40.0], [32.0, 16.0, 64.0, 32.0]])  # xyxy, canvas 64 x 64
    gt_classes = torch.tensor([1, 0])
    # token 2 sits exactly on object 0 and token 0 on object 1; token 1 is elsewhere
    exact = torch.tensor([[48.0, 24.0, 32.0, 16.0], [10.0, 50.0, 8.0, 8.0], [16.0, 24.0, 16.0, 32.0]]) / 64
    confident = torch.full((3, 2), -9.0)
    confident[2, 1] = confident[0, 0] = 9.0  # each matched token names its object's class
    # one decoder layer, one image: boxes (L,B,M,4), class logits per image (L,M,n)
    right = loss(exact[None, None], [confident[None]], [gt_boxes], [gt_classes], canvas=(64, 64))
    assert right["loss_token_bbox"] < 1e-6 and right["loss_token_iou"] < 1e-6
    assert right["loss_token_cls"] < 1e-3
    swapped = confident[:, [1, 0]]  # the right boxes name the wrong classes: some loss must rise
    wrong = loss(exact[None, None], [swapped[None]], [gt_boxes], [gt_classes], canvas=(64, 64))
    assert sum(wrong.values()) > 1.0
    moved = loss((exact + 0.1)[None, None], [confident[None]], [gt_boxes], [gt_classes], canvas=(64, 64))
    assert moved["loss_token_bbox"] > 0.1 and moved["loss_token_iou"] > 0.1
    # two layers, the first one off: each layer is scored on its own, the earlier one under "d0."
    layers = loss(
        torch.stack([exact + 0.1, exact])[:, None],
        [torch.stack([confident, confident])],
        [gt_boxes],
        [gt_classes],
        canvas=(64, 64),
    )
    assert set(layers) == {
        f"{prefix}loss_token_{n}" for prefix in ("", "d0.") for n in ("cls", "bbox", "iou")
    }
    torch.testing.assert_close(layers["loss_token_bbox"], right["loss_token_bbox"])
    torch.testing.assert_close(layers["d0.loss_token_bbox"], moved["loss_token_bbox"])


def test_token_loss_one_to_many_on_auxiliary_layers_and_iou_aware_targets():
    """``aux_one_to_many``: an earlier layer whose tokens find each object twice is right, the last layer
    (one-to-one) is not; ``iou_aware_power``: a matched token's class target is its box's IoU ** p."""
    register_all_modules()
    gt_boxes = torch.tensor([[8.0, 8.0, 24.0, 40.0], [32.0, 16.0, 64.0, 32.0]])  # xyxy, canvas 64 x 64
    gt_classes = torch.tensor([1, 0])
    on_0, on_1 = [16.0, 24.0, 16.0, 32.0], [48.0, 24.0, 32.0, 16.0]  # cx, cy, w, h of each object
    twice = torch.tensor([on_1, on_1, on_0, on_0]) / 64  # two tokens on each object
    confident = torch.full((4, 2), -9.0)
    confident[[0, 1], 0] = confident[[2, 3], 1] = 9.0
    layers = torch.stack([twice, twice])[:, None]  # (L=2, B=1, M=4, 4)
    logits = [torch.stack([confident, confident])]

    def losses(**kwargs):
        loss = MODELS.build(dict(type="TokenDetectionLoss", **kwargs))
        return loss(layers, logits, [gt_boxes], [gt_classes], canvas=(64, 64))

    one_to_one, one_to_many = losses(), losses(aux_one_to_many=2)
    assert one_to_one["d0.loss_token_cls"] > 1.0  # the second token on each object is a false positive
    assert one_to_many["d0.loss_token_cls"] < 1e-3 and one_to_many["d0.loss_token_bbox"] < 1e-6
    torch.testing.assert_close(one_to_many["loss_token_cls"], one_to_one["loss_token_cls"])  # last: 1:1

    # one token, half as wide as its object (IoU 0.5): the loss is lowest where its score is 0.5 ** p
    half = torch.tensor([[12.0, 24.0, 8.0, 32.0]]) / 64
    loss = MODELS.build(dict(type="TokenDetectionLoss", iou_aware_power=0.5))

    def class_loss(probability):
        logit = torch.full((1, 1), torch.logit(torch.tensor(probability)).item())
        return loss(half[None, None], [logit[None]], [gt_boxes[:1]], [torch.tensor([0])], (64, 64))[
            "loss_token_cls"
        ]

    best = 0.5**0.5
    assert class_loss(best) < class_loss(best - 0.1) and class_loss(best) < class_loss(best + 0.1)
    assert class_loss(0.99) > class_loss(best)  # a sure score fits a box this loose less well


def test_every_decoder_layer_refines_the_previous_box_and_is_trained():
    """With several tokenizer decoder layers, layer k's boxes are offsets from layer k-1's (Deformable DETR's
    box refinement) and every layer's detections get a loss, so gradients reach every box head."""
    torch.manual_seed(0)
    model = MODELS.build(tiny_config(num_decoder_layers=3))
    tokenizer = model.image_tokenizer
    for box_head in tokenizer.box_heads:  # start from non-zero offsets, so refinement is visible
        torch.nn.init.normal_(box_head.layers[-1].weight, std=0.1)
    images = torch.randn(2, 3, CANVAS, CANVAS)
    with torch.no_grad():
        tokens = tokenizer(images, ["find circles", "find squares"])
    assert tokens.layer_features.shape[:2] == tokens.layer_boxes.shape[:2] == (3, 2)
    for layer in (1, 2):
        offsets = tokenizer.box_heads[layer](tokens.layer_features[layer])
        torch.testing.assert_close(tokens.layer_boxes[layer], refine(offsets, tokens.layer_boxes[layer - 1]))
    # inference reads the decoder's own refined boxes, training recomputes them with gradients: same boxes
    tokenizer.eval()  # no dropout
    with_gradients = tokenizer(images, ["find circles", "find squares"]).layer_boxes
    with torch.no_grad():
        without = tokenizer(images, ["find circles", "find squares"]).layer_boxes
    tokenizer.train()
    assert with_gradients.requires_grad
    torch.testing.assert_close(with_gradients.detach(), without)
    losses = model.loss(images, [make_sample(), make_sample()])
    assert {"d0.loss_token_iou", "d1.loss_token_iou", "loss_token_iou"} <= set(losses)
    sum(losses.values()).backward()
    for layer, box_head in enumerate(tokenizer.box_heads):
        assert box_head.layers[0].weight.grad.abs().sum() > 0, f"no gradient reaches box head {layer}"


def test_two_stage_queries_start_at_the_best_scoring_encoder_proposals_which_are_trained():
    """With ``two_stage`` every encoder token proposes a box around its own cell; the decoder starts from
    the ``num_queries`` proposals that score highest, and the proposals get their own set loss."""
    torch.manual_seed(0)
    model = MODELS.build(tiny_config(two_stage=True, num_decoder_layers=2))
    tokenizer = model.image_tokenizer
    torch.nn.init.normal_(tokenizer.proposal_box.layers[-1].weight, std=0.1)
    torch.nn.init.normal_(tokenizer.box_heads[0].layers[-1].weight, std=0.1)
    images = torch.randn(2, 3, CANVAS, CANVAS)
    scores, boxes = [], []  # every encoder token's proposal, read off the heads
    tokenizer.proposal_score.register_forward_hook(lambda m, args, out: scores.append(out))
    tokenizer.proposal_box.register_forward_hook(lambda m, args, out: boxes.append(out))
    with torch.no_grad():
        tokens = tokenizer(images, ["find circles", "find squares"])
    # anchors: one per cell of each level (strides 8, 16, 32 here), centred, 0.05 of the input doubling
    shapes = torch.tensor([[8, 8], [4, 4], [2, 2]])
    anchors = anchor_boxes(shapes, torch.float32)
    assert anchors.shape == (84, 4)
    torch.testing.assert_close(anchors[0], torch.tensor([1 / 16, 1 / 16, 0.05, 0.05]))
    torch.testing.assert_close(anchors[64], torch.tensor([1 / 8, 1 / 8, 0.1, 0.1]))
    torch.testing.assert_close(anchors[-1], torch.tensor([3 / 4, 3 / 4, 0.2, 0.2]))
    all_boxes = refine(boxes[0], anchors)  # (B,N,4)
    best = scores[0].squeeze(-1).topk(tokenizer.num_queries, dim=1)
    torch.testing.assert_close(tokens.proposal_logits.squeeze(-1), best.values)
    chosen = best.indices[..., None].expand(-1, -1, 4)
    torch.testing.assert_close(tokens.proposal_boxes, all_boxes.gather(1, chosen))
    # the first decoder layer refines the selected proposal
    offsets = tokenizer.box_heads[0](tokens.layer_features[0])
    torch.testing.assert_close(tokens.layer_boxes[0], refine(offsets, tokens.proposal_boxes))
    losses = model.loss(images, [make_sample(), make_sample()])
    assert {"enc.loss_token_cls", "enc.loss_token_bbox", "enc.loss_token_iou"} <= set(losses)
    sum(losses.values()).backward()
    for head in (tokenizer.proposal_score, tokenizer.proposal_box.layers[0], tokenizer.query_pos_proj[0]):
        assert head.weight.grad.abs().sum() > 0
    with torch.no_grad(), pytest.raises(ValueError, match="at least num_queries"):
        tokenizer.eval()(torch.randn(1, 3, 16, 16), ["find circles"])  # 4 + 1 + 1 encoder tokens < 16
    cfg = tiny_config(two_stage=True)
    cfg.token_loss = None
    cfg.decode_mode = "parallel"
    with pytest.raises(ValueError, match="two_stage needs token_loss"):
        MODELS.build(cfg)


def test_text_features_are_cached_at_inference_and_dropped_when_the_weights_may_change():
    """In eval mode without gradients each distinct text is encoded once, with the features a batch
    encoding gives; loading weights or switching mode drops them, so new weights are always read."""
    torch.manual_seed(0)
    encoder = MODELS.build(tiny_config()).image_tokenizer.text_encoder.eval()
    calls = []
    encoder.model.register_forward_hook(lambda module, args, output: calls.append(1))
    texts = ["find every circle and square", "find circles", "find every circle and square"]
    expected, expected_padding = encoder(texts, torch.device("cpu"))  # gradients on: not cached
    with torch.no_grad():
        for _ in range(2):
            hidden, padding = encoder(texts, torch.device("cpu"))
            torch.testing.assert_close(padding, expected_padding)
            torch.testing.assert_close(hidden[~padding], expected[~expected_padding].detach())
        assert len(calls) == 2, "the second round should be read from the cache"
        state = {k: v + 0.1 for k, v in encoder.state_dict().items() if v.is_floating_point()}
        encoder.load_state_dict(state, strict=False)
        changed, _ = encoder(texts, torch.device("cpu"))
        assert len(calls) == 3 and not torch.allclose(changed[~padding], hidden[~padding])
        encoder.train().eval()
        encoder(texts, torch.device("cpu"))
        assert len(calls) == 4


def test_slot_loss_scores_each_requested_class_on_its_own():
    """A slot's loss on one class does not depend on which other classes the request lists (a softmax
    over the list would move probability onto "dog" when "cat" is left out), and padding is not scored."""
    register_all_modules()
    loss = MODELS.build(dict(type="SlotLoss"))
    bins = torch.zeros(0, 8)
    no_bins = torch.zeros(0, dtype=torch.long)
    # image 1: 2 slots over [dog, cat], slot 0 matched to dog; image 2: one class, nothing matched
    logits = torch.tensor([[2.0, -1.0], [0.5, 3.0]], requires_grad=True)
    targets = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    other = torch.tensor([[-4.0], [1.0]])
    listed = loss([logits, other], [targets, torch.zeros(2, 1)], bins, no_bins)["loss_slot_cls"]
    (grad_listed,) = torch.autograd.grad(listed, logits)
    # the same request without "cat": the dog column's loss and gradient are unchanged
    dog = logits[:, :1]
    alone = loss([dog, other], [targets[:, :1], torch.zeros(2, 1)], bins, no_bins)["loss_slot_cls"]
    (grad_alone,) = torch.autograd.grad(alone, logits)
    torch.testing.assert_close(grad_alone[:, 0], grad_listed[:, 0])
    assert alone < listed  # the cat column's false score (slot 1, logit 3) was a cost of its own
    # image 2's one class is padded to the batch's two columns: the padding adds nothing (it would add
    # two focal terms of a zero logit if it were scored)
    first = loss([logits], [targets], bins, no_bins)["loss_slot_cls"]
    second = loss([other], [torch.zeros(2, 1)], bins, no_bins)["loss_slot_cls"]  # nothing matched: / 1
    torch.testing.assert_close(listed, first + second)


def test_parallel_slots_start_from_the_most_confident_tokens_and_their_detections(model):
    model.eval()
    request = model.tasks["detect"].request_for_eval(CLASSES)
    query = model._query(model.tasks["detect"], request)
    with torch.no_grad():
        tokens = model.image_tokenizer(torch.randn(1, 3, CANVAS, CANVAS), [request.plain_text])
        class_logits = model.image_tokenizer.class_logits(
            tokens.features, model.image_tokenizer.name_features([request.classes], tokens.embeds.device)
        )
        slots, priors, seeds = model._slot_inputs(tokens, class_logits, [query], [CANVAS])
    num_slots = model.slot_embed.shape[0]
    length = model.tasks["detect"].object_length
    assert len(slots) == 1 and slots[0].shape == (num_slots, length, model.llm.hidden_size)
    assert len(priors) == 1
    chosen = class_logits[0].max(-1).values.topk(num_slots).indices.sort().values
    vocab = model.vocab
    # class prior: the chosen tokens' class logits on <c0>..<c2>, nothing on <noobj>
    torch.testing.assert_close(priors[0][:, 0, vocab.class_local_ids(len(CLASSES))], class_logits[0][chosen])
    assert (priors[0][:, 0, vocab.to_local(vocab.noobj_id)] == 0).all()
    # location prior: peaks at the bins of each chosen token's box
    box = tokens.boxes[0, chosen]
    xyxy = torch.cat([box[:, :2] - box[:, 2:] / 2, box[:, :2] + box[:, 2:] / 2], 1) * CANVAS
    peaks = priors[0][:, 1:, vocab.bin_local_ids()].argmax(-1)
    expected_coords = model.tasks["detect"].geometry_from_boxes(xyxy.numpy(), CANVAS)
    expected = torch.as_tensor(expected_coords).round()
    assert (peaks - expected).abs().max() <= 1
    # the seed detection the slot matcher uses: the same tokens' probabilities and locations
    torch.testing.assert_close(seeds[0][0], class_logits[0][chosen].sigmoid())
    torch.testing.assert_close(seeds[0][1].double(), torch.as_tensor(expected_coords))


def test_parallel_slots_of_a_mixed_batch_equal_each_image_alone(model):
    """Box and polygon requests in one batch get the logits each would get alone (one LLM pass per task,
    so a box request is not padded to a polygon request's slot length)."""
    model.eval()
    requests = [
        model.tasks["segment"].request_for_eval(CLASSES),
        model.tasks["detect"].request_for_eval(CLASSES[:2]),
        model.tasks["detect"].request_for_eval(CLASSES),
    ]
    queries = [model._query(model.tasks[r.task], r) for r in requests]
    visual = torch.randn(len(queries), model.image_tokenizer.num_queries, model.llm.hidden_size)
    slot_rows = torch.randn(len(queries), model.slot_embed.shape[0], model.llm.hidden_size) * 0.02
    slots = [per_token(rows, q.task.object_length) for rows, q in zip(slot_rows, queries)]
    lengths = []
    handle = model.llm.register_forward_hook(lambda module, args, out: lengths.append(args[0].shape[:2]))
    with torch.no_grad():
        batched = parallel_slot_logits(model.llm, visual, queries, slots)
        handle.remove()
        num_slots = slot_rows.shape[1]
        expected = {
            name: max(
                len(q.prompt_ids) + num_slots * q.task.object_length for q in queries if q.task.name == name
            )
            for name in ("segment", "detect")
        }
        assert lengths == [(1, expected["segment"]), (2, expected["detect"])]
        for i, query in enumerate(queries):
            (alone,) = parallel_slot_logits(model.llm, visual[i : i + 1], [query], slots[i : i + 1])
            assert batched[i].shape == (num_slots, query.task.object_length, model.vocab.num_tokens)
            torch.testing.assert_close(batched[i], alone, atol=1e-4, rtol=1e-4)


def test_parallel_decoding_writes_boxes_from_the_seeds_and_polygons_from_the_llm(model):
    """A box task's location tokens are its slots' seed bins (``locations_from_seed``); a polygon task's
    are the LLM's most probable bins, whatever the seeds say."""
    model.eval()
    vocab = model.vocab
    requests = [model.tasks[name].request_for_eval(CLASSES) for name in ("detect", "segment")]
    queries = [model._query(model.tasks[r.task], r) for r in requests]
    visual = torch.randn(2, model.image_tokenizer.num_queries, model.llm.hidden_size)
    num_slots = model.slot_embed.shape[0]
    slots = [
        per_token(torch.randn(num_slots, model.llm.hidden_size) * 0.02, q.task.object_length) for q in queries
    ]
    seeds = [torch.full((num_slots, q.task.object_length - 1), 7.2) for q in queries]
    with torch.no_grad():
        from_seeds = decode_parallel(
            model.llm, model.grammar, visual, queries, slots, 3, seed_locations=seeds
        )
        from_llm = decode_parallel(model.llm, model.grammar, visual, queries, slots, 3)
    detect_bins = [t for t in from_seeds[0].token_ids if vocab.is_bin(t)]
    assert detect_bins and set(detect_bins) == {vocab.bin_id(7)}
    assert from_llm[0].token_ids != from_seeds[0].token_ids
    assert from_seeds[1].token_ids == from_llm[1].token_ids  # the polygon ignores the seeds


def test_parallel_polygons_report_their_seeds_boxes(model):
    """``boxes_from_seed``: each polygon object comes with its slot's seed box (the extent of the seed's
    outline); box answers carry none (their tokens are the seed's box already)."""
    model.eval()
    requests = [model.tasks[name].request_for_eval(CLASSES) for name in ("segment", "detect")]
    queries = [model._query(model.tasks[r.task], r) for r in requests]
    num_slots = model.slot_embed.shape[0]
    corners = torch.rand(num_slots, 2) * 60
    boxes = torch.cat([corners, corners + torch.rand(num_slots, 2) * 40 + 5], 1)  # (N,4) distinct, in bins
    seeds = [
        torch.as_tensor(q.task.geometry_from_boxes(boxes.numpy(), model.vocab.num_bins), dtype=torch.float32)
        for q in queries
    ]
    visual = torch.randn(2, model.image_tokenizer.num_queries, model.llm.hidden_size)
    slots = [
        per_token(torch.randn(num_slots, model.llm.hidden_size) * 0.02, q.task.object_length) for q in queries
    ]
    with torch.no_grad():
        polygons, detections = decode_parallel(
            model.llm, model.grammar, visual, queries, slots, 3, seed_locations=seeds
        )
    assert detections.object_boxes is None and len(polygons.object_boxes) == 3
    for box in polygons.object_boxes:  # fractional bins: bin k is centred on pixel k + 0.5 here
        assert torch.isclose(boxes, torch.tensor(box) + 0.5, atol=1e-4).all(1).any()


def test_tokens_decoding_reads_the_tokenizers_detections(model):
    """The tokens decoder writes each token's box as bins: a box from the tokenizer comes back out."""
    model.eval()
    request = model.tasks["detect"].request_for_eval(CLASSES)
    inputs = torch.randn(1, 3, CANVAS, CANVAS)
    out = generate(model, inputs, request, "tokens")
    with torch.no_grad():
        tokens = model.image_tokenizer(inputs, [request.plain_text])
        probs = model.image_tokenizer.class_logits(
            tokens.features, model.image_tokenizer.name_features([request.classes], tokens.embeds.device)
        )[0].sigmoid()
    token, class_index = divmod(int(probs.flatten().argmax()), len(CLASSES))
    best = model._token_boxes(tokens)[0, token].clamp(0, CANVAS) * 2  # original pixels: scale 0.5
    assert out.class_names[0] == CLASSES[class_index]
    assert out.scores[0] == pytest.approx(float(probs.max()), abs=1e-6)
    bin_size = 2 * CANVAS / model.vocab.num_bins
    assert (torch.as_tensor(out.boxes[0]) - best).abs().max() <= bin_size


def test_decode_modes_are_checked_when_built_and_when_asked_for():
    register_all_modules()
    cfg = Config.fromfile(REPO / "configs/_base_/models/visionllm_tiny.py").model
    cfg.class_names = CLASSES
    with pytest.raises(ValueError, match="'beam' is not one of"):
        MODELS.build({**cfg, "decode_mode": "beam"})
    with pytest.raises(ValueError, match="needs token_loss"):
        MODELS.build({**cfg, "decode_mode": "tokens", "token_loss": None})
    untrained_tokens = MODELS.build({**cfg, "token_loss": None}).eval()
    with pytest.raises(ValueError, match="needs token_loss"):
        generate(untrained_tokens, torch.randn(1, 3, CANVAS, CANVAS), mode="tokens")


def test_a_checkpoint_with_the_single_box_head_of_earlier_versions_loads_strictly():
    """Before box refinement the tokenizer had one ``box_head``: such checkpoints load into one layer."""
    cfg = tiny_config(num_decoder_layers=1)
    torch.manual_seed(0)
    saved, loaded = MODELS.build(cfg), MODELS.build(cfg)
    old_style = {k.replace("box_heads.0.", "box_head."): v for k, v in saved.state_dict().items()}
    assert any(".box_head." in k for k in old_style)
    loaded.load_state_dict(old_style, strict=True)
    for key, value in saved.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value)


def test_num_layers_keeps_the_first_decoder_layers_of_the_llm():
    from visionllm.models.llm import LanguageModel

    config = tiny_config().llm
    torch.manual_seed(0)
    full = LanguageModel(**config)
    torch.manual_seed(0)
    shallow = LanguageModel(**config, num_layers=1)
    assert len(shallow.decoder.layers) == shallow.decoder.config.num_hidden_layers == 1
    torch.testing.assert_close(shallow.decoder.layers[0].state_dict(), full.decoder.layers[0].state_dict())
    with pytest.raises(ValueError, match=r"llm.num_layers must be in \[1, 2\], got 3"):
        LanguageModel(**config, num_layers=3)
