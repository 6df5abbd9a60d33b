"""Typed records that flow one way through the pipeline: frame -> keyframe -> detections -> tracks -> events."""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import supervision as sv

SCHEMA_VERSION = 1
# Every event type there is, as the event log's schema names them.
EVENT_TYPES: tuple[str, ...] = tuple(json.loads((Path(__file__).parent / "schema" / "event.schema.json").read_text(
    encoding="utf-8"))["properties"]["type"]["enum"])

# Keys of `sv.Detections.data` beyond supervision's own `class_name`, named once (as supervision names its own).
TEXT = "text"  # the text read on a box (OCR), or a track's settled text
KIND = "kind"  # how a track's box on a frame was made: DETECTED, INTERPOLATED or PREDICTED
TRACK_KEY = "track_key"  # the tracker's own key of a track, set for unconfirmed tracks too
MISSES = "misses"  # keyframes in a row a track was not seen on
DETECTED, INTERPOLATED, PREDICTED = "detected", "interpolated", "predicted"


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """What the reader learned when it opened a source."""

    source: str  # display name, never with credentials
    width: int
    height: int
    fps: Fraction
    total_frames: int | None  # None for live sources or containers that do not say


@dataclass(slots=True)
class Frame:
    """One decoded picture. `image` is BGR uint8 (what OpenCV drawing and the encoder take), read-only from the
    reader on: the model, snapshots, saved keyframes and recordings get the camera's pixels, and whoever draws
    draws on a copy.

    Three clocks: `pts` is the source's media time in seconds, kept increasing across reconnects of a live
    source (a gap adds its wall-clock length); `camera_time` is the camera's own wall clock where the stream
    carries it (RTCP sender reports), else None; `wall_time` is when the reader decoded the frame here.
    """

    source: str
    index: int
    pts: float
    wall_time: float
    image: np.ndarray
    camera_time: float | None = None


@dataclass(frozen=True, slots=True)
class SourceStatus:
    """A live source went down or came back; travels in the frame queue so events keep stream order."""

    source: str
    state: str  # "down" | "up"
    wall_time: float
    pts: float  # media time at the change (the last frame's pts when going down)
    frame_index: int  # index of the last frame before, or the first frame after, the change
    reason: str | None = None
    gap_s: float | None = None  # for "up": how long the source was down


@dataclass(slots=True)
class Keyframe:
    """A frame the sampler chose for the model, with the task to run on it (inside `zone`, if set)."""

    frame: Frame
    task: str
    prompt: str | None = None
    zone: tuple[int, int, int, int] | None = None  # x1, y1, x2, y2 in frame pixels
    # Set when `frame.image` is already the zone's crop, shrunk to the model's input size for a remote worker:
    # the source frame's (width, height), which answers are mapped back to.
    frame_size: tuple[int, int] | None = None
    question: bool = False  # a camera's question about one object (questions.py): waits behind keyframes
    # A camera's keyframe with nothing moving and no track held: waits behind other cameras' keyframes, up to
    # `pipeline.still_wait_s` (the model's time goes where something moves)
    still: bool = False


@dataclass(slots=True)
class FrameDetections:
    """The model's answer for one keyframe: boxes in source pixels, and text for text-only tasks."""

    keyframe: Keyframe
    detections: sv.Detections
    text: str | None = None
    # Set by a remote model client on the first answer after its worker changed: ("worker_restarted", {"worker":
    # name}) or ("worker_lost", {"worker": name, "moved_to": other}); the source logs it as an event.
    worker_change: tuple[str, dict[str, str]] | None = None


@dataclass(slots=True)
class Tracks:
    """Every live track of one task at one keyframe: where it was seen on it, or predicted if it was missed."""

    frame: Frame
    # tracker_id (-1: not confirmed yet), class_name (the track's label by vote), confidence, data[KIND]
    # (DETECTED or PREDICTED), data[TRACK_KEY], data[MISSES]
    detections: sv.Detections
    ended: list[int] = field(default_factory=list)  # ids of confirmed tracks that ended on this keyframe

    def seen(self) -> "Tracks":
        """Only the tracks detected on this keyframe."""
        kind = self.detections.data.get(KIND)
        if kind is None or not len(self.detections):
            return self
        return Tracks(self.frame, self.detections[kind == DETECTED], self.ended)


@dataclass(slots=True)
class FrameTracks:
    """The tracks on one frame, every frame: boxes `detected` on it (a keyframe), `interpolated` between the
    keyframes around it (files), or `predicted` from the last one (cameras, and tracks missed on a keyframe).
    What frame sinks receive with the picture, what the tracks file holds and what the video shows."""

    frame: Frame
    task: str
    detections: sv.Detections  # tracker_id (-1: not confirmed), class_name, confidence, data[TEXT], data[KIND]


@dataclass(slots=True)
class Event:
    """One line of the event log; see schema/event.schema.json."""

    type: str
    source: str
    frame_index: int
    pts: float
    wall_time: float
    camera_time: float | None = None
    track_id: int | None = None
    label: str | None = None
    bbox: tuple[float, float, float, float] | None = None
    confidence: float | None = None
    text: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "type": self.type,
            "source": self.source,
            "frame_index": self.frame_index,
            "pts": round(self.pts, 6),
            "wall_time": iso_time(self.wall_time),
            "track_id": self.track_id,
            "label": self.label,
            "bbox": None if self.bbox is None else [round(float(v), 2) for v in self.bbox],
        }
        if self.camera_time is not None:
            out["camera_time"] = iso_time(self.camera_time)
        if self.confidence is not None:
            out["confidence"] = round(float(self.confidence), 4)
        if self.text is not None:
            out["text"] = self.text
        out.update(self.extra)
        return out


@dataclass(frozen=True, slots=True)
class Logged:
    """An event as it leaves: the record, its JSON object and that object as one line of text, made once; the log,
    the store and the senders all take these same bytes."""

    event: Event
    data: dict[str, Any]
    line: str
    snapshot: Path | None = None  # where the event's snapshot file is, for outputs that send it on

    @classmethod
    def of(cls, event: Event, folder: Path | None = None) -> "Logged":
        """`folder`: the event log's, which the event's paths are relative to. Strict JSON: a NaN or an infinity
        anywhere in the event raises ValueError here, before any output has it (it is no JSON, and the store
        refuses it)."""
        data = event.to_dict()
        snapshot = Path(folder) / data["snapshot"] if folder is not None and "snapshot" in data else None
        return cls(event, data, json.dumps(data, ensure_ascii=False, allow_nan=False), snapshot)


def iso_time(epoch_s: float) -> str:
    """Epoch seconds as the ISO-8601 UTC time the event log and the API write."""
    return _dt.datetime.fromtimestamp(epoch_s, tz=_dt.timezone.utc).isoformat()


@dataclass(slots=True)
class Segment:
    """One segment as the index holds it; `path` relative to the store's folder."""

    source: str
    path: str
    start_wall: float
    end_wall: float
    start_pts: float | None
    end_pts: float | None
    first_frame: int | None
    last_frame: int | None
    bytes: int
    id: int | None = None
    original: bool = False  # a file source's own file, indexed as its recording: never deleted by retention
    run: str | None = None  # the run that recorded it
    tracks: str | None = None  # an original's tracks file (a recorded segment's lie beside it: `tracks_beside`)
