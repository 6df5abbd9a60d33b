"""How many 640x480 25 fps live cameras this machine carries at 1 keyframe/s without losing a keyframe.

One real RTSP server (Debian's GStreamer) encodes a live 640x480 25 fps pattern once and serves it, shared, to
every connection; streamer opens it N times as N cameras (N readers, N decoders), with a no-op stand-in model and
the event log as output. N grows (1, 2, 4, 8, 12, 16, 20, 24, ...) while every camera keeps its frame rate
(>= 24 fps received) and gets its keyframe every second (at most one missing over the window). Last line:
`streams=N` (the largest N that held).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from live_latency import LIVE_640  # noqa: E402
from standins import NoOpDetector  # noqa: E402

from streamer.config import Config  # noqa: E402
from streamer.pipeline.local import Pipeline, SourceSpec  # noqa: E402
from tests.rtsp_server import RtspServer, gstreamer_available  # noqa: E402


def measured(config: Config, specs: list[SourceSpec], seconds: float, warmup: float):
    """Run the cameras with a no-op stand-in model until each delivers frames, let them settle `warmup` s, then
    watch `seconds`: (stats before, stats after, the window's length, streamer's process CPU seconds in it)."""
    pipeline = Pipeline(config, NoOpDetector)
    thread = threading.Thread(target=pipeline.run_many, args=(specs,), kwargs={"duration_s": 60 + warmup + seconds})
    thread.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (pipeline.runs and all(r.stats().frames for r in pipeline.runs)):
        time.sleep(0.1)
    time.sleep(warmup)
    before = [r.stats() for r in pipeline.runs]
    cpu0, t0 = time.process_time(), time.monotonic()
    time.sleep(seconds)
    after = [r.stats() for r in pipeline.runs]
    elapsed, cpu = time.monotonic() - t0, time.process_time() - cpu0
    pipeline.stop()
    thread.join()
    return before, after, elapsed, cpu


def trial(url: str, n: int, seconds: float, warmup: float) -> tuple[bool, str]:
    config = Config.model_validate({"sampler": {"every_n_frames": 25, "max_fps": 1.0, "scene_threshold": None}})
    with tempfile.TemporaryDirectory() as tmp:
        specs = [SourceSpec(url, Path(tmp) / f"cam{i}.jsonl", None, name=f"cam{i}") for i in range(n)]
        before, after, elapsed, _ = measured(config, specs, seconds, warmup)
    fps = [(a.frames - b.frames) / elapsed for a, b in zip(after, before)]
    keyframes = [a.keyframes - b.keyframes for a, b in zip(after, before)]
    dropped = sum(a.dropped for a in after)
    ok = min(fps) >= 24.0 and min(keyframes) >= int(seconds) - 1
    return ok, (f"min fps {min(fps):5.1f}  min keyframes {min(keyframes)}/{int(seconds)}  "
                f"dropped frames {dropped}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="measured window per trial")
    parser.add_argument("--warmup", type=float, default=4.0)
    parser.add_argument("--max", type=int, default=40)
    args = parser.parse_args()
    if not gstreamer_available():
        sys.exit("needs Debian's GStreamer RTSP server: see .ci/run for the packages")
    counts = [1, 2, 4, 8, 12, 16, 20, 24, 28, 32, 36, 40]
    best = 0
    with RtspServer({"/live": LIVE_640}) as server:
        for n in (c for c in counts if c <= args.max):
            ok, detail = trial(server.url(), n, args.seconds, args.warmup)
            print(f"{n:3} streams: {'ok  ' if ok else 'FAIL'} {detail}", flush=True)
            if not ok:
                break
            best = n
    print(f"streams={best}")


if __name__ == "__main__":
    main()
