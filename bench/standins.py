"""Bench-only stand-ins for the model: they let a bench measure everything around Florence-2."""

from __future__ import annotations

import time

import numpy as np
import supervision as sv

from streamer.records import FrameDetections, Keyframe


class NoOpDetector:
    """Answers every keyframe with no detections, at once."""
    input_size = None  # takes keyframes at any size

    def detect(self, keyframes: list[Keyframe]) -> list[FrameDetections]:
        out = []
        for k in keyframes:
            det = sv.Detections.empty()
            det.data["class_name"] = np.array([], dtype=object)
            det.data["text"] = np.array([], dtype=object)
            out.append(FrameDetections(k, det))
        return out


class MovingBoxDetector:
    """One box sweeping across the frame, so tracks, events and drawing all have work; optional model latency."""
    input_size = None  # takes keyframes at any size

    def __init__(self, latency_s: float = 0.0) -> None:
        self.latency_s = latency_s

    def detect(self, keyframes: list[Keyframe]) -> list[FrameDetections]:
        if self.latency_s:
            time.sleep(self.latency_s)
        out = []
        for k in keyframes:
            h, w = k.frame.image.shape[:2]
            x = (k.frame.pts * 40.0) % max(1, w - 100)
            det = sv.Detections(
                xyxy=np.array([[x, h / 3, x + 100, h / 3 + 60]], dtype=np.float32),
                confidence=np.array([0.9], dtype=np.float32),
                data={"class_name": np.array(["car"], dtype=object), "text": np.array([""], dtype=object)},
            )
            out.append(FrameDetections(k, det))
        return out
