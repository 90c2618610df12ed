"""Training step time, tokens/s, peak memory and MFU of a VisionLLM config on one device, with gradient
checkpointing on and off, plus parallel vs autoregressive inference latency (issue #6).

Builds the config's model (default: ResNet-50 + LLaMA-7B with LoRA, ``configs/visionllm_r50_llama7b_coco.py``)
with random weights directly on the device, the LLM in ``--dtype`` (bf16 by default; the rest of the model
stays fp32, as in the config's training), and trains it with the config's optimiser (``optim_wrapper``:
AdamW, gradient clipping, parameter-wise options) on a fixed synthetic batch: the config's batch size of
random images at the config's ``image_size`` (1024 for COCO), each with ``--objects`` objects (random boxes,
24-vertex elliptic polygons) of random classes. No LLaMA tokenizer ships offline, so without ``--llm-path``
the LLM uses the packaged MiniLM tokenizer (30522 rows + task tokens instead of 32000 + task tokens).
The torch RNG is re-seeded before every step, so every step draws the same tasks and instructions and
does exactly the same work; each gradient-checkpointing mode gets one FLOP-counting step, ``--warmup``
untimed steps and ``--steps`` timed ones. A step is forward + backward + optimiser step (``update_params``).

Model FLOPs (the MFU numerator) are counted, not estimated: ``torch.utils.flop_counter.FlopCounterMode``
over the forward and, separately, over backward + optimiser step, of a real training step. It counts
matmuls, convolutions and attention kernels by their shapes, i.e. per weight used on a token 2N in forward
and, in backward, 2N for the activation gradient plus 2N for the weight gradient only where the weight
trains: 4N per token for LoRA's frozen base weights, 6N for trainable weights, plus attention scores (QK^T
and AV, 4·T_q·T_k·d per head forward, counted over the full square for causal masks as torch does).
Corrections, so that model FLOPs are the same whichever way the step is run:

* gradient checkpointing recomputes the checkpointed decoder layers' forward inside backward; that
  recomputation is not model work, so the forward FLOPs of those layers (from the per-module counts of
  the forward pass) are subtracted from the checkpointed step's count. The counting step runs with
  ``torch.utils.checkpoint.set_checkpoint_early_stop(False)``, so that the recomputation is exactly that
  forward (by default torch stops recomputing once the saved tensors are back, skipping e.g. the last
  MLP projection; the timed steps keep that default). With checkpointing off there is nothing to
  subtract; both modes must then give the same number (the CPU test checks it).
* torch counts flash/efficient-attention backward as 5 score-sized matmuls, one of them the kernel's own
  recomputation of QK^T; model FLOPs take 4 of the 5 (backward = 2x forward).
* on CPU torch runs attention as ``_scaled_dot_product_flash_attention_for_cpu``, which torch's counter
  does not know; it is counted here with torch's GPU formulas.
Deformable attention's bilinear sampling (``grid_sample``) and elementwise ops are not counted: FLOPs are
those of matmuls, convolutions and attention only, the usual MFU convention. MFU = model FLOPs per step /
step time / ``--peak-flops`` (default 790e12: dense bf16 of an H100-class card; an H100 SXM's datasheet says
989e12, PCIe 756e12 - pass your card's). Beside the counted number the JSON has an analytic estimate of the
LLM decoder alone (per LLM position, padding included as it is computed: 4N frozen + 6N trainable 2-D
decoder weights, + 12·L·T·h attention per position of a length-T sequence, h = hidden size, L = layers;
embedding lookups and the task head left out), computed from the sequence shapes the LLM actually saw, as
a cross-check.

tokens/s: LLM positions that are not padding, summed over every LLM call of the step (the parallel pass
and the autoregressive pass), per second. Peak memory: ``torch.cuda.max_memory_allocated`` over the timed
steps of each mode on GPU; on CPU the process's max RSS so far (it never goes down, so the second mode's
number includes the first's peak). Inference latency: one image, the detection request over 6 classes,
parallel decoding with K slots and autoregressive decoding forced to emit exactly K objects
(``bench/decode_speed.py``), median of ``--latency-repeats`` after one warm-up.

On one GPU (default config, bf16; estimated 3-6 minutes on an H100, most of it building the model and the
100-object autoregressive decode - not yet run on a GPU; latency rows predicted to end after
``--deadline-minutes``, 9 by default, are skipped and say so)::

    python bench/full_scale_gpu.py --out bench/results/full_scale_gpu.json

Tiny, on CPU (about a minute on 2 cores)::

    python bench/full_scale_gpu.py --config configs/visionllm_tiny_synthetic.py --device cpu \\
        --dtype float32 --steps 2 --out bench/results/full_scale_cpu_tiny.json
"""

