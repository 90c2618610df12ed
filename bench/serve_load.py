"""``visionllm serve`` under load: a bounded number of ``POST /v1/predict`` requests at each concurrency.

Starts the server on a free 127.0.0.1 port (its own process, so its memory can be read), warms it up,
then per concurrency level sends ``--requests`` multipart uploads of one synthetic 128 px image from that
many client threads, and reports throughput, p50 / p95 latency, errors (any non-200 answer or failed
connection) and the server's resident memory before and after the level. Only loopback is ever
contacted. Prints a markdown table and writes the numbers as JSON::

    python bench/serve_load.py --checkpoint work_dirs/demo/iter_600.pth --out bench/results/serve_load.json
"""

from __future__ import annotations

import io
import os
import platform
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO

import httpx
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/common.py, also when loaded by file path
from common import REPO, argument_parser, table, write_json

INSTRUCTION = "find all the circles and squares"


def shapes_png(width: int = 128, height: int = 128) -> bytes:
    """A synthetic picture as PNG bytes: a yellow circle and a blue square on grey (the bench's upload,
    and tests/test_serve.py's)."""
    image = Image.new("RGB", (width, height), (60, 60, 60))
    draw = ImageDraw.Draw(image)
    draw.ellipse((15, 15, 60, 60), fill=(250, 200, 0))
    draw.rectangle((70, 50, 115, 110), fill=(0, 120, 250))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def rss_mib(pid: int) -> float:
    """A process's resident set size now (Linux ``/proc``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise ValueError(f"no VmRSS for process {pid}")


def run_level(url: str, image: bytes, requests: int, concurrency: int, fields: dict[str, str]) -> dict:
    """Send ``requests`` predictions from ``concurrency`` threads (one HTTP client each); the numbers."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    remaining = iter(range(requests))

    def worker() -> None:
        with httpx.Client(timeout=120) as client:
            while True:
                with lock:
                    if next(remaining, None) is None:
                        return
                start = time.perf_counter()
                try:
                    reply = client.post(
                        f"{url}/v1/predict", files={"image": ("load.png", image, "image/png")}, data=fields
                    )
                    failure = None if reply.status_code == 200 else f"{reply.status_code}: {reply.text[:200]}"
                except httpx.HTTPError as error:
                    failure = f"{type(error).__name__}: {error}"
                with lock:
                    latencies.append((time.perf_counter() - start) * 1000)
                    if failure:
                        errors.append(failure)

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        for future in [pool.submit(worker) for _ in range(concurrency)]:
            future.result()
    seconds = time.perf_counter() - start
    return dict(
        concurrency=concurrency,
        requests=requests,
        errors=len(errors),
        first_errors=errors[:3],
        seconds=seconds,
        throughput=requests / seconds,
        p50_ms=statistics.median(latencies),
        p95_ms=statistics.quantiles(latencies, n=20, method="inclusive")[18],
    )


def start_server(
    checkpoint: str, config: str | None, options: Sequence[str] = (), log: IO | int = subprocess.DEVNULL
) -> tuple[subprocess.Popen, str]:
    """``visionllm serve`` (with extra ``options``) on a free loopback port, its output to ``log``; the
    process and its URL once ``/healthz`` answers. RuntimeError when it does not start within 3 minutes."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [str(Path(sys.executable).parent / "visionllm"), "serve", "--checkpoint", str(checkpoint)]
    command += ["--port", str(port), *(["--config", config] if config else []), *options]
    process = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.5)
    process.kill()
    raise RuntimeError(f"the server did not start (exit code {process.wait()})")


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--checkpoint", default="work_dirs/demo/iter_600.pth")
    parser.add_argument("--config", help="default: the config saved in the checkpoint")
    parser.add_argument("--requests", type=int, default=200, help="per concurrency level (default: 200)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--warmup", type=int, default=5, help="requests before measuring")
    parser.add_argument("--score-thr", type=float, default=0.3)
    parser.add_argument("--out", type=Path, help="write the numbers as JSON")
    args = parser.parse_args()
    if not 1 <= args.requests <= 10_000:
        parser.error("--requests must be between 1 and 10000")

    image, fields = shapes_png(), {"instruction": INSTRUCTION, "score_thr": str(args.score_thr)}
    try:
        process, url = start_server(args.checkpoint, args.config)
    except RuntimeError as error:
        sys.exit(str(error))
    try:
        run_level(url, image, args.warmup, 1, fields)
        rows = []
        for concurrency in args.concurrency:
            before = rss_mib(process.pid)
            row = run_level(url, image, args.requests, concurrency, fields)
            rows.append(dict(row, rss_before_mib=before, rss_after_mib=rss_mib(process.pid)))
    finally:
        process.terminate()
        process.wait(timeout=30)
    print(
        table(
            "concurrency | requests | errors | requests/s | p50 ms | p95 ms | server RSS before / after MiB",
            "{concurrency} | {requests} | {errors} | {throughput:.1f} | {p50_ms:.0f} | {p95_ms:.0f} | "
            "{rss_before_mib:.0f} / {rss_after_mib:.0f}",
            rows,
            "rrrrrrr",
        )
    )
    for row in rows:
        for error in row["first_errors"]:
            print(f"concurrency {row['concurrency']}: {error}", file=sys.stderr)
    if args.out:
        write_json(
            args.out,
            dict(
                command="python " + " ".join(sys.argv),
                date=time.strftime("%Y-%m-%d"),
                checkpoint=args.checkpoint,
                image="128x128 PNG",
                instruction=INSTRUCTION,
                score_thr=args.score_thr,
                machine=f"{os.cpu_count()} CPU cores, {platform.machine()}",
                rows=rows,
            ),
        )


if __name__ == "__main__":
    main()
