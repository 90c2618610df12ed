"""The full-scale configs (ResNet-50 / Swin-L / ConvNeXt-L + LLaMA-7B with LoRA) build on the meta device
with the parameter counts their architectures imply, computed here from the dimensions alone."""

import math
import time
from pathlib import Path

import pytest
import torch
from accelerate import init_empty_weights
from mmengine.config import Config
from safetensors import safe_open
from transformers import AutoTokenizer

from visionllm.pretrained import minilm_dir
from visionllm.registry import DATASETS, MODELS, register_all_modules
from visionllm.vocab import task_token_names

REPO = Path(__file__).resolve().parents[1]

# LLaMA(-2)-7B
HIDDEN, LAYERS, INTERMEDIATE, LORA_RANK = 4096, 32, 11008, 8
NUM_BINS, MAX_CLASSES, NUM_SLOTS = 512, 100, 100
# image tokenizer: deformable encoder/decoder width, heads, feature levels, sampling points, queries
DIMS, HEADS, LEVELS, POINTS, QUERIES, ENCODER_LAYERS, DECODER_LAYERS = 256, 8, 3, 4, 128, 6, 6

# Backbone features = published ImageNet-1k classifier size minus its head (final norm + 1000-way fc).
# ResNet-50's count is exact; the timm model cards round Swin-L and ConvNeXt-L to 0.01M.
BACKBONES = {
    "r50": ("resnet50", (512, 1024, 2048), 25_557_032 - (2048 * 1000 + 1000), 0),
    "swinl": (
        "swin_large_patch4_window12_384",
        (384, 768, 1536),
        196.74e6 - (2 * 1536 + 1536 * 1000 + 1000),
        1e4,
    ),
    "convnextl": ("convnext_large", (384, 768, 1536), 197.77e6 - (2 * 1536 + 1536 * 1000 + 1000), 1e4),
}


def llama_params(vocab_size: int) -> int:
    """Untied LLaMA: embeddings + head, per layer q/k/v/o + gated MLP + 2 RMSNorms, final RMSNorm."""
    per_layer = 4 * HIDDEN * HIDDEN + 3 * HIDDEN * INTERMEDIATE + 2 * HIDDEN
    return 2 * vocab_size * HIDDEN + LAYERS * per_layer + HIDDEN


def minilm_params() -> int:
    """Parameters stored in the packaged MiniLM checkpoint (``position_ids`` is a buffer)."""
    with safe_open(str(minilm_dir() / "model.safetensors"), "pt") as weights:
        return sum(
            math.prod(weights.get_slice(key).get_shape())
            for key in weights.keys()
            if not key.endswith("position_ids")
        )


def adapter_params(backbone_channels: tuple[int, ...]) -> int:
    """Image tokenizer without its backbone: projections, text cross-attention, deformable layers, heads."""
    d, text = DIMS, 384
    linear = lambda fan_in, fan_out: fan_in * fan_out + fan_out  # noqa: E731
    attention = linear(d, 3 * d) + linear(d, d)  # nn.MultiheadAttention: packed q/k/v, then output
    offsets = HEADS * LEVELS * POINTS
    deformable = linear(d, 2 * offsets) + linear(d, offsets) + 2 * linear(d, d)
    ffn = linear(d, 4 * d) + linear(4 * d, d)
    norm = 2 * d
    encoder_layer = deformable + ffn + 2 * norm
    decoder_layer = attention + deformable + ffn + 3 * norm
    return (
        sum(c * d + d + norm for c in backbone_channels)  # 1x1 conv + GroupNorm per level
        + minilm_params()
        + linear(text, d)
        + LEVELS * (norm + attention)
        + LEVELS * d  # level embeddings
        + ENCODER_LAYERS * encoder_layer
        + DECODER_LAYERS * decoder_layer
        + QUERIES * 2 * d
        + linear(d, 2)  # reference points
        + DECODER_LAYERS * (2 * linear(d, d) + linear(d, 4))  # a box head (3-layer MLP) per decoder layer
        + linear(d, d)
        + 1  # class head: token projection, focal prior bias
        + linear(d, HIDDEN)
        + linear(HIDDEN, HIDDEN)  # visual tokens -> LLM width
        + linear(2 * d, HIDDEN)  # box encoding -> LLM width
    )


