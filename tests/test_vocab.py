"""The task vocabulary: contiguous ids, persistence, id and coordinate conversions."""

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from visionllm.pretrained import minilm_dir
from visionllm.vocab import FORMAT_TOKENS, STRUCTURAL_TOKENS, TaskVocab, task_token_names


@pytest.fixture()
def tokenizer():
    return AutoTokenizer.from_pretrained(minilm_dir())


def test_task_tokens_are_one_contiguous_block_after_the_base_vocabulary(tokenizer):
    base_size = len(tokenizer)
    vocab = TaskVocab(tokenizer, num_bins=64, max_classes=10)
    names = task_token_names(64, 10)
    assert vocab.first_id == base_size
    assert vocab.num_tokens == len(names) == 64 + 10 + len(STRUCTURAL_TOKENS) + len(FORMAT_TOKENS)
    assert tokenizer.convert_tokens_to_ids(names) == list(range(base_size, base_size + len(names)))
    assert [vocab.bin_id(b) for b in range(64)] == list(range(vocab.first_id, vocab.first_id + 64))
    assert vocab.class_id(0) == vocab.first_id + 64
    for name in (*STRUCTURAL_TOKENS, *FORMAT_TOKENS):
        assert vocab.token_id(name) == tokenizer.convert_tokens_to_ids(name)
    assert (vocab.image_id, vocab.eoo_id, vocab.noobj_id, vocab.region_id, vocab.point_id) == tuple(
        tokenizer.convert_tokens_to_ids(["<image>", "<eoo>", "<noobj>", "<region>", "<point>"])
    )


def test_wrapping_the_same_tokenizer_twice_adds_nothing(tokenizer):
    first = TaskVocab(tokenizer, num_bins=32, max_classes=5)
    size = len(tokenizer)
    second = TaskVocab(tokenizer, num_bins=32, max_classes=5)
    assert len(tokenizer) == size and second.first_id == first.first_id


def test_a_partial_overlap_with_existing_tokens_is_refused(tokenizer):
    tokenizer.add_tokens(["<image>"], special_tokens=True)
    with pytest.raises(ValueError, match="contiguous"):
        TaskVocab(tokenizer)


def test_task_tokens_survive_tokenization_of_an_instruction(tokenizer):
    vocab = TaskVocab(tokenizer, num_bins=16, max_classes=4)
    ids = tokenizer("Detect Cup <c0>, knife <c1>.<bin3><eoo>", add_special_tokens=False)["input_ids"]
    assert vocab.class_id(0) in ids and vocab.class_id(1) in ids
    assert ids[-2:] == [vocab.bin_id(3), vocab.eoo_id]


def test_save_and_load_give_identical_ids(tokenizer, tmp_path):
    vocab = TaskVocab(tokenizer, num_bins=128, max_classes=20)
    vocab.save_pretrained(tmp_path)
    loaded = TaskVocab.from_pretrained(tmp_path)
    assert (loaded.num_bins, loaded.max_classes, loaded.first_id) == (128, 20, vocab.first_id)
    names = task_token_names(128, 20)
    assert loaded.tokenizer.convert_tokens_to_ids(names) == vocab.tokenizer.convert_tokens_to_ids(names)
    text = "Segment dog <c0> and cat <c1>. <image> <region> <point> <bin127>"
    assert loaded.tokenizer(text)["input_ids"] == vocab.tokenizer(text)["input_ids"]


def test_local_and_global_ids_round_trip_for_ints_lists_and_tensors(tokenizer):
    vocab = TaskVocab(tokenizer, num_bins=8, max_classes=3)
    assert vocab.to_local(vocab.eoo_id) == 8 + 3 + STRUCTURAL_TOKENS.index("<eoo>")
    assert vocab.to_global(vocab.to_local([vocab.bin_id(2), vocab.class_id(1)])) == [
        vocab.bin_id(2),
        vocab.class_id(1),
    ]
    local = torch.arange(vocab.num_tokens)
    assert torch.equal(vocab.to_local(vocab.to_global(local)), local)
    assert torch.equal(
        vocab.to_global(vocab.class_local_ids(3)), torch.tensor([vocab.class_id(k) for k in range(3)])
    )
    assert torch.equal(
        vocab.to_global(vocab.bin_local_ids()), torch.tensor([vocab.bin_id(b) for b in range(8)])
    )
    with pytest.raises(ValueError):
        vocab.class_local_ids(4)


def test_bin_and_class_predicates_partition_the_block(tokenizer):
    vocab = TaskVocab(tokenizer, num_bins=8, max_classes=3)
    ids = torch.arange(vocab.first_id - 2, vocab.first_id + vocab.num_tokens + 2)
    bins, classes = vocab.is_bin(ids), vocab.is_class(ids)
    assert int(bins.sum()) == 8 and int(classes.sum()) == 3 and not bool((bins & classes).any())
    assert vocab.bin_index(ids[bins]).tolist() == list(range(8))
    assert vocab.class_index(ids[classes]).tolist() == [0, 1, 2]
    assert vocab.is_bin(vocab.first_id) and not vocab.is_bin(vocab.class_id(0)) and not vocab.is_class(-1)


@pytest.mark.parametrize("num_bins,canvas", [(512, 1024), (100, 333), (7, 50)])
def test_quantisation_error_is_at_most_half_a_bin(tokenizer, num_bins, canvas):
    vocab = TaskVocab(tokenizer, num_bins=num_bins, max_classes=1)
    coords = np.random.default_rng(0).uniform(0, canvas, size=5000)
    coords[:2] = [0.0, canvas]  # both canvas edges
    bins = vocab.quantize(coords, canvas)
    assert bins.dtype == np.int64 and bins.min() >= 0 and bins.max() <= num_bins - 1
    half_bin = vocab.bin_size(canvas) / 2
    assert np.abs(vocab.dequantize(bins, canvas) - coords).max() <= half_bin + 1e-9
    tensor_bins = vocab.quantize(torch.from_numpy(coords), canvas)
    assert tensor_bins.dtype == torch.long and torch.equal(tensor_bins, torch.from_numpy(bins))
    assert torch.allclose(
        vocab.dequantize(tensor_bins, canvas), torch.from_numpy(vocab.dequantize(bins, canvas))
    )
    assert vocab.quantize([-5.0, canvas * 2], canvas).tolist() == [0, num_bins - 1]  # clipped to the canvas
