"""Snapshots: a JPEG crop of the object an event is about, named in the event (`snapshot`, relative to the log).

Crops are cut from the frame's own pixels (never the drawn copy), and every file is named after the run that
wrote it and created only where nothing is, so two runs writing into one folder never take each other's files.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import cv2
import numpy as np

from streamer.errors import cannot_write
from streamer.records import Event, Frame
from streamer.sources import safe_name

SNAPSHOT_TYPES = ("object_appeared", "text_read", "object_described", "phrase_seen")


class Snapshots:
    """One run's snapshots, in `snapshots/` of the log's folder."""

    def __init__(self, log_folder: Path, run_id: str) -> None:
        self.folder = Path(log_folder)
        self.run_id = run_id

    def add(self, frame: Frame, events: list[Event]) -> list[Event]:
        """The events, those with an object to show with a crop of it from `frame` (a new event: records are
        never edited)."""
        out = []
        for event in events:
            crop = None
            if event.type in SNAPSHOT_TYPES and event.bbox is not None:
                x1, y1, x2, y2 = (int(round(v)) for v in event.bbox)
                crop = frame.image[max(0, y1) : max(0, y2), max(0, x1) : max(0, x2)]
            if crop is None or crop.size == 0:
                out.append(event)
                continue
            name = (f"snapshots/{safe_name(event.source)}-{self.run_id}{frame.index:07d}-{event.track_id}-"
                    f"{event.type}.jpg")
            save_jpeg(self.folder / name, crop, "snapshot")
            out.append(dataclasses.replace(event, extra={**event.extra, "snapshot": name}))
        return out


def save_jpeg(path: Path, image: np.ndarray, what: str) -> None:
    """A new JPEG file at `path`, never over one that is there; OpenCV says only False when a write fails, so
    the one line says why."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        ok, data = cv2.imencode(".jpg", image)
        if not ok:
            raise OSError(f"cannot encode a {image.shape[1]}x{image.shape[0]} image as JPEG")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data.tobytes())
    except OSError as exc:
        raise cannot_write(what, path, exc) from None
