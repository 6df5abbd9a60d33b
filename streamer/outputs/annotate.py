"""Drawing tracks on frames with supervision's annotators: box, mask and a label of track id, class and text."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import cv2
import numpy as np
import supervision as sv

from streamer.records import TEXT


def label_for(track_id: int, name: str, text: str) -> str:
    head = f"#{track_id} {name}" if track_id >= 0 else name
    return f"{head}: {text}" if text else head


@dataclass(frozen=True, slots=True)
class Layer:
    """What is drawn for one task's tracks: the boxes (with `class_id` for colours) and a label for each."""

    detections: sv.Detections
    labels: list[str]


class Annotator:
    """Colours follow the class name, so a track keeps its colour between keyframes. An annotator belongs to one
    thread: its colours and its traces (supervision's `TraceAnnotator` keeps every track's path) are state, and
    two threads drawing with one corrupt it. Whoever draws elsewhere (the live view, for its watchers) draws with
    a `sibling`."""

    def __init__(self, traces: bool = True) -> None:
        self._class_ids: dict[str, int] = {}
        self._boxes = sv.BoxAnnotator(color_lookup=sv.ColorLookup.CLASS, thickness=2)
        self._masks = sv.MaskAnnotator(color_lookup=sv.ColorLookup.CLASS, opacity=0.35)
        self._labels = sv.LabelAnnotator(color_lookup=sv.ColorLookup.CLASS, text_scale=0.5, text_padding=4)
        self._traces = (sv.TraceAnnotator(color_lookup=sv.ColorLookup.CLASS, trace_length=50, thickness=2)
                        if traces else None)
        self._polygons: list[tuple[str, np.ndarray]] = []
        self._segments: list[tuple[str, tuple[int, int], tuple[int, int]]] = []

    def areas(self, polygons, segments) -> None:
        """Zones (polygons) and lines to draw on every frame (replaced whole, never changed in place: a sibling
        on another thread reads them)."""
        self._polygons = [(name, np.asarray(p, dtype=np.int32).reshape(-1, 1, 2)) for name, p in polygons]
        self._segments = [(name, tuple(map(int, a)), tuple(map(int, b))) for name, a, b in segments]

    def sibling(self) -> "Annotator":
        """An annotator for another thread: no traces (they follow one stream of frames, in order), colours of
        its own; `follow` gives it this one's zones and lines."""
        return Annotator(traces=False)

    def follow(self, other: "Annotator") -> None:
        """Take `other`'s zones and lines (as they are now: it may start over at another frame size)."""
        self._polygons, self._segments = other._polygons, other._segments

    def layer(self, detections: sv.Detections) -> Layer:
        """The layer of one frame's tracks of a task; `data[TEXT]` is what a label shows after the class (the
        track's settled OCR text)."""
        texts = [str(t) for t in detections.data.get(TEXT, [""] * len(detections))]
        names = detections.data.get("class_name")
        names = [str(n) for n in names] if names is not None else ["object"] * len(detections)
        class_id = np.array([self._class_ids.setdefault(n, len(self._class_ids)) for n in names], dtype=int)
        ids = detections.tracker_id if detections.tracker_id is not None else [-1] * len(detections)
        labels = [label_for(int(t), n, text) for t, n, text in zip(ids, names, texts)]
        return Layer(dataclasses.replace(detections, class_id=class_id), labels)

    def _draw_areas(self, image: np.ndarray) -> None:
        for name, polygon in self._polygons:
            cv2.polylines(image, [polygon], isClosed=True, color=(0, 200, 255), thickness=2)
            x, y = polygon[0, 0]
            cv2.putText(image, name, (int(x) + 4, int(y) + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 200, 255), 1, cv2.LINE_AA)
        for name, start, end in self._segments:
            cv2.line(image, start, end, (255, 0, 255), 2)
            cv2.putText(image, name, (start[0] + 4, start[1] - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 0, 255), 1, cv2.LINE_AA)

    def draw(self, image: np.ndarray, layers: list[Layer]) -> np.ndarray:
        """A copy of `image` with zones, lines and each layer drawn on it: supervision's annotators draw in place,
        and the frame's own pixels are the camera's, for the model, snapshots and recordings."""
        image = image.copy()
        self._draw_areas(image)
        for layer in layers:
            det = layer.detections
            if not len(det):
                continue
            if self._traces is not None and det.tracker_id is not None and (det.tracker_id >= 0).any():
                image = self._traces.annotate(image, det[det.tracker_id >= 0])
            if det.mask is not None:
                image = self._masks.annotate(image, det)
            image = self._boxes.annotate(image, det)
            image = self._labels.annotate(image, det, labels=layer.labels)
        return image
