"""What a second task on the same keyframe costs, now that its image features are kept (full-size Florence-2).

The full-size architecture (bench/configs, random weights, built and loaded as in bench/model_throughput.py)
answers, on --frames new keyframes each: `<OD>` alone; `<OD>` then `<OCR_WITH_REGION>` on the same keyframe
as the pipeline runs them (the features of the first reused); and the same two tasks with the features thrown
away between them (what every task cost before). Every generate writes exactly --tokens tokens.

    .venv/bin/python bench/shared_features.py [--model base] [--frames 3] [--tokens 64]

Last line: `od_s=A od_ocr_s=B ratio=B/A recomputed_ratio=C` (medians per keyframe; target ratio <= 1.25).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from model_throughput import build, device_name, frames  # noqa: E402

from streamer.config import ModelConfig  # noqa: E402
from streamer.florence import Florence2Detector  # noqa: E402
from streamer.records import Keyframe  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="base", choices=["base", "large"])
    parser.add_argument("--frames", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=64)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        folder = build(args.model, Path(tmp))
        config = ModelConfig(path=folder, device=device.type, max_new_tokens=args.tokens)
        detector = Florence2Detector(config, min_new_tokens=args.tokens)
        pool = frames(args.frames + 1)
        detector.detect([Keyframe(pool[-1], "<OD>")])  # warm-up

        def timed(frame, tasks, keep: bool) -> float:
            detector.forget_images()
            if device.type == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
            for task in tasks:
                if not keep:
                    detector.forget_images()
                detector.detect([Keyframe(frame, task)])
            if device.type == "cuda":
                torch.cuda.synchronize()
            return time.perf_counter() - started

        od, both, recomputed = [], [], []
        for frame in pool[:-1]:
            od.append(timed(frame, ["<OD>"], True))
            both.append(timed(frame, ["<OD>", "<OCR_WITH_REGION>"], True))
            recomputed.append(timed(frame, ["<OD>", "<OCR_WITH_REGION>"], False))
            print(f"keyframe {frame.index}: <OD> {od[-1]:.2f} s, + <OCR_WITH_REGION> {both[-1]:.2f} s, "
                  f"features recomputed {recomputed[-1]:.2f} s", flush=True)
    a, b, c = (statistics.median(x) for x in (od, both, recomputed))
    print(f"device: {device_name(device)}; {args.model}, {args.tokens} tokens per answer")
    print(f"od_s={a:.2f} od_ocr_s={b:.2f} ratio={b / a:.3f} recomputed_ratio={c / a:.3f}")


if __name__ == "__main__":
    main()
