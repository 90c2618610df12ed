"""SlotRefiner: seed-point features into a slot's location tokens, offsets from the seed out of them."""

from __future__ import annotations

import pytest
import torch

from tests.test_model import CANVAS, CLASSES, make_sample, tiny_config
from visionllm.models.decoding import decode_parallel, per_token
from visionllm.models.slot_refiner import SlotRefiner
from visionllm.registry import MODELS


def test_a_new_refiner_adds_nothing():
    """Zero at first: a model with a refiner starts as the seeds' prior, as one without."""
    refiner = SlotRefiner(embed_dims=8, llm_dims=16, num_levels=2, max_pairs=4, offset_radius=3)
    maps = [torch.randn(1, 8, 8, 8), torch.randn(1, 8, 4, 4)]
    (inputs,) = refiner.location_inputs(maps, [torch.rand(3, 2, 2) * 32], (32, 32))
    assert inputs.shape == (3, 4, 16) and (inputs == 0).all()
    assert (refiner.offset_logits(torch.randn(3, 4, 16), torch.rand(3, 4) * 15, 16) == 0).all()


def test_offsets_land_on_the_seed_bin_plus_the_offset_and_nothing_falls_off_the_canvas():
    radius, num_bins = 3, 16
    refiner = SlotRefiner(8, 16, 1, max_pairs=1, vertex_features=False, offset_radius=radius)
    with torch.no_grad():
        refiner.offset_head.bias.copy_(torch.arange(1.0, 2 * radius + 2))  # offset d -> logit d + R + 1
    logits = refiner.offset_logits(torch.randn(1, 2, 16), torch.tensor([[10.4, 1.2]]), num_bins)
    assert logits.shape == (1, 2, num_bins)
    # seed 10.4 -> bin 10: offsets -3..3 land on bins 7..13, nothing elsewhere
    torch.testing.assert_close(logits[0, 0, 7:14], torch.arange(1.0, 8.0))
    assert (logits[0, 0, :7] == 0).all() and (logits[0, 0, 14:] == 0).all()
    # seed 1.2 -> bin 1: offsets -3 and -2 would land off the canvas and are dropped
    torch.testing.assert_close(logits[0, 1, :5], torch.arange(3.0, 8.0))
    assert (logits[0, 1, 5:] == 0).all()
    assert refiner.vertex_mlp is None and refiner.location_inputs([], [], (32, 32)) is None


def test_location_inputs_read_the_maps_at_each_seed_point_and_know_their_pair():
    torch.manual_seed(0)
    refiner = SlotRefiner(embed_dims=4, llm_dims=8, num_levels=1, max_pairs=3)
    for parameter in refiner.parameters():
        torch.nn.init.normal_(parameter)
    maps = [torch.randn(2, 4, 8, 8)]
    points = [
        torch.tensor([[[4.0, 4.0], [20.0, 12.0], [4.0, 4.0]]]),
        torch.tensor([[[4.0, 4.0], [28.0, 28.0]]]),
    ]
    first, second = refiner.location_inputs(maps, points, (32, 32))
    assert first.shape == (1, 6, 8) and second.shape == (1, 4, 8)  # a polygon's 3 pairs, a box's 2
    torch.testing.assert_close(first[:, 0::2], first[:, 1::2])  # a pair's x and y token read the same
    # the same point and pair in another image reads that image's map; the same point as another pair
    # differs by the pairs' embeddings only
    assert not torch.allclose(first[0, 0], second[0, 0])
    torch.testing.assert_close(
        first[0, 4] - first[0, 0], refiner.pair_embed.weight[2] - refiner.pair_embed.weight[0]
    )
    with pytest.raises(ValueError, match="4 \\(x, y\\) pairs but the refiner was built for at most 3"):
        refiner.location_inputs(maps, [torch.zeros(1, 4, 2)], (32, 32))


@pytest.fixture(scope="module")
def refined():
    cfg = tiny_config()
    cfg.update(max_objects=3, slot_vertex_features=True, slot_offset_radius=4)
    torch.manual_seed(0)
    return MODELS.build(cfg)


def test_the_refiner_trains_with_the_slots(refined):
    refined.train()
    losses = refined.loss(torch.randn(2, 3, CANVAS, CANVAS), [make_sample(), make_sample()])
    refined.zero_grad()
    sum(losses.values()).backward()
    # zero-initialised outputs: their own weights get gradients first
    for name in ("vertex_mlp.layers.1.weight", "pair_embed.weight", "offset_head.weight"):
        grad = refined.slot_refiner.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_parallel_polygons_follow_the_offsets(refined):
    """With the offset +2 far ahead of every other logit, each decoded vertex is its seed bin + 2."""
    refined.eval()
    vocab = refined.vocab
    request = refined.tasks["segment"].request_for_eval(CLASSES)
    query = refined._query(refined.tasks["segment"], request)
    num_slots = refined.slot_embed.shape[0]
    seeds = torch.rand(num_slots, query.task.object_length - 1) * 100 + 10
    with torch.no_grad():
        refined.slot_refiner.offset_head.bias.copy_(torch.zeros(9).index_fill(0, torch.tensor(6), 100.0))
        visual = torch.randn(1, refined.image_tokenizer.num_queries, refined.llm.hidden_size)
        (decoded,) = decode_parallel(
            refined.llm,
            refined.grammar,
            visual,
            [query],
            [per_token(refined.slot_embed, query.task.object_length)],
            num_slots,
            location_offsets=refined._location_offsets([(None, seeds)]),
        )
    step = query.task.object_length
    written = torch.tensor(decoded.token_ids[:-1]).view(-1, step)[:, 1:]  # (objects, L-1) global ids
    expected = {tuple((seeds[k].round().long() + 2).tolist()) for k in range(num_slots)}
    assert {tuple(vocab.to_local(row.tolist())) for row in written} <= expected
    with torch.no_grad():
        torch.nn.init.zeros_(refined.slot_refiner.offset_head.bias)


def test_the_refiner_needs_seeds():
    cfg = tiny_config()
    cfg.update(token_loss=None, decode_mode="parallel", slot_offset_radius=4)
    with pytest.raises(ValueError, match="need token_loss"):
        MODELS.build(cfg)
