"""Every shipped config parses (its `_base_` chain resolves) and names registered components."""

from __future__ import annotations

import pytest
import torch
from mmengine.config import Config

from tests.conftest import REPO
from visionllm.registry import DATASETS, MODELS, register_all_modules

CONFIGS = sorted((REPO / "configs").glob("*.py"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_parses_and_its_types_are_registered(path):
    register_all_modules()
    cfg = Config.fromfile(path)
    assert MODELS.get(cfg.model.type) is not None, f"{path.name}: model type {cfg.model.type!r}"
    for split in ("train_dataloader", "val_dataloader"):
        dataset = cfg[split].dataset
        assert DATASETS.get(dataset.type) is not None, f"{path.name}: {split}.dataset.type {dataset.type!r}"


def test_an_llm_with_tied_embeddings_trains_with_the_shipped_optimizer():
    """The tiny model with ``tie_word_embeddings`` (as SmolLM2 has) builds the schedules' AdamW wrapper
    (the shared matrix joins it once) and one step changes that matrix."""
    from mmengine.optim import build_optim_wrapper

    from tests.test_model import CANVAS, make_sample, tiny_config

    cfg = tiny_config()
    cfg.llm.config.tie_word_embeddings = True
    model = MODELS.build(cfg)
    embeddings = model.llm.llm.get_input_embeddings().weight
    assert embeddings is model.llm.llm.get_output_embeddings().weight
    schedule = Config.fromfile(REPO / "configs/_base_/schedules/adamw.py")
    optim_wrapper = build_optim_wrapper(model, schedule.optim_wrapper)
    before = embeddings.detach().clone()
    model.train()
    losses = model.loss(torch.randn(2, 3, CANVAS, CANVAS), [make_sample(), make_sample()])
    optim_wrapper.update_params(sum(losses.values()))
    assert not torch.equal(embeddings.detach(), before)
