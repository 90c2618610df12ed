"""bench/decode_speed.py: a smoke run (2 objects, 1 repeat) and the grammar that forces the object count."""

import importlib.util
import json
from pathlib import Path

import torch
from transformers import AutoTokenizer

from visionllm.models.decoding import Grammar
from visionllm.pretrained import minilm_dir
from visionllm.tasks import build_task
from visionllm.vocab import TaskVocab

BENCH = Path(__file__).resolve().parents[1] / "bench" / "decode_speed.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("decode_speed", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_decode_speed_bench_writes_timings_for_exactly_the_requested_objects(tmp_path, capsys):
    out = tmp_path / "decode_speed.json"
    # raises unless both decoders produced exactly 2 objects (autoregressive decoding is forced on)
    load_bench().main(
        ["--objects", "2", "--repeats", "1", "--image-size", "128", "--device", "cpu", "--out", str(out)]
    )
    report = json.loads(out.read_text())
    assert report["device"] == "cpu" and report["threads"] == 1 and report["task"] == "detect"
    [row] = report["results"]
    assert (row["objects"], row["repeats"]) == (2, 1)
    for name in ("parallel", "autoregressive", "image_tokenizer"):
        assert len(row[f"{name}_all_ms"]) == 1 and row[f"{name}_ms"] == row[f"{name}_all_ms"][0] > 0
    assert row["ratio"] == row["autoregressive_ms"] / row["parallel_ms"]
    table = capsys.readouterr().out
    assert "| objects | parallel ms | autoregressive ms | AR / parallel |" in table
    assert f"| 2 | {row['parallel_ms']:.1f} |" in table


def test_exact_count_grammar_never_lets_autoregressive_decoding_stop_early():
    vocab = TaskVocab(AutoTokenizer.from_pretrained(minilm_dir()), num_bins=16, max_classes=4)
    task = build_task("detect", vocab)
    eoo, noobj = vocab.to_local(vocab.eoo_id), vocab.to_local(vocab.noobj_id)
    exact = load_bench().ExactCountGrammar(vocab.num_tokens, eoo)
    plain = Grammar(vocab.num_tokens)
    assert plain.mask(task, 0, 3, False)[eoo] and not exact.mask(task, 0, 3, False)[eoo]
    assert torch.equal(
        exact.mask(task, 0, 3, False), plain.mask(task, 0, 3, False).index_fill(0, torch.tensor([eoo]), False)
    )
    assert exact.mask(task, 0, 3, True)[noobj] and torch.equal(
        exact.mask(task, 0, 3, True), plain.mask(task, 0, 3, True)
    )
