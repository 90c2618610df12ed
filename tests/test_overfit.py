"""The tiny config memorises 16 synthetic images: the whole model, trained by mmengine's Runner."""

from __future__ import annotations

import pytest
from mmengine.runner import Runner

from tests.conftest import REPO
from visionllm.engine.launch import load_config, prepare_synthetic_data


@pytest.mark.slow
def test_tiny_config_overfits_16_images_in_both_decoding_modes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the config's relative data/ and work dir land in tmp_path
    cfg = load_config(str(REPO / "configs/visionllm_tiny_overfit16.py"), work_dir=str(tmp_path / "work"))
    prepare_synthetic_data(cfg)
    runner = Runner.from_cfg(cfg)
    runner.train()
    model = runner.model

    coco_metric = runner.test_loop.evaluator.metrics[0]
    results = {}
    for mode in ("parallel", "autoregressive"):
        model.decode_mode = mode
        for task, iou_types in (("detect", ["bbox"]), ("segment", ["bbox", "segm"])):
            model.eval_task, coco_metric.metrics = task, iou_types
            results[mode, task] = runner.test()
    print({key: (m["coco/bbox_mAP"], m.get("coco/segm_mAP")) for key, m in results.items()})
    for mode in ("parallel", "autoregressive"):
        assert results[mode, "detect"]["coco/bbox_mAP"] >= 0.9, (mode, results[mode, "detect"])
        assert results[mode, "segment"]["coco/segm_mAP"] >= 0.7, (mode, results[mode, "segment"])
