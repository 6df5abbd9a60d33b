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

from streamer.errors import StreamerError
from streamer.records import Event, StreamInfo


class EventSink(Protocol):
    """Closing is the business of whoever made the sink, after the last source is done."""

    def event(self, event: Event) -> None:
        """Take one event; must not block the source for long (queue it if delivery can wait)."""


class FrameSink(Protocol):
    def frame(self, source: str, image: np.ndarray) -> None:
        """Take one annotated frame of `source` (a reference: copy or encode only what is used)."""


# A fragment a second, written out at once: a recording whose process is killed stays playable to about then.
_FRAGMENTED = {"movflags": "frag_keyframe+empty_moov+default_base_moof", "frag_duration": "1000000",
               "flush_packets": "1"}


class VideoSink:
    """Writes every frame at the source's rate and size. `fragmented` (live sources, which run until stopped or
    killed) writes a fragmented MP4 that is playable however the process ends."""

    def __init__(self, path: Path, info: StreamInfo, codec: str = "libx264", preset: str = "veryfast", crf: int = 23,
                 fragmented: bool = False):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._container = av.open(str(self.path), mode="w", options=_FRAGMENTED if fragmented else {})
        try:
            stream = self._container.add_stream(codec, rate=info.fps)
        except (av.error.FFmpegError, ValueError) as exc:
            self._container.close()
            raise StreamerError(f"cannot write video with codec '{codec}': {exc}") from None
        # 4:2:0 needs an even width and height: an odd one gets a black column or row on the right or bottom.
        stream.width, stream.height, stream.pix_fmt = info.width + info.width % 2, info.height + info.height % 2, "yuv420p"
        self._pad = (info.height % 2, info.width % 2)
        if codec == "libx264":
            stream.options = {"preset": preset, "crf": str(crf)}
        stream.codec_context.thread_type = "AUTO"
        stream.time_base = Fraction(1, 1) / Fraction(info.fps)
        self._stream = stream
        self.frames = 0

    def write(self, image: np.ndarray) -> None:
        width, height = self._stream.width - self._pad[1], self._stream.height - self._pad[0]
        if image.shape[1] != width or image.shape[0] != height:
            # A camera that came back at another resolution: keep the file's size.
            image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
        if any(self._pad):
            image = cv2.copyMakeBorder(image, 0, self._pad[0], 0, self._pad[1], cv2.BORDER_CONSTANT, value=0)
        frame = av.VideoFrame.from_ndarray(image, format="bgr24")
        frame.pts = self.frames
        self._container.mux(self._stream.encode(frame))
        self.frames += 1

    def close(self) -> None:
        if self._container is None:
            return
        try:
            self._container.mux(self._stream.encode(None))
        finally:
            self._container.close()
            self._container = None


class JsonlSink:
    """The event log: one JSON object per line, flushed per event so a killed run keeps what it logged;
    `append` continues the log of a run whose process died."""

    def __init__(self, path: Path, append: bool = False) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a" if append else "w", encoding="utf-8", buffering=1)

    def event(self, event: Event) -> None:
        self._file.write(json.dumps(event.to_dict(), ensure_ascii=False) + "\n")

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()
