"""What per-object questions cost in model calls: the share they take, and calls per object once text settles.

Runs the real per-source run (`SourceRun`, frames from memory) with a stand-in model that answers detection
keyframes from a script and questions at once (bench-only: the figures are counts of calls, not time):
  1. ten cars that stay for the whole stream, each described and read (`objects.describe`/`read`), at
     `model.object_share` 0.1, 0.25 and 0.5: questions asked against the share's allowance;
  2. the same scene for 60, 300 and 1200 frames: model calls per object stop growing once each car's text has
     settled (one description + `events.ocr_min_votes` reads).

    .venv/bin/python bench/object_questions.py

Last line: `share_0.25_questions=Q allowance=A calls_per_object_60=X calls_per_object_1200=Y`.
"""

from __future__ import annotations

import sys
import threading
from concurrent.futures import Future
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from streamer.config import Config  # noqa: E402
from streamer.model.worker import KeyframeModel  # noqa: E402
from streamer.pipeline.source_run import SourceRun, SourceSpec  # noqa: E402
from streamer.records import FrameDetections, Keyframe  # noqa: E402
from tests.scripted import ScriptedDetector  # noqa: E402
from tests.test_source_run import MemoryReader  # noqa: E402

CARS = 10


class StandIn(KeyframeModel):
    """Detection from a script; every question answered "AB 42" at once. Counts calls per task."""

    def __init__(self) -> None:
        self.detector = ScriptedDetector(lambda i: [("car", (6 * k, 2, 6 * k + 5, 9), None) for k in range(CARS)])
        self.calls: dict[str, int] = {}

    def submit(self, keyframe: Keyframe) -> Future:
        self.calls[keyframe.task] = self.calls.get(keyframe.task, 0) + 1
        future: Future = Future()
        [result] = self.detector.detect([keyframe])
        future.set_result(result if keyframe.task == "<OD>" else FrameDetections(keyframe, result.detections[:0],
                                                                                  text="AB 42"))
        return future


def run(frames: int, share: float, tmp: Path) -> tuple[StandIn, object]:
    config = Config.model_validate({
        "model": {"object_share": share},
        "sampler": {"every_n_frames": 5, "max_fps": None, "scene_threshold": None},
        "objects": {"describe": ["car"], "read": ["car"]},
    })
    model = StandIn()
    stats = SourceRun(SourceSpec("mem", tmp / f"e-{frames}-{share}.jsonl"), config, MemoryReader(n=frames), model
                      ).run(threading.Event())
    if stats.error is not None:
        raise stats.error
    return model, stats


def main() -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        print("share  keyframes  questions  allowance (share/(1-share) x keyframes)")
        shares = {}
        for share in (0.1, 0.25, 0.5):
            model, stats = run(300, share, tmp)
            allowance = share / (1 - share) * stats.keyframes
            shares[share] = (stats.questions_asked, allowance)
            print(f"{share:5.2f}  {stats.keyframes:9d}  {stats.questions_asked:9d}  {allowance:9.1f}")
        print("frames  keyframes  model calls per object for questions")
        per_object = {}
        for frames in (60, 300, 1200):
            model, stats = run(frames, 0.5, tmp)
            questions = sum(n for task, n in model.calls.items() if task != "<OD>")
            per_object[frames] = questions / CARS
            print(f"{frames:6d}  {stats.keyframes:9d}  {per_object[frames]:.1f}")
    q, a = shares[0.25]
    print(f"share_0.25_questions={q} allowance={a:.1f} calls_per_object_60={per_object[60]:.1f} "
          f"calls_per_object_1200={per_object[1200]:.1f}")


if __name__ == "__main__":
    main()
