"""Every shipped config parses (its `_base_` chain resolves) and names registered components."""

from __future__ import annotations

import pytest
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
