"""The private mmengine (and mmcv) names in ``visionllm/mmengine_private.py`` against the installed mmengine.

Each check fails with a message naming the API that changed and where VisionLLM uses it, so an mmengine
upgrade (pinned to 0.10.7 in ``requirements.lock``) shows at once what to adapt. A last group of checks
keeps the list complete: private names used outside ``mmengine_private.py`` fail the suite.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import mmengine
import pytest
import torch
from mmdet.evaluation import CocoMetric
from mmdet.structures import DetDataSample
from mmengine.dataset import BaseDataset
from mmengine.hooks import Hook
from mmengine.logging import HistoryBuffer
from mmengine.runner import Runner
from mmengine.structures import InstanceData

import visionllm
from tests.conftest import ToyModel, toy_train_dataloader
from visionllm import mmengine_private as private
from visionllm.compat import mmcv_has_compiled_ops
from visionllm.data.coco import coco_index

REPO = Path(__file__).resolve().parents[1]
PINNED = re.search(r"^mmengine==(\S+)$", (REPO / "requirements.lock").read_text(), re.MULTILINE).group(1)
FOREIGN_PACKAGES = ("mmengine", "mmdet", "mmcv")


def api(owner_name: str, name: str) -> private.PrivateAPI:
    """The listed entry for ``name`` on the owner whose name ends with ``owner_name``."""
    for entry in private.PRIVATE_APIS:
        if entry.name == name and entry.qualname.removesuffix(f".{name}").endswith(f".{owner_name}"):
            return entry
    raise LookupError(f"{owner_name}.{name} is not listed in visionllm/mmengine_private.py")


def changed(entry: private.PrivateAPI, what: str) -> str:
    """The failure message: which API changed, how, and where VisionLLM depends on it."""
    return (
        f"private API {entry.qualname} changed in mmengine {mmengine.__version__} (pinned: {PINNED}): "
        f"{what}. VisionLLM uses it in {', '.join(entry.used_in)} ({entry.purpose}); adapt that code and "
        "visionllm/mmengine_private.py."
    )


# ------------------------------------------------------------------------------- existence and signature


@pytest.mark.parametrize("entry", private.PRIVATE_APIS, ids=lambda entry: entry.qualname)
def test_private_api_exists_with_the_parameters_we_use(entry):
    if entry.instance_attribute:
        source = inspect.getsource(entry.owner.__init__)
        assert re.search(rf"self\.{entry.name}\b\s*(:[^=]*)?=", source), changed(
            entry, f"{entry.owner.__name__}.__init__ no longer sets self.{entry.name}"
        )
        return
    assert hasattr(entry.owner, entry.name), changed(entry, "it no longer exists")
    if entry.params is not None:
        params = list(inspect.signature(getattr(entry.owner, entry.name)).parameters)
        assert params[: len(entry.params)] == list(entry.params), changed(
            entry, f"its parameters are now {params}, we call it with {list(entry.params)}"
        )


def test_installed_mmengine_is_the_pinned_one():
    """The checks above are written against the pinned version; another version needs them reviewed."""
    assert mmengine.__version__ == PINNED, (
        f"mmengine {mmengine.__version__} is installed, requirements.lock pins {PINNED}: review "
        "visionllm/mmengine_private.py against the new version (this test file checks each entry)"
    )


# ------------------------------------------------------------------------------------------ behaviour


def test_load_checkpoint_reads_a_file_and_loads_it_into_a_model(tmp_path):
    read = api("checkpoint", "_load_checkpoint")
    into_model = api("checkpoint", "_load_checkpoint_to_model")
    saved = torch.nn.Linear(2, 1)
    state = {f"module.{key}": value for key, value in saved.state_dict().items()}  # as DDP saves it
    torch.save({"state_dict": state, "meta": {"iter": 3}}, tmp_path / "ckpt.pth")

    loaded = private._load_checkpoint(str(tmp_path / "ckpt.pth"), map_location="cpu", logger="silent")
    assert isinstance(loaded, dict) and loaded["meta"] == {"iter": 3}, changed(
        read, f"it returned {type(loaded).__name__} {loaded!r:.200}, not the saved dict"
    )

    model = torch.nn.Linear(2, 1)
    returned = private._load_checkpoint_to_model(model, loaded, strict=True, logger="silent")
    assert returned is loaded, changed(into_model, "it no longer returns the checkpoint it was given")
    assert torch.equal(model.weight, saved.weight) and torch.equal(model.bias, saved.bias), changed(
        into_model, "the weights did not load ('module.' prefix no longer stripped?)"
    )
    with pytest.raises(RuntimeError, match="missing keys"):  # strict=True refuses a partial checkpoint
        private._load_checkpoint_to_model(
            torch.nn.Linear(2, 1), {"state_dict": {"weight": saved.weight}}, strict=True, logger="silent"
        )


@pytest.mark.parametrize(
    ("owner", "name", "caller", "call"),
    [
        ("CheckpointHook", "_save_checkpoint_with_step", "_save_checkpoint", "meta=meta"),
        ("CheckpointHook", "_save_checkpoint_with_step", "_save_best_checkpoint", "meta"),
        ("DeepSpeedStrategy", "_wrap_model", "prepare", "model"),
    ],
)
def test_overridden_private_methods_are_still_called(owner, name, caller, call):
    """mmengine must still route through the private methods our subclasses override."""
    entry = api(owner, name)
    source = inspect.getsource(getattr(entry.owner, caller))
    assert re.search(rf"self\.{name}\([^)]*{re.escape(call)}", source), changed(
        entry, f"{owner}.{caller} no longer calls self.{name}(..., {call}), so our override would not run"
    )


class EndAfterSecondIteration(Hook):
    """What TimeBudgetHook does when its budget is spent, at iteration 1 of 10."""

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if runner.iter == 1:
            private.set_max_iters(runner.train_loop, runner.iter + 1)


def toy_runner(work_dir: Path) -> Runner:
    return Runner(
        model=ToyModel(),
        work_dir=str(work_dir),
        train_dataloader=toy_train_dataloader(4),
        optim_wrapper=dict(optimizer=dict(type="SGD", lr=0.01)),
        train_cfg=dict(by_epoch=False, max_iters=10),
        default_hooks=dict(checkpoint=None, logger=None),
        custom_hooks=[EndAfterSecondIteration()],
    )


def test_runner_dataloaders_and_loop_limit(tmp_path):
    runner = toy_runner(tmp_path)
    loaders = api("Runner", "_train_dataloader")
    configured = private.configured_dataloader(runner, "train")
    assert isinstance(configured, dict) and configured["batch_size"] == 2, changed(
        loaders, f"it holds {configured!r:.200}, not the configured train loader"
    )
    for split in ("val", "test"):
        assert private.configured_dataloader(runner, split) is None, changed(
            api("Runner", f"_{split}_dataloader"), "it is set although no loader was configured"
        )

    runner.train()
    assert runner.iter == 2, changed(
        api("IterBasedTrainLoop", "_max_iters"),
        f"setting it at iteration 1 of 10 ended training after {runner.iter} iterations, not 2",
    )


def test_live_metainfo_is_what_metainfo_reads():
    entry = api("BaseDataset", "_metainfo")

    class Tiny(BaseDataset):
        METAINFO = {"classes": ()}

        def load_data_list(self):
            return []

    dataset = Tiny(lazy_init=True, serialize_data=False)
    private.live_metainfo(dataset)["classes"] = ("cat", "dog")
    assert dataset.metainfo["classes"] == ("cat", "dog"), changed(
        entry, f"a change to it does not show in dataset.metainfo ({dataset.metainfo!r:.200})"
    )


def test_history_buffer_statistics_methods_are_what_a_pickle_references():
    entry = api("HistoryBuffer", "_statistics_methods")
    names = private.history_buffer_statistics_methods()
    assert {"min", "max", "current", "mean"} <= names, changed(entry, f"it lists only {sorted(names)}")
    assert all(callable(getattr(HistoryBuffer, name, None)) for name in names), changed(
        entry, f"not every name in {sorted(names)} is a HistoryBuffer method"
    )
    state = HistoryBuffer().__getstate__()
    assert set(state.get("statistics_methods", {})) == names, changed(
        entry, "a pickled HistoryBuffer no longer stores these methods (compat's allow-list may be moot)"
    )


def test_coco_api_is_the_ground_truth_coco_metric_scores():
    entry = api("CocoMetric", "_coco_api")
    ground_truth = {
        "images": [{"id": 1, "file_name": "a.png", "height": 20, "width": 30}],
        "categories": [{"id": 3, "name": "circle"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 3, "bbox": [1, 2, 10, 8], "area": 80, "iscrowd": 0}
        ],
    }
    metric = CocoMetric()  # no ann_file: without set_coco_api it would need ground truth in the samples
    private.set_coco_api(metric, coco_index(ground_truth))
    metric.dataset_meta = dict(classes=("circle",))
    sample = DetDataSample(metainfo=dict(img_id=1, ori_shape=(20, 30)))
    sample.pred_instances = InstanceData(
        bboxes=torch.tensor([[1.0, 2.0, 11.0, 10.0]]),
        scores=torch.ones(1),
        labels=torch.zeros(1, dtype=torch.long),
    )
    metric.process({}, [sample.to_dict()])
    assert metric.evaluate(size=1)["coco/bbox_mAP"] == 1.0, changed(
        entry, "CocoMetric did not score the predictions against the ground truth set there"
    )


@pytest.mark.skipif(mmcv_has_compiled_ops(), reason="compat sets the flags only under mmcv-lite")
def test_mmcv_deform_attn_flags_route_to_pytorch():
    module = private.mmcv_deform_attn
    for name in ("IS_CUDA_AVAILABLE", "IS_MLU_AVAILABLE"):
        entry = api("multi_scale_deform_attn", name)
        forward = inspect.getsource(module.MultiScaleDeformableAttention.forward)
        assert name in forward, changed(
            entry, "MultiScaleDeformableAttention.forward no longer reads it, so compat cannot route it"
        )
        assert getattr(module, name) is False, changed(entry, "visionllm.compat did not set it to False")


# ------------------------------------------------------------------------ the list is complete


def project_files() -> list[Path]:
    files = [*sorted((REPO / "visionllm").rglob("*.py"))]
    for folder in ("tools", "bench"):
        files += sorted((REPO / folder).rglob("*.py"))
    return [path for path in files if path.name != "mmengine_private.py"]


def private_uses(path: Path) -> set[str]:
    """Private names of mmengine / mmdet / mmcv that ``path`` imports, or reaches as listed attributes."""
    listed_attributes = {
        entry.name for entry in private.PRIVATE_APIS if entry.name.startswith("_") and not entry.overridden
    }
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in FOREIGN_PACKAGES:
            parts = node.module.split(".")
            found |= {f"module {node.module}" for part in parts if part.startswith("_")}
            found |= {alias.name for alias in node.names if alias.name.startswith("_")}
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] in FOREIGN_PACKAGES and any(part.startswith("_") for part in parts):
                    found.add(f"module {alias.name}")
        elif isinstance(node, ast.Attribute) and node.attr in listed_attributes:
            found.add(node.attr)
    return found


def test_no_private_name_is_used_outside_the_list():
    offenders = {}
    for path in project_files():
        relative = path.relative_to(REPO).as_posix()
        uses = private_uses(path)
        if uses:
            offenders[relative] = sorted(uses)
    assert not offenders, (
        f"private mmengine/mmdet/mmcv names used outside visionllm/mmengine_private.py: {offenders}; "
        "re-export or wrap them there, list them in PRIVATE_APIS and import them from there"
    )


def test_every_overridden_private_method_is_listed():
    """Each private mmengine/mmdet/mmcv method a VisionLLM class overrides is listed as overridden, and
    each listed as overridden is overridden somewhere (no stale entries)."""
    listed = {(entry.owner, entry.name) for entry in private.PRIVATE_APIS if entry.overridden}
    unlisted, overridden = [], set()
    for info in pkgutil.walk_packages(visionllm.__path__, "visionllm."):
        module = importlib.import_module(info.name)
        for cls in vars(module).values():
            if not inspect.isclass(cls) or cls.__module__ != module.__name__:
                continue
            for name in vars(cls):
                if not name.startswith("_") or name.startswith("__") or name == "_abc_impl":
                    continue
                bases = [
                    base
                    for base in cls.__mro__[1:]
                    if base.__module__.split(".")[0] in FOREIGN_PACKAGES and name in vars(base)
                ]
                if bases and (bases[0], name) not in listed:
                    unlisted.append(f"{cls.__module__}.{cls.__qualname__}.{name} overrides {bases[0]}")
                overridden |= {(base, name) for base in bases}
    assert not unlisted, (
        f"private methods overridden but not listed (overridden=True) in PRIVATE_APIS: {unlisted}"
    )
    stale = [f"{owner.__qualname__}.{name}" for owner, name in listed - overridden]
    assert not stale, f"listed as overridden in PRIVATE_APIS, but no VisionLLM class overrides: {stale}"
