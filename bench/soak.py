"""Memory over a long run: the pipeline over 30,000 frames with a moving-box stand-in model and video output.

The bundled clip is looped by remuxing (no re-encode) into a 30,000-frame input; RSS is sampled every half
second. Start is taken after the first 1,000 frames (allocators and caches warm), so growth shows leaks, not
warm-up. Last line: `frames=N rss_start_mb=A rss_peak_mb=B rss_end_mb=C growth_pct=G`.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from clipgen import loop_clip  # noqa: E402
from standins import MovingBoxDetector  # noqa: E402

from streamer.config import Config  # noqa: E402
from streamer.pipeline.local import Pipeline  # noqa: E402

_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=30_000)
    parser.add_argument("--preset", default="ultrafast", help="encoder preset for the annotated video")
    parser.add_argument("--no-video", action="store_true")
    args = parser.parse_args()
    clip = ROOT / "clips" / "street.mp4"
    samples: list[tuple[int, float]] = []
    config = Config.model_validate({"output": {"preset": args.preset}})
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        long_clip = loop_clip(clip, tmp / "long.mp4", -(-args.frames // 150))
        progress = {"frames": 0}
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.5):
                samples.append((progress["frames"], rss_mb()))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        started = time.monotonic()

        def on_progress(stats) -> None:
            progress["frames"] = stats.frames
            if stats.frames % 5000 == 0:
                print(f"{stats.frames:6} frames  rss {rss_mb():7.1f} MB  {stats.frames / (time.monotonic() - started):6.1f} fps",
                      flush=True)

        stats = Pipeline(config, lambda: MovingBoxDetector()).run(
            str(long_clip), None if args.no_video else tmp / "out.mp4", tmp / "events.jsonl", on_progress=on_progress
        )
        done.set()
        sampler.join()
        end = rss_mb()
    warm = [rss for frames, rss in samples if frames >= 1000]
    start = warm[0] if warm else samples[0][1]
    peak = max(rss for _, rss in samples)
    growth = 100.0 * (end - start) / start
    print(f"events {stats.events}, keyframes {stats.keyframes}, {stats.fps:.1f} fps")
    print(f"frames={stats.frames} rss_start_mb={start:.1f} rss_peak_mb={peak:.1f} rss_end_mb={end:.1f} growth_pct={growth:.2f}")


if __name__ == "__main__":
    main()
