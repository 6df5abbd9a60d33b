"""Sinks: where events and annotated frames leave the pipeline. One word for one idea: a *sink* consumes events
(`EventSink`: the JSONL log, MQTT, webhooks, the live page) or annotated frames (`FrameSink`: the live page),
declared here as protocols; the annotated H.264 video is written by `VideoSink`.

The log and the video are opened only once the source and the model are known to work, so a bad run never
truncates the outputs of an earlier one, and both are closed (the MP4 finalised, the log flushed) on every way
out of a run.
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path
from typing import Protocol

import av
import cv2
import numpy as np

from streamer.errors import StreamerError, cannot_write
from streamer.records import Event, FrameTracks, StreamInfo


class EventSink(Protocol):
    """Closing is the business of whoever made the sink, after the last source is done."""

    def event(self, event: Event) -> None:
        """Take one event; must not block the source for long (queue it if delivery can wait)."""


class FrameSink(Protocol):
    def frame(self, source: str, image: np.ndarray, tracks: list[FrameTracks]) -> None:
        """Take one annotated frame of `source` (a reference: copy or encode only what is used) with the tracks
        drawn on it, one `FrameTracks` per task."""


# A fragment a second, written out at once: a run that is killed, or whose disk fills up, leaves a video that
# plays up to about then (a plain MP4 is unreadable without the index it writes at the end).
_FRAGMENTED = {"movflags": "frag_keyframe+empty_moov+default_base_moof", "frag_duration": "1000000",
               "flush_packets": "1"}


_TIME_BASE = Fraction(1, 90000)


class VideoSink:
    """Writes every frame at its media time (a variable frame rate or a camera's outage stays as long as it was,
    so an event's `pts` is where it is in the video) and the source's size, as a fragmented MP4 that is
    playable however the run ends. A frame of another size (a camera back at another resolution, a spliced
    file) is scaled to the file's size; an odd width or height gets a black column or row (4:2:0 needs even
    sizes)."""

    def __init__(self, path: Path, info: StreamInfo, codec: str = "libx264", preset: str = "veryfast", crf: int = 23):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._container = av.open(str(self.path), mode="w", options=_FRAGMENTED)
        except OSError as exc:
            raise cannot_write("video", self.path, exc) from None
        try:
            stream = self._container.add_stream(codec, rate=info.fps)
        except (av.error.FFmpegError, ValueError) as exc:
            self._container.close()
            raise StreamerError(f"cannot write video with codec '{codec}': {exc}") from None
        self._pad = (info.height % 2, info.width % 2)
        stream.width, stream.height, stream.pix_fmt = info.width + self._pad[1], info.height + self._pad[0], "yuv420p"
        if codec == "libx264":
            stream.options = {"preset": preset, "crf": str(crf)}
        stream.codec_context.thread_type = "AUTO"
        stream.codec_context.time_base = stream.time_base = _TIME_BASE
        self._stream = stream
        self._first_pts: float | None = None
        self._last = -1

    def write(self, image: np.ndarray, pts_s: float) -> None:
        """`pts_s`: the frame's media time in seconds; the video starts at its first frame's."""
        width, height = self._stream.width - self._pad[1], self._stream.height - self._pad[0]
        if image.shape[1] != width or image.shape[0] != height:
            # A camera that came back at another resolution: keep the file's size.
            image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
        if any(self._pad):
            image = cv2.copyMakeBorder(image, 0, self._pad[0], 0, self._pad[1], cv2.BORDER_CONSTANT, value=0)
        frame = av.VideoFrame.from_ndarray(image, format="bgr24")
        if self._first_pts is None:
            self._first_pts = pts_s
        self._last = max(self._last + 1, round((pts_s - self._first_pts) / _TIME_BASE))
        frame.pts, frame.time_base = self._last, _TIME_BASE
        try:
            self._container.mux(self._stream.encode(frame))
        except OSError as exc:  # FFmpeg's write errors are OSErrors too (a full disk, a file system gone)
            raise cannot_write("video", self.path, exc) from None

    def close(self) -> None:
        if self._container is None:
            return
        try:
            self._container.mux(self._stream.encode(None))
            self._container.close()
        except OSError as exc:
            raise cannot_write("video", self.path, exc) from None
        finally:
            self._container = None


class JsonlSink:
    """The event log: one JSON object per line, flushed per event so a killed run keeps what it logged;
    `append` continues the log of a run whose process died."""

    what = "event log"

    def __init__(self, path: Path, append: bool = False) -> None:
        self.path = Path(path)
        self._unflushed = 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a" if append else "w", encoding="utf-8")
        except OSError as exc:
            raise cannot_write(self.what, self.path, exc) from None

    def event(self, event: Event) -> None:
        self._write([event.to_dict()])

    flush_every = 1  # writes between flushes

    def _write(self, records: list[dict]) -> None:
        try:
            self._file.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
            self._unflushed += 1
            if self._unflushed >= self.flush_every:
                self._file.flush()
                self._unflushed = 0
        except OSError as exc:
            raise cannot_write(self.what, self.path, exc) from None

    def close(self) -> None:
        if not self._file.closed:
            try:
                self._file.close()
            except OSError as exc:
                raise cannot_write(self.what, self.path, exc) from None


class TracksSink(JsonlSink):
    """The tracks file: a line for every box of every frame (frames without tracks have none), in frame order.
    `kind` says how the box was made: `detected` on a keyframe, `interpolated` between keyframes, `predicted`
    ahead of the last one. Unconfirmed boxes (drawn without an id) have `track_id` -1."""

    what = "tracks file"
    flush_every = 25  # frames: a killed run keeps its tracks up to about a second before

    def tracks(self, source: str, tracks: list[FrameTracks]) -> None:
        records = []
        for frame_tracks in tracks:
            frame, det = frame_tracks.frame, frame_tracks.detections
            for i in range(len(det)):
                records.append({
                    "source": source, "frame_index": frame.index, "pts": round(frame.pts, 6),
                    "task": frame_tracks.task, "track_id": int(det.tracker_id[i]),
                    "label": str(det.data["class_name"][i]), "bbox": [round(float(v), 2) for v in det.xyxy[i]],
                    "confidence": round(float(det.confidence[i]), 4), "text": str(det.data["text"][i]),
                    "kind": str(det.data["kind"][i]),
                })
        if records:
            self._write(records)
