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


def toy_train_dataloader(num_samples: int) -> dict:
    """An mmengine train dataloader config over ``num_samples`` (inputs, targets) pairs for ``ToyModel``."""
    dataset = [
        dict(inputs=torch.full((2,), float(i)), targets=torch.tensor([float(i)])) for i in range(num_samples)
    ]
    return dict(
        dataset=dataset,
        sampler=dict(type="DefaultSampler", shuffle=False),
        batch_size=2,
        collate_fn=dict(type="default_collate"),
    )


#: The classes of ``tiny_checkpoint``.
TINY_CLASSES = ["circle", "square", "triangle"]


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An mmengine-style checkpoint of the tiny model (``configs/visionllm_tiny_synthetic.py``) with random
    weights and ``TINY_CLASSES``.

    The LLM's weights are spread wider than at initialisation so that the object slots decode to
    distinct, non-degenerate objects (at initialisation they all read out the same location bins).
    """
    from mmengine.config import Config

    from visionllm.registry import MODELS, register_all_modules

    register_all_modules()
    torch.manual_seed(0)
    model = MODELS.build(Config.fromfile(str(REPO / "configs/_base_/models/visionllm_tiny.py")).model)
    with torch.no_grad():
        for parameter in model.llm.parameters():
            if parameter.ndim >= 2:
                parameter.normal_(0, 0.1)
    path = tmp_path_factory.mktemp("checkpoint") / "random.pth"
    torch.save({"state_dict": model.state_dict(), "meta": {"dataset_meta": {"classes": TINY_CLASSES}}}, path)
    return path


def voc_xml(name: str, width: int, height: int, objects: list) -> str:
    """A Pascal VOC annotation: ``objects`` are (class, (xmin, ymin, xmax, ymax), difficult), 1-based."""
    parts = [f"<annotation><folder>VOC2007</folder><filename>{name}.jpg</filename>"]
    parts.append(f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>")
    for cls, (x1, y1, x2, y2), difficult in objects:
        parts.append(
            f"<object><name>{cls}</name><pose>Unspecified</pose><truncated>0</truncated>"
            f"<difficult>{int(difficult)}</difficult><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin>"
            f"<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
        )
    return "".join(parts) + "</annotation>\n"
