"""Shared fixtures. Data from ``../shared`` is optional: tests that need it skip on a fresh clone."""

from pathlib import Path

import pytest

import visionllm  # noqa: F401  (platform fixes before any test imports torchvision / mmcv)

# isort: split
import torch
from mmengine.model import BaseModel

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the checkout, or skip."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is absent (a fresh clone without ../shared)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def coco128(shared_data: Path) -> Path:
    root = shared_data / "coco128"
    if not (root / "annotations" / "instances_train2017.json").is_file():
        pytest.skip(f"{root} is absent")
    return root


class ToyModel(BaseModel):
    """A one-layer mmengine model for Runner tests: ``loss`` is the squared error to ``targets``."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(2, 1)

    def forward(self, inputs, targets=None, mode="tensor"):
        out = self.linear(inputs)
        return {"loss": ((out - targets) ** 2).mean()} if mode == "loss" else out