from __future__ import annotations

import gc
import os
import platform
import statistics
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import visionllm  # noqa: F401  (its platform fixes must run before mmdet / mmcv are imported)

# isort: split
import numpy as np
import torch
from mmdet.datasets import CocoDataset
from mmdet.structures import DetDataSample
from mmdet.structures.mask import PolygonMasks
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.optim import build_optim_wrapper
from mmengine.structures import InstanceData
from torch.utils.checkpoint import set_checkpoint_early_stop
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count
from transformers.modeling_layers import GradientCheckpointingLayer

from visionllm.data.synthetic import CLASSES as SYNTHETIC_CLASSES
from visionllm.registry import MODELS, register_all_modules

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/common.py, also when loaded by file path
import decode_speed
from common import (
    REPO,
    add_device,
    argument_parser,
    peak_rss_mib,
    synchronize,
    table,
    timed,
    timing_row,
    write_json,
)

aten = torch.ops.aten
SDPA_BACKWARD = {
    aten._scaled_dot_product_efficient_attention_backward,
    aten._scaled_dot_product_flash_attention_backward,
    aten._scaled_dot_product_cudnn_attention_backward,
    aten._scaled_dot_product_flash_attention_for_cpu_backward,
}


# ------------------------------------------------------------------------------------------ building
def build_model(cfg: Config, device: torch.device, classes: list[str]):
    """The config's model, its parameters created on ``device`` (random init there, no CPU copy)."""
    torch.manual_seed(0)
    with device:
        model = MODELS.build(cfg.model)
    model = model.to(device)
    model.class_names = list(classes)
    return model


def default_classes(cfg: Config) -> list[str]:
    """COCO's 80 names for a model that takes that many classes per instruction, else the synthetic 6."""
    if cfg.model.llm.get("max_classes", 0) >= 80:
        return list(CocoDataset.METAINFO["classes"])
    return list(SYNTHETIC_CLASSES)


def make_batch(
    batch_size: int, image_size: int, objects: int, num_classes: int, device: torch.device, seed: int = 0
) -> tuple[torch.Tensor, list[DetDataSample]]:
    """Random normalised images and samples with ``objects`` boxes + 24-vertex ellipse polygons each."""
    rng = np.random.default_rng(seed)
    inputs = torch.randn(batch_size, 3, image_size, image_size, generator=torch.Generator().manual_seed(seed))
    samples = []
    angles = np.linspace(0, 2 * np.pi, 24, endpoint=False)
    for index in range(batch_size):
        size = rng.uniform(0.05, 0.4, (objects, 2)) * image_size
        corner = rng.uniform(0, 1, (objects, 2)) * (image_size - size)
        boxes = np.concatenate([corner, corner + size], 1)
        centre, radius = corner + size / 2, size / 2
        polygons = [
            [np.stack([c[0] + r[0] * np.cos(angles), c[1] + r[1] * np.sin(angles)], 1).ravel()]
            for c, r in zip(centre, radius)
        ]
        sample = DetDataSample(
            metainfo=dict(
                img_id=index,
                img_shape=(image_size, image_size),
                ori_shape=(image_size, image_size),
                pad_shape=(image_size, image_size),
                batch_input_shape=(image_size, image_size),
                scale_factor=(1.0, 1.0),
            )
        )
        gt = InstanceData()
        gt.bboxes = torch.as_tensor(boxes, dtype=torch.float32)
        gt.labels = torch.as_tensor(rng.integers(0, num_classes, objects), dtype=torch.long)
        gt.masks = PolygonMasks(polygons, image_size, image_size)
        sample.gt_instances = gt
        samples.append(sample)
    return inputs.to(device), samples


def set_gradient_checkpointing(model, enabled: bool) -> None:
    """Switch the LLM's (transformers) gradient checkpointing, through any peft wrapper."""
    llm = model.llm.llm
    base = llm.get_base_model() if hasattr(llm, "get_base_model") else llm
    kwargs = {"use_reentrant": False}
    if hasattr(base, "activation_checkpointing_enable"):  # transformers >= 5.x's name
        if enabled:
            base.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            base.activation_checkpointing_disable()
    elif enabled:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    else:
        base.gradient_checkpointing_disable()


