"""Questions about each tracked object: Florence-2 asked about that object alone, on a crop of the full frame.

A plate in a 1080p frame is a few pixels tall once the frame is shrunk to the model's 768 px; cropped around its
track's box it is readable. When a track is seen on a keyframe, `Questions` may ask, for the labels configured
in `objects:`: a description (`objects.describe_task`, once per track, and again when its view is clearly
better: `objects.better_view` times the box area it was described on, a box cut by the frame's edge counting
half; a car described far away as a speck is described again up close) and its text (`<OCR>`, again on later
sightings until the track's text settles by the usual vote, then never again). Questions are a share of the
model's calls, not a schedule: at most `model.object_share` of a source's calls are questions, counted against
its detection keyframes; on a camera the worker takes any detection keyframe before a waiting question (a file
keeps its order: its keyframes all wait in the queue, and its questions would wait for the end); a question
waiting when its track ends is dropped, and its answer ignored.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

from streamer.config import ObjectsConfig
from streamer.model.worker import KeyframeModel
from streamer.records import DETECTED, KIND, Frame, FrameDetections, Keyframe, Tracks

READ = "<OCR>"


@dataclass
class Question:
    track_id: int
    kind: str  # "describe" or "read"
    frame: Frame
    bbox: tuple[float, float, float, float]
    future: Future


@dataclass
class Counts:
    asked: int = 0
    answered: int = 0
    dropped: int = 0


class Questions:
    """One source's questions for one task's tracks; `counts` for status lines and metrics."""

    def __init__(self, config: ObjectsConfig, share: float, model: KeyframeModel, behind: bool = False) -> None:
        """`behind`: questions wait behind detection keyframes (a camera's)."""
        self.config, self.model, self.behind = config, model, behind
        self.ratio = share / (1.0 - share) if share < 1 else float("inf")  # questions per detection keyframe
        self.counts = Counts()
        self._pending: list[Question] = []
        self._described: dict[int, float] = {}  # track -> the view it was last described on

    def _wanted(self, labels: list[str], label: str) -> bool:
        return "*" in labels or label in labels

    def consider(self, tracks: Tracks, keyframes: int, settled: Callable[[int], bool]) -> None:
        """Ask what the budget allows about the confirmed tracks seen on this keyframe; `keyframes`: the
        source's detection keyframes so far."""
        det, frame = tracks.detections, tracks.frame
        kinds = det.data.get(KIND)
        busy = {(q.track_id, q.kind) for q in self._pending}
        for i, track_id in enumerate(int(t) for t in det.tracker_id):
            if track_id < 0 or (kinds is not None and kinds[i] != DETECTED):
                continue
            label = str(det.data["class_name"][i])
            box = tuple(float(v) for v in det.xyxy[i])
            if self._wanted(self.config.describe, label) and self._better(track_id, box, frame) \
                    and (track_id, "describe") not in busy:
                self._ask(frame, track_id, "describe", box, keyframes)
            if self._wanted(self.config.read, label) and not settled(track_id) and (track_id, "read") not in busy:
                self._ask(frame, track_id, "read", box, keyframes)

    def _better(self, track_id: int, box, frame: Frame) -> bool:
        """Never described, or seen now clearly better than when it was."""
        last = self._described.get(track_id)
        if last is None:
            return True
        return self.config.better_view is not None and _view(box, frame) >= self.config.better_view * last

    def _ask(self, frame: Frame, track_id: int, kind: str, box, keyframes: int) -> None:
        if self.counts.asked + 1 > self.ratio * keyframes:
            return  # over the share: a later sighting asks again
        h, w = frame.image.shape[:2]
        x1, y1, x2, y2 = box
        mx, my = self.config.margin * (x2 - x1), self.config.margin * (y2 - y1)
        zone = (int(max(0, x1 - mx)), int(max(0, y1 - my)), int(min(w, x2 + mx)), int(min(h, y2 + my)))
        if zone[2] - zone[0] < 2 or zone[3] - zone[1] < 2:
            return
        task = self.config.describe_task if kind == "describe" else READ
        future = self.model.submit(Keyframe(frame, task, zone=zone, question=self.behind))
        self._pending.append(Question(track_id, kind, frame, box, future))
        self.counts.asked += 1
        if kind == "describe":
            self._described[track_id] = _view(box, frame)  # whatever the answer: not again from this view

    def answered(self, wait: bool = False) -> list[tuple[Question, FrameDetections]]:
        """Questions whose answers are in (all of them, with `wait`), oldest first; failed ones are dropped."""
        done, waiting = [], []
        for question in self._pending:
            if wait or question.future.done():
                try:
                    done.append((question, question.future.result()))
                    self.counts.answered += 1
                except Exception:  # noqa: BLE001 - a failed question is one less answer, not a failed run
                    self.counts.dropped += 1
            else:
                waiting.append(question)
        self._pending = waiting
        return done

    def ended(self, track_ids: list[int]) -> None:
        """Tracks that ended: their questions still waiting are dropped."""
        gone = set(track_ids)
        for track_id in gone:  # ids are never reused: memory stays flat over days of tracks
            self._described.pop(track_id, None)
        keep = []
        for question in self._pending:
            if question.track_id in gone:
                question.future.cancel()
                self.counts.dropped += 1
            else:
                keep.append(question)
        self._pending = keep


def _view(box, frame: Frame) -> float:
    """How well a box shows its object: its area inside the picture, halved when the frame's edge cuts it."""
    h, w = frame.image.shape[:2]
    x1, y1, x2, y2 = box
    area = max(0.0, min(x2, w) - max(x1, 0)) * max(0.0, min(y2, h) - max(y1, 0))
    cut = x1 <= 1 or y1 <= 1 or x2 >= w - 1 or y2 >= h - 1
    return area / 2 if cut else area
