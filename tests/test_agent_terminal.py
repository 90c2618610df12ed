"""``visionllm chat IMAGE``: the read-answer loop (a fake model, in process) and the command itself driven
through stdin in a subprocess (the tiny random-weight checkpoint)."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

from PIL import Image

from visionllm.agent import Agent
from visionllm.agent.terminal import converse
from visionllm.structures import ObjectPrediction

REPO = Path(__file__).resolve().parents[1]
VISIONLLM = str(Path(sys.executable).parent / "visionllm")  # the console script


class TwoStars:
    """The model: two stars, whatever is asked for stars."""

    def predict(self, image, *, task, classes=None, phrase=None, score_thr=0.0):
        from types import SimpleNamespace

        stars = [
            ObjectPrediction("star", 0.9, (5.0, 5.0, 20.0, 20.0), 0),
            ObjectPrediction("star", 0.8, (30.0, 10.0, 60.0, 40.0), 0),
        ]
        return [SimpleNamespace(objects=[s for s in stars if classes and "star" in classes])]


def test_the_chat_loop_answers_each_line_and_says_where_images_went(tmp_path: Path) -> None:
    image = tmp_path / "shapes.png"
    Image.new("RGB", (64, 48), (200, 190, 170)).save(image)
    lines = "find the stars\n\nhow many are there?\ncrop the largest one\n:plan\n"
    lines += ":image nowhere.png\nhi\n:quit\nfind x\n"
    out = io.StringIO()
    assert (
        converse(Agent(TwoStars(), memory_dir=tmp_path / "memory"), str(image), io.StringIO(lines), out) == 0
    )
    printed = out.getvalue().splitlines()
    assert printed[0].startswith(f"Chatting about {image}")
    assert printed[1].startswith("> 2 found: star (0.90)") and printed[2].startswith("  saved ")
    assert printed[3] == "> 2"
    assert printed[4] == "> Here is the result (1 image)."
    crop = Path(printed[5].removeprefix("  saved "))
    assert crop.is_file() and Image.open(crop).size == (30, 30)  # the larger star's box
    assert '"tool": "crop"' in printed[6]  # :plan
    assert printed[7] == "Now chatting about nowhere.png."
    assert printed[8].startswith("error:") and "nowhere.png" in printed[8]
    assert len(printed) == 9  # :quit ended it: "find x" was not read


def test_visionllm_chat_reads_stdin_in_a_subprocess(tiny_checkpoint: Path, tmp_path: Path) -> None:
    image = tmp_path / "shapes.png"
    Image.new("RGB", (96, 96), (200, 190, 170)).save(image)
    command = [VISIONLLM, "chat", str(image), "--checkpoint", str(tiny_checkpoint)]
    command += [
        "--config",
        str(REPO / "configs/visionllm_tiny_synthetic.py"),
        "--memory-dir",
        str(tmp_path / "m"),
    ]
    run = subprocess.run(
        command,
        input="what is the weather like?\nfind the circles\n",
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    answers = [line for line in run.stdout.splitlines() if line.startswith("> ")]
    assert len(answers) == 2
    assert answers[0].startswith("> I cannot do 'what is the weather like' with my tools.")


def test_visionllm_chat_without_the_image_is_one_clear_line(tmp_path: Path, capsys) -> None:
    from visionllm.cli import main

    assert main(["chat", str(tmp_path / "none.png")]) == 2
    assert capsys.readouterr().err.strip() == f"visionllm: error: no image at {tmp_path / 'none.png'}"
