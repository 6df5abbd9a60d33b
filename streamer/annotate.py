"""Drawing tracks on frames with supervision's annotators: box, mask and a label of track id, class and text."""

from __future__ import annotations

import numpy as np
import supervision as sv

from streamer.records import Tracks


def label_for(track_id: int, name: str, text: str) -> str:
    head = f"#{track_id} {name}" if track_id >= 0 else name
    return f"{head}: {text}" if text else head


class Annotator:
    """Colours follow the class name, so a track keeps its colour between keyframes. Labels are built once per
    keyframe's detections and reused on the frames in between."""

    def __init__(self) -> None:
        self._class_ids: dict[str, int] = {}
        self._boxes = sv.BoxAnnotator(color_lookup=sv.ColorLookup.CLASS, thickness=2)
        self._masks = sv.MaskAnnotator(color_lookup=sv.ColorLookup.CLASS, opacity=0.35)
        self._labels = sv.LabelAnnotator(color_lookup=sv.ColorLookup.CLASS, text_scale=0.5, text_padding=4)
        self._prepared: list[tuple[sv.Detections, list[str]]] = []

    def _labels_for(self, det: sv.Detections) -> list[str]:
        names = det.data.get("class_name")
        names = [str(n) for n in names] if names is not None else ["object"] * len(det)
        det.class_id = np.array([self._class_ids.setdefault(n, len(self._class_ids)) for n in names], dtype=int)
        texts = det.data.get("text")
        ids = det.tracker_id if det.tracker_id is not None else [-1] * len(det)
        return [label_for(int(t), n, str(texts[i]) if texts is not None else "") for i, (t, n) in enumerate(zip(ids, names))]

    def draw(self, image: np.ndarray, tracks: list[Tracks]) -> np.ndarray:
        """Draw the latest tracks of each scheduled task onto `image` (in place)."""
        current = [t.detections for t in tracks if len(t.detections)]
        if len(self._prepared) != len(current) or any(a is not b for (a, _), b in zip(self._prepared, current)):
            self._prepared = [(det, self._labels_for(det)) for det in current]
        for det, labels in self._prepared:
            if det.mask is not None:
                image = self._masks.annotate(image, det)
            image = self._boxes.annotate(image, det)
            image = self._labels.annotate(image, det, labels=labels)
        return image