@pytest.fixture(scope="module", autouse=True)
def registries():
    register_all_modules()


def test_llama_formula_matches_the_published_7b_size():
    assert llama_params(32000) == 6_738_415_616


@pytest.mark.parametrize("name", list(BACKBONES))
def test_full_scale_model_builds_on_meta_with_the_expected_parameter_counts(name):
    _, channels, backbone_expected, backbone_tolerance = BACKBONES[name]
    cfg = Config.fromfile(REPO / f"configs/_base_/models/visionllm_{name}_llama7b.py").model
    assert cfg.llm.path is None and cfg.llm.config.vocab_size == 32000
    cfg.llm.tokenizer_path = "minilm"  # no LLaMA tokenizer offline: MiniLM's vocabulary instead of 32000
    start = time.perf_counter()
    with init_empty_weights():
        model = MODELS.build(cfg)
    assert time.perf_counter() - start < 60

    params = dict(model.named_parameters())
    assert {p.device.type for p in params.values()} == {"meta"}, "a parameter was materialised"
    assert model.image_tokenizer.backbone.out_channels == list(channels)
    decoder = model.llm.decoder
    assert decoder.config.num_hidden_layers == LAYERS and decoder.gradient_checkpointing
    assert decoder.layers[0].mlp.up_proj.weight.dtype == torch.bfloat16

    task_rows = len(task_token_names(NUM_BINS, MAX_CLASSES))
    vocab_size = len(AutoTokenizer.from_pretrained(minilm_dir())) + task_rows
    assert model.vocab.num_tokens == task_rows and decoder.config.vocab_size == vocab_size
    lora = LAYERS * 4 * 2 * LORA_RANK * HIDDEN  # A (r x h) and B (h x r) on q, k, v, o
    trainable_tokens = 2 * task_rows * HIDDEN  # task rows of the input embedding and the LM head
    pointer_dims = min(HIDDEN, 256)
    pointer = 2 * (HIDDEN * pointer_dims + pointer_dims)  # class query / key projections
    slots = NUM_SLOTS * HIDDEN + HIDDEN * HIDDEN + HIDDEN + 1  # embeddings, seed map, bin-prior slope
    new_modules = pointer + slots + adapter_params(channels)

    backbone = sum(p.numel() for n, p in params.items() if n.startswith("image_tokenizer.backbone."))
    assert abs(backbone - backbone_expected) <= backbone_tolerance
    total = sum(p.numel() for p in params.values())
    assert total - backbone == llama_params(vocab_size) + lora + trainable_tokens + new_modules
    trainable = sum(p.numel() for p in params.values() if p.requires_grad)
    assert trainable == lora + trainable_tokens + new_modules + backbone


@pytest.mark.parametrize("name", list(BACKBONES))
def test_coco_experiment_config_pipeline_on_coco128(name, coco128):
    """The experiment config composes its model, COCO data and schedule; its training pipeline turns a
    real COCO image into a padded 1024 canvas with boxes and polygons."""
    cfg = Config.fromfile(REPO / f"configs/visionllm_{name}_llama7b_coco.py")
    assert cfg.model.image_tokenizer.backbone.model_name == BACKBONES[name][0]
    assert cfg.optim_wrapper.optimizer.type == "AdamW" and cfg.optim_wrapper.type == "OptimWrapper"
    dataset_cfg = cfg.train_dataloader.dataset
    assert (dataset_cfg.data_root, dataset_cfg.data_prefix.img) == ("data/coco/", "train2017/")
    assert cfg.val_dataloader.dataset.data_prefix.img == "val2017/"
    dataset_cfg.data_root = str(coco128)
    item = DATASETS.build(dataset_cfg)[0]
    assert tuple(item["inputs"].shape) == (3, 1024, 1024)
    gt = item["data_samples"].gt_instances
    assert len(gt) > 0 and len(gt.masks) == len(gt)


def test_full_scale_config_without_a_local_llm_asks_for_one():
    cfg = Config.fromfile(REPO / "configs/_base_/models/visionllm_r50_llama7b.py").model
    with pytest.raises(ValueError, match="llm: set `path`"):
        MODELS.build(cfg)
