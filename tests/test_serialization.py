"""VisionLLM.save_pretrained / from_pretrained, and clear errors for missing local weight paths."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, BertConfig, BertModel

from visionllm.models import serialization
from visionllm.models.visionllm import VisionLLM
from visionllm.pretrained import minilm_dir
from visionllm.registry import MODELS, register_all_modules
from visionllm.structures import Prediction

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["circle", "square", "triangle"]
SIZE = 128


@pytest.fixture(scope="module", autouse=True)
def registries():
    register_all_modules()


@pytest.fixture
def tiny_cfg() -> dict:
    cfg = Config.fromfile(REPO / "configs/_base_/models/visionllm_tiny.py").model.to_dict()
    cfg.update(class_names=CLASSES, num_slots=16)  # every token seeds a slot: a random model finds some boxes
    return cfg


def build(cfg: dict) -> VisionLLM:
    torch.manual_seed(0)
    return MODELS.build(cfg).eval()


def predict(model: VisionLLM) -> Prediction:
    """Parallel decoding of a detection request on one fixed random image."""
    shape = (SIZE, SIZE)
    meta = dict(ori_shape=shape, pad_shape=shape, scale_factor=(1.0, 1.0))
    request = model.tasks["detect"].request_for_eval(CLASSES)
    image = torch.rand(1, 3, *shape, generator=torch.Generator().manual_seed(1))
    return model.generate(image, [request], [meta], "parallel")[0]


def assert_same_model(loaded: VisionLLM, original: VisionLLM) -> None:
    expected, actual = original.state_dict(), loaded.state_dict()
    assert actual.keys() == expected.keys()
    for key, value in expected.items():
        assert actual[key].dtype == value.dtype and torch.equal(actual[key], value), key
    assert loaded.class_names == original.class_names
    assert loaded.vocab.first_id == original.vocab.first_id
    got, want = predict(loaded), predict(original)
    assert len(want) > 0
    for field in ("boxes", "scores", "labels"):
        assert np.array_equal(getattr(got, field), getattr(want, field)), field
    assert got.dropped_tokens == want.dropped_tokens


def test_round_trip_gives_identical_weights_and_predictions(tiny_cfg, tmp_path):
    model = build(tiny_cfg)
    model.class_names = ["ring", "box"]  # set after construction, as ClassNamesHook does
    model.save_pretrained(tmp_path / "model")
    assert {p.name for p in (tmp_path / "model").iterdir()} == {
        "config.json",
        "model.safetensors",
        "tokenizer",
        "text_encoder_tokenizer",
    }
    assert_same_model(VisionLLM.from_pretrained(tmp_path / "model"), model)


def test_round_trip_without_the_local_paths_it_was_built_from(tiny_cfg, tmp_path):
    """A LoRA LLM and a pretrained text encoder loaded from local directories that are gone at load
    time: both architectures come back from the saved transformers configs."""
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
    llm_dir, encoder_dir = tmp_path / "llm", tmp_path / "encoder"
    llm_config = dict(tiny_cfg["llm"].pop("config"), vocab_size=len(tokenizer))
    AutoModelForCausalLM.from_config(AutoConfig.for_model(**llm_config)).save_pretrained(llm_dir)
    encoder_config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2
    )
    BertModel(encoder_config).save_pretrained(encoder_dir)  # with a pooler, as AutoModel loads BERT
    for directory in (llm_dir, encoder_dir):
        tokenizer.save_pretrained(directory)
    tiny_cfg["llm"].update(path=str(llm_dir), tokenizer_path=None, lora=dict(r=4, target_modules=["q_proj"]))
    tiny_cfg["image_tokenizer"]["text_encoder"] = dict(path=str(encoder_dir))
    model = build(tiny_cfg)
    model.save_pretrained(tmp_path / "model")
    shutil.rmtree(llm_dir)
    shutil.rmtree(encoder_dir)
    loaded = VisionLLM.from_pretrained(tmp_path / "model")
    assert any("lora_A" in name for name, _ in loaded.named_parameters())
    assert_same_model(loaded, model)


@pytest.mark.parametrize(
    ("key", "edit"),
    [
        ("llm.path", lambda cfg, missing: cfg["llm"].update(path=missing, tokenizer_path=None)),
        ("llm.tokenizer_path", lambda cfg, missing: cfg["llm"].update(tokenizer_path=missing)),
        (
            "text_encoder.path",
            lambda cfg, missing: cfg["image_tokenizer"].update(text_encoder=dict(path=missing)),
        ),
        (
            "text_encoder.tokenizer_path",
            lambda cfg, missing: cfg["image_tokenizer"]["text_encoder"].update(tokenizer_path=missing),
        ),
        (
            "backbone.checkpoint",
            lambda cfg, missing: cfg["image_tokenizer"]["backbone"].update(checkpoint=missing),
        ),
    ],
)
def test_missing_local_path_raises_file_not_found_naming_the_key(tiny_cfg, tmp_path, key, edit):
    missing = str(tmp_path / "absent")
    edit(tiny_cfg, missing)
    with pytest.raises(FileNotFoundError, match=rf"{key}: '{missing}'"):
        build(tiny_cfg)


def test_interrupted_save_leaves_the_earlier_save_intact(tiny_cfg, tmp_path, monkeypatch):
    target = tmp_path / "model"
    model = build(tiny_cfg)
    model.save_pretrained(target)
    before = {p.relative_to(target): p.read_bytes() for p in target.rglob("*") if p.is_file()}

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("interrupted while writing the weights")

    monkeypatch.setattr(serialization, "save_model", crash)
    model.class_names = ["another", "class", "list"]
    with pytest.raises(KeyboardInterrupt):
        model.save_pretrained(target)
    after = {p.relative_to(target): p.read_bytes() for p in target.rglob("*") if p.is_file()}
    assert after == before
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no staging directory left behind
    assert VisionLLM.from_pretrained(target).class_names == CLASSES


def test_save_refuses_to_replace_a_directory_that_is_not_a_saved_model(tiny_cfg, tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="holds no saved model"):
        build(tiny_cfg).save_pretrained(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "keep me"
