"""What the bench scripts share: the command line's common parts, markdown tables, the JSON results file,
and timing and memory measurements.

A script imports it after putting its own folder first on ``sys.path`` (``python bench/x.py`` does that
already; a test that loads the script by its path does not)::

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from common import REPO, argument_parser, ...

Only the standard library is imported here at module level (a script imports ``visionllm`` first, for its
platform fixes); torch is imported where a function needs it.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------- command line
def argument_parser(doc: str | None) -> argparse.ArgumentParser:
    """A parser whose help is the script's docstring, line breaks kept."""
    return argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def add_device(parser: argparse.ArgumentParser) -> None:
    """``--device``: CUDA when there is one, else the CPU."""
    import torch

    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")


def add_object_counts(parser: argparse.ArgumentParser) -> None:
    """``--objects`` (the object counts to time) and ``--repeats`` (timed runs per count, or one for all);
    ``repeats_per_count`` checks and expands them."""
    parser.add_argument("--objects", type=int, nargs="+", default=[10, 50, 100])
    parser.add_argument(
        "--repeats",
        type=int,
        nargs="+",
        default=[5, 5, 3],
        help="timed runs per object count (or one for all)",
    )


def repeats_per_count(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[int]:
    """One ``--repeats`` value per ``--objects`` value (a single value serves them all)."""
    repeats = args.repeats * len(args.objects) if len(args.repeats) == 1 else args.repeats
    if len(repeats) != len(args.objects):
        parser.error("give one --repeats value, or one per --objects value")
    return repeats


# ---------------------------------------------------------------------------------------------- output
def table_row(cells: Iterable[object]) -> str:
    """``| a | b |``."""
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def table(header: str, row: str, rows: Iterable[Mapping | Sequence], align: str) -> str:
    """A markdown table. ``header``: the column titles, separated by ``" | "``; ``row``: the cells'
    template, formatted with a mapping row's fields (``"{name} | {step_s:.3f}"``); a row that is a sequence
    is taken as its cells. ``align``: one letter per column, ``l`` left or ``r`` right."""
    rule = {"l": "---", "r": "---:"}
    lines = [f"| {header} |", "|" + "".join(f"{rule[letter]}|" for letter in align)]
    lines += [f"| {row.format(**r)} |" if isinstance(r, Mapping) else table_row(r) for r in rows]
    return "\n".join(lines)


def dash(value: float | None, spec: str) -> str:
    """``value`` formatted by ``spec``, or ``-`` when it is undefined (None)."""
    return "-" if value is None else format(value, spec)


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON (its folder created if needed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


# ------------------------------------------------------------------------------------------ data
def annotated_images(predictor: Any, dataset: Any, limit: int) -> list[tuple[Any, Any]]:
    """The first ``limit`` annotated images of a config's dataset (``data_root``, ``ann_file``,
    ``data_prefix.img``), each as the model's (1,3,H,W) input (``predictor``'s test pipeline and the
    model's preprocessor) and its ``ImageAnnotations`` in model-input pixels: what region questions are
    asked about."""
    import numpy as np
    from PIL import Image

    from visionllm.tasks.base import ImageAnnotations

    model = predictor.model
    root = Path(dataset.data_root)
    coco = json.loads((root / dataset.ann_file).read_text())
    category_ids = [category["id"] for category in coco["categories"]]
    annotations_of: dict[int, list] = {}
    for annotation in coco["annotations"]:
        annotations_of.setdefault(annotation["image_id"], []).append(annotation)
    images = []
    for image in coco["images"]:
        if len(images) == limit:
            break
        if image["id"] not in annotations_of:
            continue
        rgb = np.asarray(Image.open(root / dataset.data_prefix.img / image["file_name"]).convert("RGB"))
        packed = predictor.pipeline(dict(img=rgb, img_id=image["id"]))
        data = model.data_preprocessor(dict(inputs=[packed["inputs"]], data_samples=[packed["data_samples"]]))
        meta = packed["data_samples"].metainfo
        annotations = ImageAnnotations.from_coco(
            annotations_of[image["id"]], category_ids, model._canvas_size(meta), meta["scale_factor"]
        )
        images.append((data["inputs"], annotations))
    return images


# ------------------------------------------------------------------------------------------ measuring
def synchronize(device) -> None:
    """Wait for the device's queued work (CUDA); nothing to wait for on the CPU."""
    if device.type == "cuda":
        import torch

        torch.cuda.synchronize(device)


def timed(
    functions: dict[str, Callable[[], Any]], repeats: int, device
) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """Wall-clock milliseconds of each function over ``repeats`` rounds after a warm-up round, and each
    one's last result. Every round calls every function once, so drifts in machine load hit all alike."""
    times: dict[str, list[float]] = {name: [] for name in functions}
    results: dict[str, Any] = {}
    for round_index in range(repeats + 1):
        for name, function in functions.items():
            synchronize(device)
            start = time.perf_counter()
            results[name] = function()
            synchronize(device)
            if round_index > 0:
                times[name].append((time.perf_counter() - start) * 1000)
    return times, results


def timing_row(objects: int, repeats: int, times: dict[str, list[float]]) -> dict[str, Any]:
    """A result row: the object count, the repeats, and per timed function ``<name>_ms`` (the median)
    and ``<name>_all_ms`` (every timed run)."""
    row: dict[str, Any] = dict(objects=objects, repeats=repeats)
    for name, measured in times.items():
        row[f"{name}_ms"] = statistics.median(measured)
        row[f"{name}_all_ms"] = measured
    return row


def peak_rss_mib() -> float:
    """This process's peak resident set size so far (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10
