"""A scripted detector for tests only: answers each keyframe from a script keyed by frame index."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import supervision as sv

from streamer.records import FrameDetections, Keyframe

# (label, (x1, y1, x2, y2), text or None[, confidence: 1 if not given])
Box = tuple


class ScriptedDetector:
    input_size = None  # takes keyframes at any size

    def __init__(self, script: Callable[[int], list[Box]]) -> None:
        self.script = script
        self.calls: list[list[int]] = []

    def detect(self, keyframes: list[Keyframe]) -> list[FrameDetections]:
        self.calls.append([k.frame.index for k in keyframes])
        return [FrameDetections(k, _detections(self.script(k.frame.index))) for k in keyframes]


def _detections(boxes: list[Box]) -> sv.Detections:
    if not boxes:
        det = sv.Detections.empty()
        det.data["class_name"] = np.array([], dtype=object)
        return det
    return sv.Detections(
        xyxy=np.array([b[1] for b in boxes], dtype=np.float32),
        confidence=np.array([b[3] if len(b) > 3 else 1.0 for b in boxes], dtype=np.float32),
        data={"class_name": np.array([b[0] for b in boxes], dtype=object),
              "text": np.array([b[2] or "" for b in boxes], dtype=object)},
    )