def checkpointed_layers(model) -> list[str]:
    """Names of the modules whose forward gradient checkpointing recomputes in backward."""
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, GradientCheckpointingLayer) and module.gradient_checkpointing
    ]


# -------------------------------------------------------------------------------------------- counting
class LLMCalls:
    """Records (batch, length, real tokens) of every call of the LLM (``model.llm``) while active."""

    def __init__(self, model) -> None:
        self.calls: list[tuple[int, int, int]] = []
        self.active = False
        model.llm.register_forward_pre_hook(self._record)

    def _record(self, module, args) -> None:
        if self.active:
            embeds, mask = args[0], args[1]
            self.calls.append((embeds.shape[0], embeds.shape[1], int(mask.sum())))

    def __enter__(self) -> LLMCalls:
        self.calls, self.active = [], True
        return self

    def __exit__(self, *exc) -> None:
        self.active = False


def _cpu_sdpa_flops(query_shape, key_shape, value_shape, *args, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _cpu_sdpa_backward_flops(grad_out_shape, query_shape, key_shape, value_shape, *args, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


def flop_counter() -> FlopCounterMode:
    """torch's FLOP counter, also knowing the CPU flash-attention kernels."""
    return FlopCounterMode(
        display=False,
        custom_mapping={
            aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flops,
            aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_sdpa_backward_flops,
        },
    )


def _total(counter: FlopCounterMode, module: str = "Global") -> int:
    return sum(counter.get_flop_counts().get(module, {}).values())


def _sdpa_backward(counter: FlopCounterMode) -> int:
    counts = counter.get_flop_counts().get("Global", {})
    return sum(v for op, v in counts.items() if op in SDPA_BACKWARD)


def train_step(model, optim_wrapper, inputs: torch.Tensor, samples: list, seed: int) -> float:
    """One training step (the same work every time: the RNG is re-seeded); returns the loss."""
    torch.manual_seed(seed)
    losses = model(inputs, samples, mode="loss")
    loss = sum(losses.values())
    optim_wrapper.update_params(loss)
    return float(loss.detach())


def counted_step(
    model, optim_wrapper, inputs: torch.Tensor, samples: list, seed: int, calls: LLMCalls
) -> dict[str, Any]:
    """A training step under the FLOP counter: raw counts and the model FLOPs derived from them."""
    torch.manual_seed(seed)
    # early stopping would recompute only part of a layer's forward; without it the recomputation is
    # exactly the checkpointed layers' forward, which is what gets subtracted below
    with calls, flop_counter() as forward, set_checkpoint_early_stop(False):
        losses = model(inputs, samples, mode="loss")  # through __call__: module names start "VisionLLM."
        loss = sum(losses.values())
    with flop_counter() as backward:
        optim_wrapper.update_params(loss)
    root = type(model).__name__
    recompute = sum(_total(forward, f"{root}.{name}") for name in checkpointed_layers(model))
    flash_recompute = _sdpa_backward(backward) // 5  # the kernel's own QK^T recomputation
    return dict(
        forward_flops=_total(forward),
        backward_flops=_total(backward),
        checkpoint_recompute_flops=recompute,
        attention_backward_recompute_flops=flash_recompute,
        model_flops=_total(forward) + _total(backward) - recompute - flash_recompute,
        llm_calls=[dict(batch=b, length=t, tokens=n) for b, t, n in calls.calls],
        loss=float(loss.detach()),
    )


def analytic_llm_flops(model, calls: list[dict]) -> dict[str, Any]:
    """LLM decoder FLOPs of one training step from its call shapes: per position 2N forward for every
    2-D decoder weight, backward 2N (frozen) or 4N (trainable); attention 12·L·T·h per position."""
    decoder = model.llm.decoder
    layers = decoder.layers
    frozen = trainable = 0
    for parameter in layers.parameters():
        if parameter.dim() == 2:
            if parameter.requires_grad:
                trainable += parameter.numel()
            else:
                frozen += parameter.numel()
    hidden = decoder.config.hidden_size
    num_layers = len(layers)
    positions = sum(c["batch"] * c["length"] for c in calls)
    attention = sum(c["batch"] * 12 * num_layers * hidden * c["length"] ** 2 for c in calls)
    return dict(
        frozen_weights=frozen,
        trainable_weights=trainable,
        positions=positions,
        linear_flops=positions * (4 * frozen + 6 * trainable),
        attention_flops=attention,
        total_flops=positions * (4 * frozen + 6 * trainable) + attention,
    )


# ------------------------------------------------------------------------------------------ measuring
def measure_training(
    model, optim_wrapper, inputs, samples, calls: LLMCalls, checkpointing: bool, args, device: torch.device
) -> dict[str, Any]:
    """FLOP-counting step, warm-up and timed steps with gradient checkpointing on or off."""
    set_gradient_checkpointing(model, checkpointing)
    model.train()
    counted = counted_step(model, optim_wrapper, inputs, samples, args.seed, calls)
    for _ in range(args.warmup):
        train_step(model, optim_wrapper, inputs, samples, args.seed)
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(args.steps):
        synchronize(device)
        start = time.perf_counter()
        train_step(model, optim_wrapper, inputs, samples, args.seed)
        synchronize(device)
        times.append(time.perf_counter() - start)
    step_s = statistics.median(times)
    tokens = sum(c["tokens"] for c in counted["llm_calls"])
    row = dict(
        gradient_checkpointing=checkpointing,
        checkpointed_layers=len(checkpointed_layers(model)),
        step_s=step_s,
        step_all_s=times,
        llm_tokens_per_step=tokens,
        tokens_per_s=tokens / step_s,
        images_per_s=inputs.shape[0] / step_s,
        **counted,
        model_flops_per_s=counted["model_flops"] / step_s,
        mfu=counted["model_flops"] / step_s / args.peak_flops,
        analytic_llm=analytic_llm_flops(model, counted["llm_calls"]),
    )
    if device.type == "cuda":
        row["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    else:
        row["peak_rss_gib"] = peak_rss_mib() / 2**10
    return row


def measure_latency(
    model,
    objects: list[int],
    repeats: int,
    image_size: int,
    device: torch.device,
    deadline: float = float("inf"),
) -> list[dict]:
    """Per-image latency of both decoders at K objects: K parallel slots (the model's slot embeddings,
    extended with random ones of the same scale when K is larger), autoregressive decoding forced to
    emit K objects. An object count whose predicted time (the previous count's, scaled by the number of
    objects) would end past ``deadline`` (a ``time.perf_counter`` value) is skipped and says so."""
    model.eval()
    image = torch.rand(1, 3, image_size, image_size, generator=torch.Generator().manual_seed(0)).to(device)
    slots, grammar, max_objects = model.slot_embed, model.grammar, model.max_objects
    vocab = model.vocab
    model.grammar = decode_speed.ExactCountGrammar(vocab.num_tokens, vocab.to_local(vocab.eoo_id))
    rows = []
    try:
        for count in objects:
            if rows:
                previous = rows[-1]
                per_object_s = (
                    (previous["parallel_ms"] + previous["autoregressive_ms"]) / 1000 / previous["objects"]
                )
                predicted = per_object_s * count * (repeats + 1)
                if time.perf_counter() + predicted > deadline:
                    rows.append(
                        dict(objects=count, skipped=f"predicted {predicted:.0f} s would pass the deadline")
                    )
                    continue
            extra = torch.randn(max(count - slots.shape[0], 0), slots.shape[1], device=device) * slots.std()
            model.slot_embed = torch.nn.Parameter(
                torch.cat([slots.detach()[:count], extra.to(slots.dtype)]), requires_grad=False
            )
            model.max_objects = count
            functions = {
                mode: partial(decode_speed.predict, model, image, mode) for mode in decode_speed.MODES
            }
            times, results = timed(functions, repeats, device)
            for mode in decode_speed.MODES:
                if results[mode] != count:
                    raise RuntimeError(f"{mode} decoding produced {results[mode]} objects, expected {count}")
            row = timing_row(count, repeats, times)
            row["ratio"] = row["autoregressive_ms"] / row["parallel_ms"]
            rows.append(row)
    finally:
        model.slot_embed, model.grammar, model.max_objects = slots, grammar, max_objects
    return rows


# ----------------------------------------------------------------------------------------------- report
def markdown_tables(report: dict) -> str:
    memory = "peak memory GiB" if report["device"].startswith("cuda") else "peak RSS GiB (process, so far)"
    training = []
    for row in report["training"]:
        checkpointing = "on" if row["gradient_checkpointing"] else "off"
        if "error" in row:
            training.append([checkpointing, row["error"], *[""] * 6])
            continue
        memory_gib = row.get("peak_memory_gib", row.get("peak_rss_gib"))
        tflop, tflop_s = row["model_flops"] / 1e12, row["model_flops_per_s"] / 1e12
        training.append(
            dict(row, checkpointing=checkpointing, memory_gib=memory_gib, tflop=tflop, tflop_s=tflop_s)
        )
    latency = [
        [row["objects"], f"skipped: {row['skipped']}", "", ""] if "skipped" in row else row
        for row in report["latency"]
    ]
    training_table = table(
        f"gradient checkpointing | step s | tokens/s | images/s | {memory} "
        "| model TFLOP/step | TFLOP/s | MFU",
        "{checkpointing} | {step_s:.3f} | {tokens_per_s:.0f} | {images_per_s:.2f} | {memory_gib:.2f} "
        "| {tflop:.3f} | {tflop_s:.2f} | {mfu:.1%}",
        training,
        align="lrrrrrrr",
    )
    latency_table = table(
        "objects | parallel ms | autoregressive ms | AR / parallel",
        "{objects} | {parallel_ms:.1f} | {autoregressive_ms:.1f} | {ratio:.1f}x",
        latency,
        align="rrrr",
    )
    return training_table + "\n\n" + latency_table


def main(argv: list[str] | None = None) -> dict:
    parser = argument_parser(__doc__)
    parser.add_argument("--config", default=str(REPO / "configs/visionllm_r50_llama7b_coco.py"))
    parser.add_argument("--llm-path", help="a local LLM directory (default: random LLM from the config)")
    add_device(parser)
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--batch-size", type=int, help="default: the config's train batch size")
    parser.add_argument("--image-size", type=int, help="default: the config's image_size")
    parser.add_argument("--objects", type=int, default=7, help="objects per training image (COCO: ~7)")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per mode")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per mode after the counted one")
    parser.add_argument(
        "--checkpointing", nargs="+", choices=["on", "off"], default=["on", "off"], help="modes, in order"
    )
    parser.add_argument("--peak-flops", type=float, default=790e12, help="device peak FLOP/s for MFU")
    parser.add_argument("--latency-objects", type=int, nargs="*", default=[10, 100])
    parser.add_argument("--latency-repeats", type=int, default=3)
    parser.add_argument(
        "--deadline-minutes",
        type=float,
        default=9.0,
        help="skip latency rows predicted to end later than this after the start",
    )
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/full_scale_gpu.json")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    device = torch.device(args.device)
    MMLogger.get_instance("full_scale_gpu", log_level="WARNING")  # mmengine's INFO lines are noise here
    register_all_modules()
    cfg = Config.fromfile(args.config)
    cfg.model.llm.dtype = args.dtype
    if args.llm_path:
        cfg.model.llm.path = args.llm_path
    elif cfg.model.llm.get("path") is None and cfg.model.llm.get("tokenizer_path") is None:
        cfg.model.llm.tokenizer_path = "minilm"
    batch_size = args.batch_size or cfg.train_dataloader.batch_size
    image_size = args.image_size or cfg.image_size
    classes = default_classes(cfg)

    model = build_model(cfg, device, classes)
    build_s = time.perf_counter() - start
    calls = LLMCalls(model)
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    inputs, samples = make_batch(batch_size, image_size, args.objects, len(classes), device, args.seed)
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    training = []
    for mode in args.checkpointing:
        try:
            training.append(
                measure_training(model, optim_wrapper, inputs, samples, calls, mode == "on", args, device)
            )
        except torch.OutOfMemoryError as error:
            training.append(dict(gradient_checkpointing=mode == "on", error=f"out of memory: {error}"[:300]))
        optim_wrapper.zero_grad()
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    del optim_wrapper  # its AdamW state is not needed for inference
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    latency = measure_latency(
        model,
        args.latency_objects,
        args.latency_repeats,
        image_size,
        device,
        deadline=start + args.deadline_minutes * 60,
    )
    report = dict(
        config=os.path.relpath(args.config, REPO),
        llm_path=args.llm_path,
        device=str(device),
        device_name=torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
        dtype=args.dtype,
        threads=torch.get_num_threads(),
        torch=torch.__version__,
        params=params,
        trainable_params=trainable,
        batch_size=batch_size,
        image_size=image_size,
        objects_per_image=args.objects,
        num_classes=len(classes),
        peak_flops=args.peak_flops,
        build_s=build_s,
        training=training,
        latency=latency,
    )
    report["total_s"] = time.perf_counter() - start
    print(markdown_tables(report))
    write_json(args.out, report)
    return report


if __name__ == "__main__":
    main()
