"""`streamer find`: how fast it grounds a phrase, and how early a day's search reaches its first hit.

1. Keyframes/s of `find` through its own path (kept keyframes read from disk, grounded in batches, answers
   cached) on the full-size Florence-2-base architecture with random weights, every answer forced to --tokens
   tokens (a grounding answer is the phrase and four location tokens: about 10), fp32 and int8 on a CPU, and
   bf16 on a GPU when there is one; a second identical search is timed too (all from the cache).
2. The share of a day's keyframes grounded before the first hit: a store of one keyframe every 10 s for 24 h
   (8,640) with 300 events spread over the day, three of which mention a word of the phrase near the one
   keyframe the phrase is on. A model that finds it only there reaches its first hit after as many keyframes
   as come before it in the order `find` asks them: time order against the full-text pre-ranking.

    python bench/find_speed.py            # both, on this machine
    python bench/find_speed.py --quick    # part 1 with 8 keyframes, fp32 only
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.model_throughput import build, device_name  # noqa: E402
from streamer.config import ModelConfig  # noqa: E402
from streamer.model.florence import Florence2Detector  # noqa: E402
from streamer.outputs.store import EventStore  # noqa: E402
from streamer.recording.find import Candidate, find, prerank  # noqa: E402
from streamer.records import Event, Logged  # noqa: E402

DAY_START = 1767225600.0  # 2026-01-01 00:00 UTC


def kept_store(folder: Path, n: int) -> Path:
    """A store with `n` kept keyframes of the bundled clip's size (720p noise), a second apart."""
    import supervision as sv

    store = EventStore(folder / "events.db").acquire()
    rng = np.random.default_rng(0)
    (folder / "keyframes").mkdir()
    for i in range(n):
        image = folder / "keyframes" / f"cam-{i:07d}.jpg"
        cv2.imwrite(str(image), rng.integers(0, 255, (720, 1280, 3), dtype=np.uint8))
        store.write_keyframe("cam", i, float(i), image, sv.Detections.empty(), DAY_START + i)
    store.close()
    return folder / "events.db"


def speed(args, device: torch.device) -> None:
    model_dir = build("base", Path(tempfile.mkdtemp(prefix="find-model-")))
    kinds = [("fp32", None)] if args.quick else [("fp32", None), ("int8", "int8")]
    if device.type == "cuda":
        kinds = [("bf16", None)]
    n = 8 if args.quick else args.keyframes
    for kind, quantize in kinds:
        work = Path(tempfile.mkdtemp(prefix="find-speed-"))
        store = kept_store(work, n)
        config = ModelConfig(path=model_dir, device=device.type, max_new_tokens=args.tokens, quantize=quantize,
                             batch_size=args.batch, dtype="bfloat16" if device.type == "cuda" else "float32")
        loaded: list[float] = []

        def detector():
            started = time.perf_counter()
            model = Florence2Detector(config, min_new_tokens=args.tokens)
            loaded.append(time.perf_counter() - started)
            return model

        started = time.perf_counter()
        find(store, "person with a ladder", detector, "bench", batch=args.batch, min_confidence=0.0)
        first = time.perf_counter() - started - sum(loaded)
        started = time.perf_counter()
        find(store, "person with a ladder", detector, "bench", batch=args.batch, min_confidence=0.0)
        again = time.perf_counter() - started
        print(f"find, base {kind:5} batch {args.batch}, {args.tokens} tokens: {n / first:6.2f} keyframes/s "
              f"({n} keyframes in {first:.1f} s, model loaded in {loaded[0]:.1f} s); asked again: {again:.2f} s, "
              f"{len(loaded) - 1} model loads", flush=True)


def day_share() -> None:
    work = Path(tempfile.mkdtemp(prefix="find-day-"))
    store = EventStore(work / "events.db").acquire()
    rng = random.Random(0)
    words = ["car", "person", "truck", "bicycle", "dog", "bus", "van", "AB 42", "parked", "walking", "red", "blue"]
    target = 6 * 3600 * 2 // 10  # a keyframe in the afternoon: 14:24
    for i in range(300):
        at = rng.uniform(0, 24 * 3600)
        label = rng.choice(words[:7])
        store.write(Logged.of(Event("object_appeared", "cam", int(at * 25), at, DAY_START + at, track_id=i,
                                    label=label)), work)
    for k, text in enumerate(["a person carrying a ladder", "ladder", "person"]):
        at = target * 10 + 3 * k
        store.write(Logged.of(Event("object_described" if k == 0 else "object_appeared", "cam", int(at * 25), at,
                                    DAY_START + at, track_id=1000 + k, label="person", text=text if k == 0 else None)),
                    work)
    store.close()
    frames = [Candidate(f"k:{i}", "cam", i, i * 10.0, DAY_START + i * 10.0) for i in range(24 * 360)]
    timed = frames.index(next(c for c in frames if c.frame_index == target)) + 1
    ranked = prerank(work / "events.db", "person with a ladder", frames)
    first = next(i for i, c in enumerate(ranked) if c.frame_index == target) + 1
    print(f"a day of {len(frames)} keyframes, 300 events: the first hit after {timed} keyframes in time order "
          f"({100 * timed / len(frames):.1f}%), after {first} with the full-text pre-ranking "
          f"({100 * first / len(frames):.2f}%)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--keyframes", type=int, default=16)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=10)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(device_name(device))
    speed(args, device)
    day_share()


if __name__ == "__main__":
    main()
