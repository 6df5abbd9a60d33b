"""Frame-to-event latency on a live RTSP camera when the model is slower than real time.

A real RTSP server (Debian's GStreamer, as in the tests) serves a live 25 fps pattern; streamer runs it with a
stand-in model that sleeps --model-ms per call (bench only). Latency is measured per keyframe, from the moment
the reader decoded the frame to the moment its detections reached the tracker and the event log. Drift is the
slope of latency over the run (least squares), in ms per minute: zero means latency does not build up.

Target: p95 <= model latency + 2 frame intervals, drift zero. Last line:
`p50_ms=A p95_ms=B model_ms=C frame_ms=D drift_ms_per_min=E`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from standins import MovingBoxDetector  # noqa: E402

from streamer.config import Config  # noqa: E402
from streamer.pipeline.local import Pipeline, SourceSpec  # noqa: E402
from tests.rtsp_server import RtspServer, gstreamer_available  # noqa: E402

LIVE_640 = ("videotestsrc is-live=true pattern=ball ! video/x-raw,width=640,height=480,framerate=25/1 ! "
            "x264enc tune=zerolatency speed-preset=ultrafast key-int-max=25 ! rtph264pay name=pay0 pt=96 config-interval=1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--model-ms", type=float, default=200.0, help="stand-in model latency per call")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds left out at the start")
    args = parser.parse_args()
    if not gstreamer_available():
        sys.exit("needs Debian's GStreamer RTSP server: see .ci/run for the packages")
    config = Config.model_validate({"sampler": {"every_n_frames": 1, "max_fps": None, "scene_threshold": None}})
    with RtspServer({"/live": LIVE_640}) as server, tempfile.TemporaryDirectory() as tmp:
        pipeline = Pipeline(config, lambda: MovingBoxDetector(args.model_ms / 1000.0))
        spec = SourceSpec(server.url(), Path(tmp) / "events.jsonl", None, name="cam")
        thread = threading.Thread(target=pipeline.run_many, args=([spec],), kwargs={"duration_s": args.seconds})
        thread.start()
        thread.join()
        latencies = list(pipeline.runs[0].latencies)
        stats = pipeline.runs[0].stats()
    start = min(t for t, _ in latencies) + args.warmup
    samples = [(t, ms) for t, ms in latencies if t >= start]
    values = sorted(ms for _, ms in samples)
    p50 = statistics.median(values)
    p95 = values[min(len(values) - 1, int(round(0.95 * (len(values) - 1))))]
    times = np.array([t for t, _ in samples]) - start
    slope = float(np.polyfit(times, np.array([ms for _, ms in samples]), 1)[0]) * 60.0
    frame_ms = 1000.0 / 25
    print(f"frames {stats.frames}, keyframes {stats.keyframes}, dropped {stats.dropped}, samples {len(samples)}")
    print(f"target: p95 <= {args.model_ms + 2 * frame_ms:.0f} ms (model + 2 frames), drift 0")
    print(f"p50_ms={p50:.1f} p95_ms={p95:.1f} model_ms={args.model_ms:.1f} frame_ms={frame_ms:.1f} "
          f"drift_ms_per_min={slope:.2f}")


if __name__ == "__main__":
    main()
