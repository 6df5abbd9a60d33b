"""Where a slow model's time goes with many cameras: 8 cameras share one model as slow as a CPU's (a stand-in that
answers in `--latency` s, one keyframe a call); one camera sees a car drive through, the seven others a still
picture. Run twice, side by side: with `pipeline.still_wait_s` (keyframes of still cameras wait behind the
moving one's, up to that floor) and without it (0: first come, first served, a round-robin share each). Prints
each camera's keyframes/s and the moving camera's against its round-robin share.

    .venv/bin/python bench/motion_priority.py [--cameras 8] [--seconds 20] [--latency 0.25] [--still-wait 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import supervision as sv

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from streamer.config import Config  # noqa: E402
from streamer.model.worker import Worker  # noqa: E402
from streamer.pipeline.reader import FrameQueue, Reader  # noqa: E402
from streamer.pipeline.source_run import SourceRun, SourceSpec  # noqa: E402
from streamer.records import Frame, FrameDetections, StreamInfo  # noqa: E402

W, H, FPS = 320, 240, 25


class Camera(Reader):
    """A live camera in memory at 25 fps: a still street, or one a car drives through (`moving`)."""

    def __init__(self, name: str, moving: bool, seconds: float) -> None:
        info = StreamInfo(source=name, width=W, height=H, fps=Fraction(FPS), total_frames=None)
        super().__init__(name, name, FrameQueue(4, drop_oldest=True), info=info)
        self.live, self.state, self.moving, self.seconds = True, "up", moving, seconds
        rng = np.random.default_rng(len(name))
        self.street = rng.integers(60, 120, (H, W, 3), dtype=np.uint8)

    def start(self) -> None:
        pass

    def frames(self, stop=None):
        started = time.monotonic()
        for i in range(int(self.seconds * FPS)):
            if stop is not None and stop.is_set():
                return
            time.sleep(max(0.0, started + i / FPS - time.monotonic()))
            image = self.street.copy()
            if self.moving:  # a car crossing every 4 s
                x = int((i % (4 * FPS)) / (4 * FPS) * (W + 80)) - 80
                image[100:150, max(0, x):max(0, x + 80)] = (30, 30, 200)
            image.setflags(write=False)
            yield Frame(self.name, i, i / FPS, time.time(), image)


class SlowModel:
    """Answers after `latency` s a call: the car where it is on the moving camera, nothing elsewhere."""

    input_size = None

    def __init__(self, latency: float) -> None:
        self.latency = latency

    def detect(self, keyframes):
        time.sleep(self.latency)
        out = []
        for k in keyframes:
            box = np.argwhere(k.frame.image[:, :, 2] == 200)
            if len(box):
                (y1, x1), (y2, x2) = box.min(axis=0), box.max(axis=0)
                det = sv.Detections(xyxy=np.array([[x1, y1, x2 + 1, y2 + 1]], np.float32),
                                    confidence=np.array([0.9], np.float32),
                                    data={"class_name": np.array(["car"], object), "text": np.array([""], object)})
            else:
                det = sv.Detections.empty()
                det.data["class_name"], det.data["text"] = np.array([], object), np.array([], object)
            out.append(FrameDetections(k, det))
        return out


def trial(cameras: int, seconds: float, latency: float, still_wait: float) -> list[tuple[str, float, int]]:
    """(camera, keyframes/s, of which still) for each camera."""
    config = Config.model_validate({"sampler": {"every_n_frames": 5, "max_fps": 5, "scene_threshold": 0.12},
                                    "pipeline": {"still_wait_s": still_wait}, "output": {"write_video": False}})
    worker = Worker(SlowModel(latency), max_batch=1, still_wait_s=still_wait)
    worker.start()
    runs, threads, stop = [], [], threading.Event()
    with tempfile.TemporaryDirectory() as tmp:
        for n in range(cameras):
            name = "moving" if n == 0 else f"still{n}"
            spec = SourceSpec(name, Path(tmp) / f"{name}.jsonl", None, name=name)
            runs.append(SourceRun(spec, config, Camera(name, n == 0, seconds), worker))
        for run in runs:
            threads.append(threading.Thread(target=run.run, args=(stop,), daemon=True))
            threads[-1].start()
        for thread in threads:
            thread.join(seconds + 30)
        worker.stop()
    return [(r.stats().source, r.stats().keyframes / seconds, r.stats().still_keyframes) for r in runs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cameras", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--latency", type=float, default=0.25)
    parser.add_argument("--still-wait", type=float, default=2.0)
    args = parser.parse_args()
    share = 1.0 / args.latency / args.cameras
    results = {}
    for wait in (0.0, args.still_wait):
        results[wait] = trial(args.cameras, args.seconds, args.latency, wait)
        rates = results[wait]
        print(f"still_wait_s={wait:g}: " + " ".join(f"{name}={rate:.2f}" for name, rate, _ in rates)
              + f" (keyframes/s; still keyframes: {sum(s for *_, s in rates)})")
    moving_fifo, moving = results[0.0][0][1], results[args.still_wait][0][1]
    floor = min(rate for _, rate, _ in results[args.still_wait][1:])
    print(f"model={1 / args.latency:.1f} keyframes/s round_robin_share={share:.2f} moving_fifo={moving_fifo:.2f} "
          f"moving_prioritised={moving:.2f} ({moving / share:.1f}x the share) still_floor={floor:.2f} "
          f"(>= {1 / (args.still_wait + args.latency):.2f} expected)")


if __name__ == "__main__":
    main()
