"""The frame reader: a thread that decodes a file or a camera stream with PyAV into `Frame` records.

Files: the container is opened in the caller's thread, so a missing file or a non-video fails at once with one
clear line; frames then wait on a bounded queue (back-pressure: no frame is ever dropped). A file behind a URL
(an HTTP download, a presigned object-store link, an HLS VOD playlist) is a file too: what tells it from a camera
is whether FFmpeg finds an end to the media. Its download is resumed where it broke (HTTP ranges, FFmpeg's
reconnect options) rather than restarted.

Live sources (RTSP and any other URL FFmpeg opens): TCP by default, open and read timeouts always set (without
them PyAV waits forever on a frozen camera), the end of a live stream taken as the camera going away, and
reconnects with exponential backoff and jitter. The queue keeps the newest frames and drops the oldest, so latency
cannot build up behind a slow consumer. `SourceStatus` records (down / up, with the gap) travel in the same queue
as frames, so the consumer sees them in stream order.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

from streamer.config import LiveConfig
from streamer.errors import StreamerError
from streamer.records import Frame, SourceStatus, StreamInfo
from streamer.sources import display_name, guess_live, is_url

_POLL_S = 0.1
_STALE_S = 1.0  # a live connection opened longer ago than this before reading is reopened
# Answers that will not change by retrying: a wrong path, wrong credentials, an unknown protocol.
_PERMANENT = tuple(
    getattr(av.error, name)
    for name in ("HTTPNotFoundError", "HTTPUnauthorizedError", "HTTPForbiddenError", "HTTPBadRequestError",
                 "ProtocolNotFoundError")
    if hasattr(av.error, name)
)


@dataclass(frozen=True, slots=True)
class _End:
    """End of stream; `error` is set when decoding failed."""

    error: BaseException | None = None


class FrameQueue:
    """Bounded hand-off between a reader thread and its consumer.

    With `drop_oldest` (live sources) a put into a full queue drops the oldest frame instead of waiting and counts
    it; status and end records are never dropped. Without it (files) a put waits for room.
    """

    def __init__(self, maxsize: int, drop_oldest: bool) -> None:
        self.maxsize = maxsize
        self.drop_oldest = drop_oldest
        self.dropped = 0
        self._items: deque = deque()
        self._cond = threading.Condition()

    def put(self, item, stop: threading.Event) -> bool:
        with self._cond:
            while len(self._items) >= self.maxsize:
                if self.drop_oldest:
                    oldest = next((i for i, x in enumerate(self._items) if isinstance(x, Frame)), None)
                    if oldest is not None:
                        del self._items[oldest]
                        self.dropped += 1
                    break
                if stop.is_set():
                    return False
                self._cond.wait(_POLL_S)
            self._items.append(item)
            self._cond.notify_all()
            return True

    def get(self, timeout: float):
        """The next item, or None after `timeout` seconds without one."""
        with self._cond:
            if not self._items:
                self._cond.wait(timeout)
                if not self._items:
                    return None
            item = self._items.popleft()
            self._cond.notify_all()
            return item


class Reader:
    """Decodes one source on a background thread; iterate `frames()` to consume it."""

    def __init__(
        self,
        source: str,
        name: str | None = None,
        live: bool | None = None,
        queue_size: int = 32,
        live_config: LiveConfig | None = None,
        resume: SourceStatus | None = None,
    ) -> None:
        """`resume` (live only): a "down" status where an earlier run of this source stopped (its process died);
        it is reported first, and frame indices and media time continue from it across the gap."""
        self.source = source
        self.name = name or display_name(source)
        self.live = guess_live(source, live)  # None until opening the media tells
        self.live_config = live_config or LiveConfig()
        self._queue_size = queue_size
        self.queue: FrameQueue | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._container = None
        self.info: StreamInfo | None = None
        self.frames_decoded = 0
        self.reconnects = 0
        self.state = "connecting"
        self._first_error: str | None = None
        self._last_session_frames = 0
        self._last_pts = 0.0
        self.resume = resume if self.live is not False else None
        self._opened = 0.0
        self._fresh = False  # the check connection was closed at start: connect again, nothing went down

    @property
    def dropped(self) -> int:
        return self.queue.dropped if self.queue is not None else 0

    def _decide(self, live: bool) -> None:
        """Fix the mode, and with it the queue: newest-frame-wins for a camera, back-pressure for a file."""
        self.live = live
        if not live:
            self.resume = None
        size = self.live_config.queue_size if live else self._queue_size
        self.queue = FrameQueue(size, drop_oldest=live)

    # -- opening -------------------------------------------------------------------------------------------

    def open(self) -> StreamInfo | None:
        """Open the source, or raise one clear StreamerError. A live source that is merely unreachable now is
        not an error: None is returned and the reader thread keeps trying."""
        if not is_url(self.source):
            path = Path(self.source)
            if not path.exists():
                raise StreamerError(f"input not found: {self.name}")
            if path.is_dir():
                raise StreamerError(f"input is a folder, not a video: {self.name}")
            if not os.access(path, os.R_OK):
                raise StreamerError(f"input not readable: {self.name}")
        try:
            self._connect()
        except _PERMANENT as exc:
            raise StreamerError(f"cannot open {self.name}: {_reason(exc)}") from None
        except (av.error.FFmpegError, OSError, StreamerError) as exc:
            if self.live is False:
                if isinstance(exc, StreamerError):
                    raise
                raise StreamerError(f"cannot open {self.name}: {_reason(exc)}") from None
            # A camera that is off, booting or half-answering now (and a URL that cannot tell yet what it serves
            # is taken for one): the reader thread keeps trying.
            self._first_error = str(exc) if isinstance(exc, StreamerError) else _reason(exc)
            self._decide(True)
            return None
        if self.live is None:
            self._decide(not _has_end(self._container))
        elif self.queue is None:
            self._decide(self.live)
        return self.info

    def _connect(self) -> None:
        if is_url(self.source):
            cfg = self.live_config
            options = {"timeout": str(int(cfg.read_timeout_s / 2 * 1e6))}  # FFmpeg gives up after about twice this
            if self.source.startswith(("rtsp://", "rtsps://")):
                options["rtsp_transport"] = cfg.rtsp_transport
            if self.source.startswith(("http://", "https://")) and self.live is not True:
                # A download that breaks off is asked again from the byte it stopped at (a Range request), not
                # from the start; never for a resource that cannot seek, where it would repeat what was read.
                options.update(reconnect="1", reconnect_on_network_error="1",
                               reconnect_delay_max=str(int(cfg.backoff_max_s)))
            container = av.open(self.source, mode="r", options=options,
                                timeout=(cfg.open_timeout_s, cfg.read_timeout_s / 2))
        else:
            container = av.open(self.source, mode="r")
        if not container.streams.video:
            container.close()
            raise StreamerError(f"no video stream in {self.name}")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        width, height = stream.codec_context.width, stream.codec_context.height
        if not width or not height:
            container.close()
            raise StreamerError(f"cannot read the video size of {self.name}: not a playable video")
        fps = stream.average_rate or stream.guessed_rate or Fraction(25)
        self._container = container
        self._opened = time.monotonic()
        if self.info is None:
            has_end = self.live is False or (self.live is None and _has_end(container))
            self.info = StreamInfo(source=self.name, width=width, height=height, fps=Fraction(fps),
                                   total_frames=(stream.frames or None) if has_end else None)

    # -- the thread ----------------------------------------------------------------------------------------

    def start(self) -> None:
        if self._container is None and not self.live:
            self.open()
        if self.queue is None:
            self._decide(bool(self.live))
        if self.live and self._container is not None and time.monotonic() - self._opened > _STALE_S:
            # Opened to check the source while the model loaded: what the camera sent since is old news, and
            # would arrive as a burst. Start from a fresh connection, at the live edge.
            self._close()
            self._fresh = True
        target = self._run_live if self.live else self._run_file
        self._thread = threading.Thread(target=target, name=f"reader:{self.name}", daemon=True)
        self._thread.start()

    def frames(self, stop: threading.Event | None = None) -> Iterator[Frame | SourceStatus]:
        """Frames (and, for live sources, status changes) until the end of the stream or `stop`."""
        while stop is None or not stop.is_set():
            item = self.queue.get(_POLL_S)
            if item is None:
                continue
            if isinstance(item, _End):
                if item.error is not None:
                    if isinstance(item.error, StreamerError):
                        raise item.error
                    total = f" of {self.info.total_frames}" if self.info and self.info.total_frames else ""
                    raise StreamerError(
                        f"error decoding {self.name} after frame {self.frames_decoded}{total}: {_reason(item.error)}"
                    )
                return
            yield item

    def stop(self) -> None:
        """Ask the thread to end and wait a little. A thread stuck in a frozen camera's read is left to its
        timeout (it is a daemon); its container is closed by that thread, never under its feet."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0 if self.live else 5.0)
            if self._thread.is_alive():
                return
        self._close()

    def _close(self) -> None:
        if self._container is not None:
            try:
                self._container.close()
            finally:
                self._container = None

    def _put(self, item) -> bool:
        return self.queue.put(item, self._stop)

    def _run_file(self) -> None:
        assert self._container is not None and self.info is not None
        stream = self._container.streams.video[0]
        step = 1.0 / float(self.info.fps)
        error: BaseException | None = None
        try:
            for av_frame in self._container.decode(stream):
                if self._stop.is_set():
                    return
                pts = av_frame.time if av_frame.time is not None else self.frames_decoded * step
                frame = Frame(self.name, self.frames_decoded, float(pts), time.time(),
                              av_frame.to_ndarray(format="bgr24"))
                if not self._put(frame):
                    return
                self.frames_decoded += 1
        except Exception as exc:  # surfaced to the consumer, never swallowed
            error = exc
        self._put(_End(error))

    def _run_live(self) -> None:
        cfg = self.live_config
        last_pts: float | None = None  # media time of the last frame; None before the first
        down_since: float | None = None
        attempt = 0
        if self._fresh:
            try:
                self._connect()
            except (av.error.FFmpegError, OSError, StreamerError) as exc:
                self._first_error = str(exc) if isinstance(exc, StreamerError) else _reason(exc)
        if self.resume is not None:
            last_pts, down_since = self.resume.pts, self.resume.wall_time
            self.frames_decoded = self.resume.frame_index + 1
            self.state = "down"
            self._put(self.resume)
        elif self._container is None:  # unreachable at start
            down_since = time.time()
            self.state = "down"
            self._put(SourceStatus(self.name, "down", down_since, 0.0, 0, reason=self._first_error or "unreachable"))
        while not self._stop.is_set():
            if self._container is None:
                if cfg.max_retries is not None and attempt >= cfg.max_retries:
                    self._put(_End(StreamerError(f"{self.name}: gave up after {attempt} reconnect attempts")))
                    return
                delay = min(cfg.backoff_max_s, cfg.backoff_initial_s * 2**attempt)
                if self._stop.wait(random.uniform(delay / 2, delay)):
                    break
                attempt += 1
                self.reconnects += 1
                try:
                    self._connect()
                except (av.error.FFmpegError, OSError, StreamerError):
                    continue
            reason = self._decode_session(last_pts, down_since)
            if self._stop.is_set():
                break
            self._close()
            last_pts = self._last_pts
            if self._last_session_frames:  # it was up: report it down once, and back off from the start
                attempt = 0
                down_since = time.time()
                self.state = "down"
                self._put(SourceStatus(self.name, "down", down_since, last_pts or 0.0,
                                       max(self.frames_decoded - 1, 0), reason=reason))
        self._close()
        self._put(_End())

    def _decode_session(self, last_pts: float | None, down_since: float | None) -> str:
        """Decode until the stream ends or fails; return why it stopped. Media time continues from `last_pts`,
        plus the wall-clock length of the outage, so it never goes backwards across reconnects."""
        container = self._container
        stream = container.streams.video[0]
        step = 1.0 / float(self.info.fps)
        base = 0.0 if last_pts is None else last_pts + step
        if down_since is not None:
            base += time.time() - down_since
        first_raw: float | None = None
        realtime0 = container.start_time_realtime
        start_s = (container.start_time or 0) / 1e6
        self._last_session_frames = 0
        self._last_pts = base - step if last_pts is None else last_pts
        try:
            for av_frame in container.decode(stream):
                if self._stop.is_set():
                    return "stopped"
                now = time.time()
                raw = av_frame.time
                if raw is not None and first_raw is None:
                    # The first timed frame continues one step after what came before (RTSP's first frame
                    # often has no pts at all); later ones follow the stream's own clock from there.
                    first_raw = raw
                    base = base if self._last_session_frames == 0 else self._last_pts + step
                if raw is None or first_raw is None:
                    pts = base if self._last_session_frames == 0 else self._last_pts + step
                else:
                    pts = max(base + (raw - first_raw), self._last_pts + 1e-6)
                camera_time = realtime0 / 1e6 + (raw - start_s) if realtime0 and raw is not None else None
                if self._last_session_frames == 0:
                    self.state = "up"
                    gap = now - down_since if down_since is not None else None
                    if down_since is not None:
                        self._put(SourceStatus(self.name, "up", now, pts, self.frames_decoded, gap_s=gap))
                frame = Frame(self.name, self.frames_decoded, pts, now, av_frame.to_ndarray(format="bgr24"),
                              camera_time)
                self._put(frame)
                self.frames_decoded += 1
                self._last_session_frames += 1
                self._last_pts = pts
        except Exception as exc:  # a live source's errors mean "down", then reconnect
            return _reason(exc)
        return "stream ended"


def _has_end(container) -> bool:
    """Media with an end: FFmpeg knows its duration (a file behind a URL, an HLS playlist with #EXT-X-ENDLIST).
    Live HLS, MJPEG or MPEG-TS streamed over HTTP have none."""
    return container.duration is not None and container.duration > 0


def _reason(exc: BaseException) -> str:
    """FFmpeg's own words without the errno and the URL (which may hold credentials) that PyAV adds."""
    if isinstance(exc, av.error.FFmpegError):
        if isinstance(exc, av.error.InvalidDataError):
            return "not a video file, or it is corrupt"
        if isinstance(exc, av.error.ExitError):  # PyAV's own timeout interrupted FFmpeg
            return "no data within the read timeout"
        text = exc.strerror or type(exc).__name__
        return text[0].lower() + text[1:]
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror[0].lower() + exc.strerror[1:]
    return type(exc).__name__
