"""Drawing tracks on frames with supervision's annotators: box, mask and a label of track id, class and text."""

from __future__ import annotations

import numpy as np
import supervision as sv

from streamer.records import Tracks


def label_for(track_id: int, name: str, text: str) -> str:
    head = f"#{track_id} {name}" if track_id >= 0 else name
    return f"{head}: {text}" if text else head


class Annotator:
    """Colours follow the class name, so a track keeps its colour between keyframes."""

    def __init__(self) -> None:
        self._class_ids: dict[str, int] = {}
        self._boxes = sv.BoxAnnotator(color_lookup=sv.ColorLookup.CLASS, thickness=2)
        self._masks = sv.MaskAnnotator(color_lookup=sv.ColorLookup.CLASS, opacity=0.35)
        self._labels = sv.LabelAnnotator(color_lookup=sv.ColorLookup.CLASS, text_scale=0.5, text_padding=4)
        self._prepared: sv.Detections | None = None
        self._labels_cache: list[str] = []

    def prepare(self, tracks: Tracks) -> None:
        """Work that depends on the detections only, done once per keyframe rather than once per frame."""
        det = tracks.detections
        names = det.data.get("class_name")
        names = [str(n) for n in names] if names is not None else ["object"] * len(det)
        det.class_id = np.array([self._class_ids.setdefault(n, len(self._class_ids)) for n in names], dtype=int)
        texts = det.data.get("text")
        ids = det.tracker_id if det.tracker_id is not None else [-1] * len(det)
        self._labels_cache = [
            label_for(int(t), n, str(texts[i]) if texts is not None else "") for i, (t, n) in enumerate(zip(ids, names))
        ]
        self._prepared = det

    def draw(self, image: np.ndarray, tracks: Tracks) -> np.ndarray:
        det = tracks.detections
        if len(det) == 0:
            return image
        if self._prepared is not det:
            self.prepare(tracks)
        if det.mask is not None:
            image = self._masks.annotate(image, det)
        image = self._boxes.annotate(image, det)
        return self._labels.annotate(image, det, labels=self._labels_cache)
