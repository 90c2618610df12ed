"""bench/full_scale_gpu.py and bench/detr_vs_visionllm.py: tiny CPU runs with sane numbers, the time-budget
hook, and the Deformable DETR baseline config sharing the tiny VisionLLM's backbone and data."""

import importlib.util
import json
from types import SimpleNamespace

import pytest
import torch
from mmengine.config import Config

from tests.conftest import REPO
from tests.tiny_runs import run, write_config
from visionllm.registry import register_all_modules


def load_bench(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_full_scale_bench_runs_tiny_on_cpu_and_counts_the_same_model_flops_in_both_modes(tmp_path):
    out = tmp_path / "full_scale.json"
    # the docstring's CPU command, shrunk (batch 2, one latency row) to keep the test short
    stdout = run(
        [
            "bench/full_scale_gpu.py",
            "--config",
            "configs/visionllm_tiny_synthetic.py",
            "--device",
            "cpu",
            "--dtype",
            "float32",
            "--steps",
            "2",
            "--warmup",
            "0",
            "--batch-size",
            "2",
            "--latency-objects",
            "3",
            "--latency-repeats",
            "1",
            "--threads",
            "1",
            "--out",
            str(out),
        ],
        cwd=REPO,
        timeout=300,
    )
    report = json.loads(out.read_text())
    assert report["device"] == "cpu" and report["batch_size"] == 2 and report["image_size"] == 128
    assert report["params"] >= report["trainable_params"] > 0
    on, off = report["training"]
    assert (on["gradient_checkpointing"], off["gradient_checkpointing"]) == (True, False)
    assert on["checkpointed_layers"] == 2 and off["checkpointed_layers"] == 0  # the tiny LLM's 2 layers
    for row in (on, off):
        assert len(row["step_all_s"]) == 2 and row["step_s"] > 0
        assert row["llm_tokens_per_step"] > 0 and row["tokens_per_s"] > 0 and row["images_per_s"] > 0
        assert 0 < row["mfu"] < 1 and row["model_flops_per_s"] > 0 and row["peak_rss_gib"] > 0
        assert row["attention_backward_recompute_flops"] > 0  # CPU attention is counted
        analytic = row["analytic_llm"]
        assert analytic["frozen_weights"] == 0 and analytic["trainable_weights"] > 0  # no LoRA: all train
        assert 0 < analytic["total_flops"] < row["model_flops"]  # the LLM is part of the model
    # recomputation under checkpointing is taken out: both modes count the same model FLOPs
    assert on["checkpoint_recompute_flops"] > 0 and off["checkpoint_recompute_flops"] == 0
    assert on["backward_flops"] > off["backward_flops"]
    assert on["forward_flops"] == off["forward_flops"] and on["model_flops"] == off["model_flops"]
    [latency] = report["latency"]
    assert latency["objects"] == 3 and latency["parallel_ms"] > 0 and latency["autoregressive_ms"] > 0
    assert "| gradient checkpointing | step s | tokens/s |" in stdout and "| 3 |" in stdout


@pytest.mark.parametrize(
    "detr_config, visionllm_config, shared_keys, num_classes, image_size",
    [
        (
            "deformable_detr_tiny_synthetic.py",
            "visionllm_tiny_synthetic.py",
            ("image_size", "train_dataloader", "val_dataloader", "train_cfg"),
            6,
            128,
        ),
        (
            "deformable_detr_effnet_coco128.py",
            "visionllm_effnet_coco128_512.py",
            ("image_size", "train_dataloader", "val_dataloader", "val_evaluator", "train_cfg"),
            80,
            512,
        ),
    ],
)
def test_detr_baselines_share_backbone_preprocessor_and_data_with_their_visionllm_config(
    detr_config, visionllm_config, shared_keys, num_classes, image_size
):
    """Each Deformable DETR baseline differs from its VisionLLM config only in the model."""
    detr = Config.fromfile(REPO / "configs" / detr_config)
    vllm = Config.fromfile(REPO / "configs" / visionllm_config)
    backbone = dict(detr.model.backbone)
    assert backbone.pop("type") == "TimmBackbone"
    assert backbone == dict(vllm.model.image_tokenizer.backbone)
    assert detr.model.data_preprocessor == vllm.model.data_preprocessor
    for key in shared_keys:
        assert detr[key] == vllm[key], key
    for pipeline in (vllm.train_pipeline, vllm.test_pipeline):  # the image size the data is read at
        sizes = [
            step.get("scale", step.get("size")) for step in pipeline if step["type"] in ("Resize", "Pad")
        ]
        assert sizes == [(image_size, image_size)] * 2
    assert vllm.train_dataloader.dataset.pipeline == vllm.train_pipeline
    assert detr.model.type == "DeformableDETR" and detr.model.bbox_head.num_classes == num_classes
    assert detr.model.encoder.num_layers == detr.model.decoder.num_layers == 3
    assert detr.val_evaluator.metric == ["bbox"]


def test_detr_vs_visionllm_speed_part_times_all_three_at_the_requested_count():
    bench = load_bench("detr_vs_visionllm")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        register_all_modules()
        speed = bench.run_speed([2], [1], 128, torch.device("cpu"))  # raises unless 2 objects each
    finally:
        torch.set_num_threads(threads)
    [row] = speed["results"]
    for name in bench.SPEED_COLUMNS:
        assert len(row[f"{name}_all_ms"]) == 1 and row[f"{name}_ms"] > 0
    assert row["parallel_over_detr"] == row["parallel_ms"] / row["deformable_detr_ms"]
    assert "| 2 |" in bench.speed_table(speed)


@pytest.mark.slow
def test_detr_vs_visionllm_trains_both_for_a_tiny_budget(tmp_path):
    out = tmp_path / "detr_vs_visionllm.json"
    stdout = run(
        [
            "bench/detr_vs_visionllm.py",
            "--parts",
            "train",
            "--budget-minutes",
            "0.05",
            "--train-threads",
            "1",
            "--work-dir",
            str(tmp_path / "work"),
            "--out",
            str(out),
        ],
        cwd=REPO,
        timeout=600,
    )
    report = json.loads(out.read_text())["train"]
    assert set(report["models"]) == {"visionllm", "deformable_detr"}
    for name, row in report["models"].items():
        assert row["iterations"] >= 1 and row["train_s"] >= 3.0 and row["images_per_s"] > 0, name
        assert row["peak_rss_mib"] > 100 and row["threads"] == 1 and row["eval_s"] > 0
        assert 0.0 <= row["metrics"]["coco/bbox_mAP"] <= 1.0
    assert "coco/segm_mAP" in report["models"]["visionllm"]["metrics"]
    assert "coco/segm_mAP" not in report["models"]["deformable_detr"]["metrics"]
    # VisionLLM is also scored on its tokenizer's own detections (decode_mode='tokens')
    assert 0.0 <= report["models"]["visionllm"]["tokens_metrics"]["coco/bbox_mAP"] <= 1.0
    assert report["models"]["deformable_detr"]["tokens_metrics"] is None
    assert "visual tokens alone" in stdout
    assert report["bbox_mAP_ratio"] is None or report["bbox_mAP_ratio"] >= 0
    assert "| VisionLLM (tiny) |" in stdout and "| Deformable DETR (tiny) |" in stdout


def test_map_curve_reads_the_validations_of_time_budgeted_runs(tmp_path):
    map_curve = load_bench("map_curve")
    logs = tmp_path / "run" / "20260101_000000" / "vis_data"
    logs.mkdir(parents=True)
    records = [
        dict(loss=3.0, step=10),  # a training record: no metric
        dict(train_minutes=5.02, step=120, **{"coco/bbox_mAP": 0.01}),
        dict(train_minutes=10.0, step=240, **{"coco/bbox_mAP": 0.03}),
    ]
    (logs / "scalars.json").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    curve = map_curve.read_curve(tmp_path / "run", "coco/bbox_mAP")
    assert curve == [(5.02, 0.01, 120), (10.0, 0.03, 240)]
    table = map_curve.format_table({"tiny": curve, "other": curve[:1]}, "coco/bbox_mAP")
    assert "| tiny | 0.010 (5.0 min, it 120) | 0.030 (10.0 min, it 240) |" in table
    assert "| other | 0.010 (5.0 min, it 120) |  |" in table
    with pytest.raises(ValueError, match="--time-budget"):
        map_curve.read_curve(tmp_path / "run", "coco/segm_mAP")
    with pytest.raises(FileNotFoundError, match="scalars.json"):
        map_curve.read_curve(tmp_path, "coco/bbox_mAP")


def test_instruction_subset_matching_counts_wrong_classes_and_duplicates_as_false():
    match_counts = load_bench("instruction_subset").match_counts
    truths = [("dog", [0, 0, 10, 10]), ("cat", [20, 20, 30, 30])]
    detections = [
        ("dog", 0.9, [0, 0, 10, 10]),  # true positive
        ("dog", 0.8, [0, 0, 10, 9]),  # the same dog again: false
        ("dog", 0.7, [20, 20, 30, 30]),  # the cat, called "dog": false
        ("cat", 0.6, [21, 20, 30, 30]),  # true positive (IoU 0.9)
    ]
    assert match_counts(detections, truths) == (2, 2, 2)
    assert match_counts([], truths) == (0, 0, 2)
    assert match_counts(detections[:1], []) == (0, 1, 0)


def test_instruction_subset_table_shows_undefined_ratios_as_dashes():
    """An absent class has no ground truth (recall undefined); JSON stores null, the table a dash."""
    row = dict(scenario="absent class", ground_truth=0, detections=3, precision=0.0, recall=None,
               false_per_image=1.5)  # fmt: skip
    last_line = load_bench("instruction_subset").format_table([row]).splitlines()[-1]
    assert last_line == "| absent class | 0 | 3 | 0.000 | - | 1.50 | - |"


def test_instruction_subset_ap50_ranks_detections_whatever_their_scores(tmp_path):
    """AP50 over the asked classes: 1 when every object is found and outranks every false box, lower
    when a false box outranks them, 0 with no detection; other classes' objects do not count."""
    bench = load_bench("instruction_subset")
    ann_file = tmp_path / "gt.json"
    boxes = [[0, 0, 10, 10], [20, 20, 10, 10]]  # xywh, one dog per image
    gt = dict(
        images=[dict(id=i, width=64, height=64, file_name=f"{i}.jpg") for i in (1, 2)],
        categories=[dict(id=18, name="dog"), dict(id=17, name="cat")],
        annotations=[
            dict(id=i, image_id=i, category_id=18, bbox=boxes[i - 1], area=100, iscrowd=0) for i in (1, 2)
        ]
        + [dict(id=3, image_id=1, category_id=17, bbox=[40, 40, 10, 10], area=100, iscrowd=0)],
    )
    ann_file.write_text(json.dumps(gt))
    truth = bench.GroundTruth(ann_file)
    found = [dict(image_id=i, category_id=18, score=0.2, bbox=boxes[i - 1]) for i in (1, 2)]
    false = dict(image_id=1, category_id=18, score=0.9, bbox=[40, 0, 10, 10])
    assert bench.asked_ap50(truth, found, ["dog"]) == pytest.approx(1.0)
    assert 0.4 < bench.asked_ap50(truth, [*found, false], ["dog"]) < 0.9
    assert bench.asked_ap50(truth, [], ["dog"]) == 0.0


def test_instruction_subset_scores_an_absent_class_asked_alone_and_filtered_from_all_classes(tmp_path):
    """Per image, the most frequent class it lacks is asked alone (every detection false) and read from
    the all-classes request, keeping only that class's detections (the baseline)."""
    bench = load_bench("instruction_subset")
    ann_file = tmp_path / "gt.json"
    gt = dict(
        images=[dict(id=i, width=64, height=64, file_name=f"{i}.jpg") for i in (1, 2)],
        categories=[dict(id=16, name="bird"), dict(id=17, name="cat"), dict(id=18, name="dog")],
        annotations=[dict(id=i, image_id=i, category_id=18, bbox=[0, 0, 10, 10], area=100, iscrowd=0)
                     for i in (1, 2)]
        + [dict(id=3, image_id=1, category_id=17, bbox=[20, 20, 10, 10], area=100, iscrowd=0)],
    )  # fmt: skip
    ann_file.write_text(json.dumps(gt))
    truth = bench.GroundTruth(ann_file)
    assert [truth.most_frequent_absent(i) for i in (1, 2)] == ["bird", "cat"]

    class SpreadingPredictor:  # each asked class: one box on the dog, scored 0.9 / number asked
        model = SimpleNamespace(class_names=["bird", "cat", "dog"])

        def resolve(self, instruction=None, *, task=None, classes=None):
            asked = classes or (["dog"] if instruction else self.model.class_names)
            return SimpleNamespace(classes=list(asked))

        def predict(self, path, request):
            score = 0.9 / len(request.classes)
            return [SimpleNamespace(objects=[SimpleNamespace(class_name=name, score=score, box=[0, 0, 10, 10])
                                             for name in request.classes])]  # fmt: skip

    rows = {r["scenario"]: r for r in bench.run(SpreadingPredictor(), truth, tmp_path, ["dog"], 0.2, seed=0)}
    for scenario in ("subset", "all classes, filtered"):
        assert (rows[scenario]["detections"], rows[scenario]["recall"]) == (2, 1.0), scenario
    for scenario in ("absent class", "absent class, all classes filtered"):  # one false box per image
        assert (rows[scenario]["detections"], rows[scenario]["false_per_image"]) == (2, 1.0), scenario
        assert rows[scenario]["recall"] is None and rows[scenario]["ap50"] is None


def test_profile_train_step_splits_a_step_into_phases_stages_and_operators(tmp_path):
    config = write_config(tmp_path, "")
    out = tmp_path / "profile.json"
    stdout = run(
        [
            str(REPO / "bench/profile_train_step.py"),
            str(config),
            "--steps",
            "2",
            "--warmup",
            "1",
            "--out",
            str(out),
        ],
        cwd=tmp_path,
    )
    report = json.loads(out.read_text())
    assert list(report["phase_s"]) == [
        "data loading",
        "preprocessing",
        "forward",
        "backward",
        "optimizer step",
    ]
    assert all(seconds > 0 for seconds in report["phase_s"].values())
    stages = report["stage_forward_s"]
    assert set(stages) == {
        "image_tokenizer.backbone",
        "image_tokenizer.text_encoder",
        "image_tokenizer",
        "llm",
    }
    # nested: the tokenizer's time holds its backbone's; every stage fits in the forward
    assert stages["image_tokenizer"] > stages["image_tokenizer.backbone"]
    assert stages["image_tokenizer"] + stages["llm"] < report["phase_s"]["forward"]
    assert len(report["operators"]) == 15 and report["operators"][0]["self_cpu_s"] > 0
    assert "| backward |" in stdout and "| aten::" in stdout


def test_slot_ablation_takes_each_part_of_a_slot_answer_from_the_llm_or_the_seed(monkeypatch):
    import visionllm.models.decoding as decoding
    from visionllm.tasks import build_task
    from visionllm.vocab import TaskVocab

    slot_ablation = load_bench("slot_ablation")
    vocab = TaskVocab.__new__(TaskVocab)  # the tasks' flags are all that is read here
    detect, segment = build_task("detect", vocab), build_task("segment", vocab)
    model = SimpleNamespace(tasks=dict(detect=detect, segment=segment))
    llm_answer = torch.arange(2 * 3 * 5, dtype=torch.float32).view(2, 3, 5)  # (N, L, V): class + 2 locations
    prior = -torch.ones(2, 3, 5)
    monkeypatch.setattr(decoding, "parallel_slot_logits", lambda *args: [llm_answer.clone()])
    for classes, locations in (("llm", "llm"), ("seed", "llm"), ("llm", "seed"), ("seed", "seed")):
        with slot_ablation.slot_answers_from(model, classes, locations):
            (answer,) = decoding.parallel_slot_logits(None, None, None, None, [prior])
            assert detect.locations_from_seed == segment.locations_from_seed == (locations == "seed")
            assert detect.boxes_from_seed == segment.boxes_from_seed == (locations == "seed")
        assert torch.equal(answer[:, 0], (prior if classes == "seed" else llm_answer)[:, 0])
        assert torch.equal(answer[:, 1:], llm_answer[:, 1:])  # locations are the decoder's choice
    # after the block: the original decoder and each task's own choice (boxes from seeds, polygons not)
    (answer,) = decoding.parallel_slot_logits(None, None, None, None, [prior])
    assert torch.equal(answer, llm_answer)
    assert detect.locations_from_seed and not segment.locations_from_seed
    assert segment.boxes_from_seed and not detect.boxes_from_seed
    with (
        slot_ablation.slot_answers_from(model, "seed", "llm"),
        pytest.raises(ValueError, match="no slot seeds"),
    ):
        decoding.parallel_slot_logits(None, None, None, None, None)


def test_region_input_parts_weighs_the_content_term_against_how_far_the_rest_moves_between_boxes():
    from tests.test_model import CANVAS, tiny_config
    from visionllm.registry import MODELS

    cfg = tiny_config()
    cfg.tasks = dict(detect=dict(), region_classify=dict())
    cfg.eval_task = "detect"
    torch.manual_seed(0)
    model = MODELS.build(cfg).eval()
    parts = load_bench("region_input_parts").input_parts
    image = torch.randn(1, 3, CANVAS, CANVAS)
    spread_out = parts(model, [image], [torch.tensor([[2.0, 2, 20, 20], [30, 30, 60, 60], [5, 40, 25, 60]])])
    assert spread_out["boxes"] == 3
    assert spread_out["position_spread"] > 0
    assert spread_out["ratio"] == pytest.approx(spread_out["content_norm"] / spread_out["position_spread"])
    same_place = parts(model, [image, image], [torch.tensor([[2.0, 2, 20, 20]])] * 2)
    assert same_place["position_spread"] == pytest.approx(0.0, abs=1e-5)  # one box twice: nothing moves


def test_region_readout_labels_pairs_by_their_answer_and_tunes_a_copy_of_the_llm_that_learns_them():
    from tests.test_model import CANVAS, tiny_config
    from visionllm.registry import MODELS
    from visionllm.tasks.base import ImageAnnotations

    bench = load_bench("region_readout")
    cfg = tiny_config()
    cfg.tasks = dict(detect=dict(), region_compare=dict())
    cfg.eval_task = "detect"
    torch.manual_seed(0)
    model = MODELS.build(cfg).eval()
    boxes = [[2.0, 20, 12, 30], [25, 5, 40, 20], [48, 40, 62, 62]]  # centres far apart left to right
    annotations = ImageAnnotations(boxes, [0, 1, 0], CANVAS, attributes=[dict(color="red")] * 3)
    images = [(torch.randn(1, 3, CANVAS, CANVAS), annotations)]
    inputs = bench.comparison_inputs(model, images, "left", pairs_per_image=6)
    # three boxes, six ordered pairs, each clearly placed: the first is further left in half of them
    assert inputs["labels"].tolist().count(True) == 3 and len(inputs["labels"]) == 6
    assert inputs["regions"].shape == (6, 2 * model.llm.hidden_size)
    assert inputs["embeds"].shape[:2] == inputs["mask"].shape == inputs["positions"].shape
    assert bench.comparison_inputs(model, images, "color", pairs_per_image=6)["labels"].all()  # all red

    answer_ids = tuple(
        model.vocab.tokenizer(w, add_special_tokens=False).input_ids[0] for w in ("first", "second")
    )
    before = {name: p.clone() for name, p in model.llm.named_parameters()}
    tuned = bench.tune_llm(model.llm, inputs, answer_ids, steps=200, lr=3e-3, batch_size=6)
    assert all(torch.equal(p, before[name]) for name, p in model.llm.named_parameters())  # a copy is tuned
    assert bench.llm_accuracy(tuned, inputs, answer_ids) == 1.0  # six pairs, learnt by heart


def test_region_readout_probe_reads_a_linearly_separable_answer_and_not_noise():
    probe = load_bench("region_readout").linear_probe
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(400, 8, generator=generator)
    labels = features[:, 3] + 0.5 * features[:, 5] > 0
    assert probe(features[:300], labels[:300], features[300:], labels[300:]) > 0.95
    noise = torch.rand(400, generator=generator) > 0.5
    assert probe(features[:300], noise[:300], features[300:], noise[300:]) < 0.7
