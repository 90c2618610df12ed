"""Where a training step's time goes: data, each model stage's forward, backward, optimizer.

Builds the config's model, train dataloader (in this process) and optimizer wrapper as mmengine's
Runner would, runs ``--warmup`` steps, then ``--steps`` timed steps, and prints two markdown tables:

* the step split into data loading, preprocessing, the forward of each stage (inclusive wall time of
  the modules in ``STAGES``, measured with forward hooks; "rest of forward" is what the model does
  between them: request sampling, target encoding, slot priors, matching, losses), backward and the
  optimizer step, each as a share of the step;
* the torch profiler's costliest operators by self CPU time (forward and backward together).

Shares are within this run, so they compare across machines where absolute times do not. The profiler
itself slows some operators (large fresh allocations about fivefold): it says where to look, and a change's
gain is then measured from training logs (docs/benchmarks.md, "the task head read once per batch")::

    python bench/profile_train_step.py configs/visionllm_tiny_synthetic.py --out bench/results/profile.json
"""

from __future__ import annotations

import os
import platform
import sys
import time
from collections import defaultdict
from pathlib import Path

import visionllm  # noqa: F401  (its platform fixes must run before mmdet / mmcv are imported)

# isort: split
import torch
from mmengine.config import Config, DictAction
from mmengine.optim import build_optim_wrapper
from mmengine.runner import Runner

from visionllm.engine.launch import prepare_synthetic_data
from visionllm.registry import MODELS, register_all_modules

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/common.py, also when loaded by file path
from common import argument_parser, table, write_json

# model stages timed by forward hooks (inclusive; a module called several times per step adds up)
STAGES = ("image_tokenizer.backbone", "image_tokenizer.text_encoder", "image_tokenizer", "llm")


class StageTimer:
    """Inclusive forward wall time per named submodule, from forward pre/post hooks."""

    def __init__(self, model: torch.nn.Module, names: tuple[str, ...]) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._started: dict[str, list[float]] = defaultdict(list)
        modules = dict(model.named_modules())
        for name in names:
            if name in modules:
                modules[name].register_forward_pre_hook(self._pre(name))
                modules[name].register_forward_hook(self._post(name))

    def _pre(self, name: str):
        def hook(module, args):
            self._started[name].append(time.perf_counter())

        return hook

    def _post(self, name: str):
        def hook(module, args, output):
            self.seconds[name] += time.perf_counter() - self._started[name].pop()

        return hook


def build(config: str, cfg_options: dict | None, seed: int):
    """Model, train dataloader (no worker processes: the load time is measured here) and optimizer."""
    register_all_modules()
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    prepare_synthetic_data(cfg)
    cfg.train_dataloader.update(num_workers=0, persistent_workers=False)
    torch.manual_seed(seed)
    model = MODELS.build(cfg.model)
    loader = Runner.build_dataloader(cfg.train_dataloader, seed=seed)
    model.class_names = list(loader.dataset.metainfo["classes"])
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    return model.train(), loader, optim_wrapper


def profile(config: str, steps: int, warmup: int, cfg_options: dict | None, seed: int = 0) -> dict:
    """Run warm-up and timed steps; return the per-phase seconds and the top operators."""
    model, loader, optim_wrapper = build(config, cfg_options, seed)
    batches = iter(loader)
    timer = StageTimer(model, STAGES)
    phases: dict[str, float] = defaultdict(float)

    def step(record: bool) -> None:
        clock = time.perf_counter()
        marks = {}
        batch = next(batches)
        marks["data loading"] = time.perf_counter()
        data = model.data_preprocessor(batch, True)
        marks["preprocessing"] = time.perf_counter()
        losses = model(**data, mode="loss")
        loss, _ = model.parse_losses(losses)
        marks["forward"] = time.perf_counter()
        optim_wrapper.backward(loss)
        marks["backward"] = time.perf_counter()
        optim_wrapper.step()
        optim_wrapper.zero_grad()
        marks["optimizer step"] = time.perf_counter()
        if record:
            for name, end in marks.items():
                phases[name] += end - clock
                clock = end

    for _ in range(warmup):
        step(False)
    timer.seconds.clear()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step(True)
    operators = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    return dict(
        config=config,
        steps=steps,
        batch_size=loader.batch_size,
        threads=torch.get_num_threads(),
        machine=f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        phase_s={k: v / steps for k, v in phases.items()},
        stage_forward_s={k: timer.seconds[k] / steps for k in STAGES if k in timer.seconds},
        operators=[
            dict(name=e.key, self_cpu_s=e.self_cpu_time_total / 1e6 / steps, calls=e.count / steps)
            for e in operators[:15]
        ],
    )


def tables(report: dict) -> str:
    """The phase/stage table and the operator table, as markdown."""
    step_s = sum(report["phase_s"].values())
    stage = report["stage_forward_s"]
    phases = []

    def row(name: str, seconds: float) -> None:
        phases.append([name, f"{seconds:.3f}", f"{seconds / step_s:.0%}"])

    for name, seconds in report["phase_s"].items():
        row(name, seconds)
        if name == "forward":
            # a stage's own time: its inclusive time less that of the stages nested in it
            for key, value in stage.items():
                row(f"  forward: {key}", value - sum(v for k, v in stage.items() if k.startswith(key + ".")))
            row(
                "  forward: rest (requests, targets, matching, priors)",
                seconds - sum(v for k, v in stage.items() if "." not in k),
            )
    operators = [dict(op, share=op["self_cpu_s"] / step_s) for op in report["operators"]]
    return "\n\n".join(
        [
            f"{report['config']}: batch {report['batch_size']}, {report['threads']} threads, "
            f"{step_s:.3f} s per step (mean of {report['steps']})",
            table("phase | s / step | share", "", phases, align="lrr"),
            table(
                "operator (self CPU) | s / step | calls / step | share",
                "{name} | {self_cpu_s:.3f} | {calls:.0f} | {share:.0%}",
                operators,
                align="lrrr",
            ),
        ]
    )


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("config", nargs="?", default="configs/visionllm_tiny_synthetic.py")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction)
    parser.add_argument("--out", type=Path, help="write the numbers as JSON here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    report = profile(args.config, args.steps, args.warmup, args.cfg_options)
    print(tables(report))
    if args.out:
        write_json(args.out, report)


if __name__ == "__main__":
    main()
