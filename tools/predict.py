"""Predict with a VisionLLM checkpoint and draw the results (the same as ``visionllm predict``).

python tools/predict.py IMAGES... --config C --checkpoint K [--instruction "..."]
                        [--task detect --classes cup knife] [--phrase "..."]
                        [--decode parallel|autoregressive|tokens] [--out-dir D] [--score-thr 0.3]
"""

from __future__ import annotations

import sys

from visionllm.cli import main

if __name__ == "__main__":
    sys.exit(main(["predict", *sys.argv[1:]]))
