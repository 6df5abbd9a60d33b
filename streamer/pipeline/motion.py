"""Full-rate tracks from sparse keyframes: every frame gets the boxes of one task's tracks where they are on it.

Between keyframes each box follows its object with optical flow (`flow.Flow`). A file's frames wait for the
next keyframe, so when that one is answered the flow path of each track seen on it is bent to end exactly on its
detection (`interpolated`); a camera cannot wait, so its frames get the flow's boxes at once (`predicted`). A
confirmed track missed on one keyframe keeps its predicted box instead of vanishing; one missed twice is not
drawn (it is probably gone, though it lives on until the tracker ends it), nor is a missed unconfirmed one,
unless (files) the next keyframe finds it again.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import supervision as sv

from streamer.pipeline.flow import Flow
from streamer.records import DETECTED, INTERPOLATED, KIND, MISSES, PREDICTED, TEXT, TRACK_KEY, Frame, Tracks

Boxes = dict[int, np.ndarray]  # track key -> xyxy


@dataclass(slots=True)
class _Meta:
    """What a track showed on the last keyframe that placed it."""

    track_id: int
    label: str
    confidence: float
    text: str
    misses: int  # on that keyframe
    mask: np.ndarray | None = None  # segmentation tasks: drawn where it was seen (masks are not moved)


@dataclass(slots=True)
class _Step:
    pts: float
    boxes: Boxes
    since: int  # index of the keyframe the boxes were followed from
    kinds: dict[int, str]  # key -> kind of the boxes shown, once the next keyframe resolved the frame
    resolved: bool = False


class Motion:
    """One task's boxes on every frame. Frames are given in stream order: `step` each one, then `keyframe` on an
    answered keyframe (after its own `step`), `take` a frame when it is written, `forget` what is done."""

    def __init__(self) -> None:
        self.flow = Flow()
        self._steps: dict[int, _Step] = {}
        self._meta: dict[int, _Meta] = {}
        self._since = -1  # index of the last keyframe placed
        self._since_pts = 0.0

    @property
    def needs_image(self) -> bool:
        """Whether the next frame's small image is needed to follow the boxes onto it."""
        return self.flow.needs_image

    def step(self, frame: Frame, grey: np.ndarray | None) -> None:
        """Follow the boxes to `frame` (the next frame of the stream; `grey` may be None unless `needs_image`)."""
        boxes = self.flow.advance(grey, frame.pts)
        self._steps[frame.index] = _Step(frame.pts, boxes, self._since, {})

    def predicted(self, index: int) -> Boxes:
        """Where flow put each track on frame `index` (stepped, not forgotten)."""
        step = self._steps.get(index)
        return step.boxes if step is not None else {}

    def keyframe(self, tracks: Tracks, grey: np.ndarray, step: int, texts: list[str], velocities: Boxes,
                 later: list[tuple[int, float, np.ndarray]] = ()) -> None:
        """Place the tracks of an answered keyframe: the frames held since the keyframe before are interpolated
        towards it, flow restarts from it, and goes over the `later` frames already stepped (a camera's frames
        that arrived while the model worked: index, pts, small grey image), so the next `take` is current."""
        frame, det = tracks.frame, tracks.detections
        keys = [int(k) for k in det.data[TRACK_KEY]]
        kinds = [str(k) for k in det.data[KIND]]
        boxes = {key: det.xyxy[i].astype(np.float64) for i, key in enumerate(keys)}
        predicted = self.predicted(frame.index)
        seen = {key for key, kind in zip(keys, kinds) if kind == DETECTED}
        correction = {key: boxes[key] - predicted[key] for key in seen if key in predicted}
        span = frame.pts - self._since_pts
        for index, held in self._steps.items():
            if index >= frame.index or held.since != self._since:
                continue
            alpha = (held.pts - self._since_pts) / span if span > 0 else 1.0
            held.resolved = True
            for key, box in held.boxes.items():
                meta = self._meta.get(key)
                if meta is None:
                    continue
                shown = meta.misses == 0 or key in seen  # seen before, or missed and found again
                if not shown:
                    continue
                if key in correction:
                    held.boxes[key] = box + correction[key] * alpha
                    held.kinds[key] = DETECTED if index == self._since and meta.misses == 0 else INTERPOLATED
                else:
                    held.kinds[key] = DETECTED if index == self._since and meta.misses == 0 else PREDICTED
        names, conf, ids = det.data["class_name"], det.confidence, det.tracker_id
        for i, key in enumerate(keys):
            self._meta[key] = _Meta(int(ids[i]), str(names[i]), float(conf[i]), texts[i], int(det.data[MISSES][i]),
                                    None if det.mask is None else det.mask[i])
        self._since, self._since_pts = frame.index, frame.pts
        self._steps[frame.index] = _Step(frame.pts, boxes, frame.index, {})
        self.flow.reset(grey, step, frame.pts, boxes, velocities)
        for index, pts, later_grey in later:
            if index in self._steps:
                self._steps[index] = _Step(pts, self.flow.advance(later_grey, pts), frame.index, {})

    def take(self, frame: Frame) -> sv.Detections:
        """The boxes to show on `frame`: resolved ones as they were resolved, the others as flow has them (held
        frames whose next keyframe never came, and every frame of a camera). Boxes are clipped to the picture; one
        with nothing left inside it is not shown. A track confirmed since a frame was held shows its id on it too
        (a file's frames wait for the next keyframe: a track confirmed on its second keyframe has its id from its
        first); a camera's frame shows the ids known when it is taken."""
        step = self._steps.get(frame.index)
        if step is None or not step.boxes:
            return EMPTY
        height, width = frame.image.shape[:2]
        rows = []
        for key, box in step.boxes.items():
            meta = self._meta.get(key)
            if meta is None:
                continue
            kind = step.kinds.get(key)
            if kind is None:
                if step.resolved or meta.misses > (0 if meta.track_id < 0 else 1):
                    continue
                kind = DETECTED if frame.index == step.since and meta.misses == 0 else PREDICTED
            x1, y1, x2, y2 = np.minimum(np.maximum(box, 0), (width, height, width, height))
            if x2 - x1 < 1 or y2 - y1 < 1:
                continue  # wholly outside the picture, or inside out
            rows.append(((x1, y1, x2, y2), meta, kind))
        if not rows:
            return EMPTY
        masks = None
        if any(meta.mask is not None for _, meta, _ in rows):
            blank = np.zeros(frame.image.shape[:2], dtype=bool)
            masks = np.stack([meta.mask if meta.mask is not None and meta.mask.shape == blank.shape else blank
                              for _, meta, _ in rows])
        return sv.Detections(
            xyxy=np.array([r[0] for r in rows], dtype=np.float32),
            mask=masks,
            confidence=np.array([r[1].confidence for r in rows], dtype=np.float32),
            tracker_id=np.array([r[1].track_id for r in rows], dtype=int),
            data={"class_name": np.array([r[1].label for r in rows], dtype=object),
                  TEXT: np.array([r[1].text for r in rows], dtype=object),
                  KIND: np.array([r[2] for r in rows], dtype=object)},
        )

    def forget(self, before: int) -> None:
        """Drop the frames before index `before` (written, and not needed for a keyframe in flight)."""
        done = [i for i in self._steps if i < before]
        if not done:
            return
        for index in done:
            del self._steps[index]
        referenced = {key for step in self._steps.values() for key in step.boxes} | self.flow.keys()
        self._meta = {key: meta for key, meta in self._meta.items() if key in referenced}


def _empty() -> sv.Detections:
    det = sv.Detections.empty()
    det.tracker_id = np.empty(0, dtype=int)
    det.data = {"class_name": np.empty(0, dtype=object), TEXT: np.empty(0, dtype=object),
                KIND: np.empty(0, dtype=object)}
    return det


EMPTY = _empty()  # a frame without tracks (most frames of most streams): shared, not to be changed
