"""The frame reader: a thread that decodes a file or URL with PyAV into `Frame` records on a bounded queue.

The container is opened in the caller's thread so that a missing file or a non-video fails at once, with one
clear line; decoding then runs on its own thread, and end of stream or a decode error reaches the consumer
through the same queue as the frames, so nothing is swallowed.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import av

from streamer.errors import StreamerError
from streamer.records import Frame, StreamInfo

_POLL_S = 0.1


def is_url(source: str) -> bool:
    return "://" in source


def display_name(source: str) -> str:
    """The source as it may appear in logs, events and errors: credentials removed from URLs."""
    if not is_url(source):
        return source
    parts = urlsplit(source)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, ""))


@dataclass(frozen=True, slots=True)
class _End:
    """End of stream; `error` is set when decoding failed."""

    error: BaseException | None = None


class Reader:
    """Decodes one source on a background thread; iterate `frames()` to consume it."""

    def __init__(self, source: str, queue_size: int = 32) -> None:
        self.source = source
        self.name = display_name(source)
        self._queue: queue.Queue[Frame | _End] = queue.Queue(maxsize=queue_size)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._container: av.container.InputContainer | None = None
        self.info: StreamInfo | None = None
        self.frames_decoded = 0

    def open(self) -> StreamInfo:
        """Open the container and its first video stream, or raise one clear StreamerError."""
        if not is_url(self.source):
            path = Path(self.source)
            if not path.exists():
                raise StreamerError(f"input not found: {self.name}")
            if path.is_dir():
                raise StreamerError(f"input is a folder, not a video: {self.name}")
            if not os.access(path, os.R_OK):
                raise StreamerError(f"input not readable: {self.name}")
        try:
            container = av.open(self.source, mode="r")
        except av.error.FFmpegError as exc:
            raise StreamerError(f"cannot open {self.name}: {_reason(exc)}") from None
        if not container.streams.video:
            container.close()
            raise StreamerError(f"no video stream in {self.name}")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        if not stream.codec_context.width or not stream.codec_context.height:
            container.close()
            raise StreamerError(f"cannot read the video size of {self.name}: not a playable video")
        fps = stream.average_rate or stream.guessed_rate or Fraction(25)
        self._container = container
        self.info = StreamInfo(
            source=self.name,
            width=stream.codec_context.width,
            height=stream.codec_context.height,
            fps=Fraction(fps),
            total_frames=stream.frames or None,
        )
        return self.info

    def start(self) -> None:
        if self._container is None:
            self.open()
        self._thread = threading.Thread(target=self._run, name=f"reader:{self.name}", daemon=True)
        self._thread.start()

    def frames(self, stop: threading.Event | None = None) -> Iterator[Frame]:
        """Yield frames until the end of the stream or `stop`; re-raise a decode error as StreamerError."""
        while stop is None or not stop.is_set():
            try:
                item = self._queue.get(timeout=_POLL_S)
            except queue.Empty:
                continue
            if isinstance(item, _End):
                if item.error is not None:
                    raise StreamerError(
                        f"error decoding {self.name} after frame {self.frames_decoded}: {_reason(item.error)}"
                    )
                return
            yield item

    def stop(self) -> None:
        """Ask the thread to end and wait for it; safe to call twice."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._container is not None:
            self._container.close()
            self._container = None

    def _put(self, item: Frame | _End) -> bool:
        """Block while the queue is full (back-pressure for files) but wake up to notice a stop."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        assert self._container is not None and self.info is not None
        stream = self._container.streams.video[0]
        fallback_step = 1.0 / float(self.info.fps)
        error: BaseException | None = None
        try:
            for av_frame in self._container.decode(stream):
                if self._stop.is_set():
                    return
                pts = av_frame.time if av_frame.time is not None else self.frames_decoded * fallback_step
                frame = Frame(
                    source=self.name,
                    index=self.frames_decoded,
                    pts=float(pts),
                    wall_time=time.time(),
                    image=av_frame.to_ndarray(format="bgr24"),
                )
                if not self._put(frame):
                    return
                self.frames_decoded += 1
        except Exception as exc:  # surfaced to the consumer, never swallowed
            error = exc
        self._put(_End(error))


def _reason(exc: BaseException) -> str:
    """FFmpeg's own words without the errno and file name noise PyAV adds."""
    if isinstance(exc, av.error.FFmpegError) and exc.strerror:
        text = exc.strerror
        if isinstance(exc, av.error.InvalidDataError):
            text = "not a video file, or it is corrupt"
        return text[0].lower() + text[1:]
    return str(exc) or type(exc).__name__
