"""What a second task on the same keyframe costs (full-size Florence-2): features kept, prompts batched together.

The full-size architecture (bench/configs, random weights, built and loaded as in bench/model_throughput.py)
answers, on --frames new keyframes each: `<OD>` alone; `<OD>` and `<OCR_WITH_REGION>` in one call, as the
worker now runs a keyframe's tasks (the image through the vision tower once, both prompts encoded and decoded
side by side); the two one after the other with the image features kept (as before this); and the two with the
features thrown away between them (what every task cost at first). Every generate writes exactly --tokens tokens.

    .venv/bin/python bench/shared_features.py [--model base] [--frames 3] [--tokens 64] [--quantize int8]

Last line: `od_s=A together_s=B ratio=B/A kept_ratio=C recomputed_ratio=D` (medians per keyframe; target
ratio <= 1.25).
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
from streamer.model.florence import Florence2Detector  # noqa: E402
from streamer.records import Keyframe  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="base", choices=["base", "large"])
    parser.add_argument("--frames", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--quantize", choices=["int8"], help="model.quantize (CPU)")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        folder = build(args.model, Path(tmp))
        config = ModelConfig(path=folder, device=device.type, max_new_tokens=args.tokens, quantize=args.quantize)
        detector = Florence2Detector(config, min_new_tokens=args.tokens)
        pool = frames(args.frames + 1)
        detector.detect([Keyframe(pool[-1], "<OD>")])  # warm-up

        def timed(frame, tasks, how: str) -> float:
            """how: "together" (one call), "kept" (a call a task, features kept), "recomputed" (and dropped)."""
            detector.forget_images()
            if device.type == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
            if how == "together":
                detector.detect([Keyframe(frame, task) for task in tasks])
            else:
                for task in tasks:
                    if how == "recomputed":
                        detector.forget_images()
                    detector.detect([Keyframe(frame, task)])
            if device.type == "cuda":
                torch.cuda.synchronize()
            return time.perf_counter() - started

        two = ["<OD>", "<OCR_WITH_REGION>"]
        times: dict[str, list[float]] = {"od": [], "together": [], "kept": [], "recomputed": []}
        for frame in pool[:-1]:
            times["od"].append(timed(frame, ["<OD>"], "together"))
            for how in ("together", "kept", "recomputed"):
                times[how].append(timed(frame, two, how))
            print(f"keyframe {frame.index}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()), flush=True)
        head = detector.model.get_output_embeddings()
        rows_first = "forward" in vars(head)  # what streamer.model.florence._pick_output_layer chose at load
    a, b, c, d = (statistics.median(times[k]) for k in ("od", "together", "kept", "recomputed"))
    weights = f", quantize {args.quantize}" if args.quantize else ""
    print(f"device: {device_name(device)}; {args.model}{weights}, {args.tokens} tokens per answer, "
          f"output layer rows first: {'yes' if rows_first else 'no'}")
    print(f"od_s={a:.2f} together_s={b:.2f} ratio={b / a:.3f} kept_ratio={c / a:.3f} recomputed_ratio={d / a:.3f}")


if __name__ == "__main__":
    main()
