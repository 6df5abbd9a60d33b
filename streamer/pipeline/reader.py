"""The frame readers: a thread that decodes a file or a camera stream with PyAV into `Frame` records.

Files: the container is opened in the caller's thread, so a missing file or a non-video fails at once with one
clear line; frames then wait on a bounded queue (back-pressure: no frame is ever dropped). A file behind a URL
(an HTTP download, a presigned object-store link, an HLS VOD playlist) is a file too: what tells it from a camera
is whether FFmpeg finds an end to the media. Its download is resumed where it broke (HTTP ranges, FFmpeg's
reconnect options) rather than restarted.

Live sources (RTSP and any other URL FFmpeg opens): TCP by default, open and read timeouts always set (without
them PyAV waits forever on a frozen camera), the end of a live stream taken as the camera going away, and
reconnects with exponential backoff and jitter. The queue keeps the newest frames and drops the oldest, so latency
cannot build up behind a slow consumer. `SourceStatus` records (down / up, with the gap) travel in the same queue
as frames, so the consumer sees them in stream order. Whatever stops a camera's stream (FFmpeg's and the network's
errors, and any other exception while decoding it, whose traceback is logged for `--debug`) means "down" with its
reason, then a reconnect: a camera's error is never the run's. So does the consumer's `reconnect`, for a fault
further down the camera's path. Only a `StreamerError` (bad configuration, an output that cannot go on) ends it.

`open_reader` opens a source and returns the reader for what it turned out to be: `FileReader` or `CameraReader`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import stat
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from streamer.backoff import Backoff
from streamer.config import LiveConfig
from streamer.errors import StreamerError
from streamer.pipeline.clock import MediaClock
from streamer.records import Frame, SourceStatus, StreamInfo
from streamer.sources import display_name, guess_live, is_url, scrub

log = logging.getLogger("streamer.pipeline.reader")
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
    """What both readers share: the frame queue, the thread, and the consumer's side (`frames`, `stop`).

    `info` is what opening the source told (None for a camera not reached yet); `state` is "up", "down" or
    "connecting" for a camera and "reading" for a file; the counters are the reader thread's, read by others.
    """

    live = False
    recovers = False  # `reconnect` exists: a fault further down this source's path can be recovered from

    def __init__(self, source: str, name: str, queue: FrameQueue, container=None, info: StreamInfo | None = None):
        self.source = source
        self.name = name
        self.queue = queue
        self.info = info
        self.state = "reading"
        self.frames_decoded = 0
        self.reconnects = 0
        self.recorder = None  # a camera's `recorder.Recorder`, set before `start`: every packet recorded as it comes
        self._container = container
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def dropped(self) -> int:
        return self.queue.dropped

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"reader:{self.name}", daemon=True)
        self._thread.start()

    def frames(self, stop: threading.Event | None = None) -> Iterator[Frame | SourceStatus]:
        """Frames (and, for cameras, status changes) until the end of the stream or `stop`."""
        while stop is None or not stop.is_set():
            item = self.queue.get(_POLL_S)
            if item is None:
                continue
            if isinstance(item, _End):
                if item.error is not None:
                    raise self._failure(item.error)
                return
            yield item

    def _failure(self, error: BaseException) -> BaseException:
        """What the consumer raises for an error of the reader thread: a clear line for bad media, the bug
        itself (with its traceback) for anything else."""
        if isinstance(error, StreamerError) or not isinstance(error, (av.error.FFmpegError, OSError)):
            return error
        total = f" of {self.info.total_frames}" if self.info and self.info.total_frames else ""
        failure = StreamerError(f"error decoding {self.name} after frame {self.frames_decoded}{total}: "
                                f"{_reason(error)}")
        failure.__cause__ = error
        return failure

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

    def _picture(self, av_frame) -> np.ndarray:
        """The frame as BGR, upright: phone video carries its rotation as a display matrix, which players apply
        and so does this. The frames fix the stream's size as seen (width and height swap at 90°; a camera may
        come back from a reconnect at another size)."""
        image = av_frame.to_ndarray(format="bgr24")
        turns = round((av_frame.rotation or 0) / 90) % 4
        if turns:
            image = np.ascontiguousarray(np.rot90(image, turns))
        if self.info is not None and image.shape[:2] != (self.info.height, self.info.width):
            self.info = dataclasses.replace(self.info, width=image.shape[1], height=image.shape[0])
        image.setflags(write=False)  # the camera's pixels from here on: whoever draws, draws on a copy
        return image

    def _run(self) -> None:
        raise NotImplementedError


class FileReader(Reader):
    """Every frame of a file (on disk or behind a URL), in order, with back-pressure. Media time starts at 0 with
    the first frame and never goes back, even in a file spliced from two or looped (see `clock`)."""

    def _run(self) -> None:
        stream = self._container.streams.video[0]
        clock = MediaClock(1.0 / float(self.info.fps), max_leap_s=None)
        clock.start_session()
        error: BaseException | None = None
        try:
            for av_frame in self._container.decode(stream):
                if self._stop.is_set():
                    return
                pts = clock.next(av_frame.time)
                frame = Frame(self.name, self.frames_decoded, pts, time.time(), self._picture(av_frame))
                if not self._put(frame):
                    return
                self.frames_decoded += 1
            if _ends_inside_a_packet(self.source, self._container):
                error = StreamerError(f"{self.name} ends inside a packet after frame {self.frames_decoded}: the file "
                                      "is cut short (the outputs hold what was read)")
        except Exception as exc:  # surfaced to the consumer, never swallowed
            error = exc
        self._put(_End(error))


class CameraReader(Reader):
    """A camera: decoded in real time, reconnected with backoff whenever it drops, freezes or ends.

    `resume`: a "down" status where an earlier run of this source stopped (its process died); it is reported
    first, and frame indices and media time continue from it across the gap.
    """

    live = True
    recovers = True

    def __init__(self, source: str, name: str, config: LiveConfig, container=None, info: StreamInfo | None = None,
                 first_error: str | None = None, resume: SourceStatus | None = None) -> None:
        super().__init__(source, name, FrameQueue(config.queue_size, drop_oldest=True), container, info)
        self.config = config
        self.state = "connecting"
        self.resume = resume
        self._first_error = first_error
        self._opened = time.monotonic()
        self._reconnect_at_start = False
        self._fault: str | None = None  # set by `reconnect`: the decoding session ends with this reason

    def reconnect(self, reason: str) -> None:
        """Drop the connection and reconnect with the usual backoff, reporting `reason` as the camera's "down":
        the consumer's way to recover from a fault further down the camera's path (thread-safe)."""
        self._fault = reason

    def start(self) -> None:
        if self._container is not None and time.monotonic() - self._opened > _STALE_S:
            # Opened to check the source while the model loaded: what the camera sent since is old news, and
            # would arrive as a burst. Start from a fresh connection, at the live edge.
            self._close()
            self._reconnect_at_start = True
        super().start()

    def _connect(self) -> None:
        self._container, info = _open(self.source, self.name, self.config, live=True)
        self.info = dataclasses.replace(info, total_frames=None)

    def _run(self) -> None:
        backoff = Backoff(self.config.backoff_initial_s, self.config.backoff_max_s)
        clock: MediaClock | None = None
        down: tuple[float, float | None] | None = None  # (wall time, monotonic time) it went down
        if self._reconnect_at_start:
            try:
                self._connect()
            except (av.error.FFmpegError, OSError, StreamerError) as exc:
                self._first_error = str(exc) if isinstance(exc, StreamerError) else _reason(exc)
        if self.resume is not None:
            clock = MediaClock(1.0 / float(self.info.fps), last=self.resume.pts) if self.info else None
            down = (self.resume.wall_time, None)  # before a restart: only its wall time is known
            self.frames_decoded = self.resume.frame_index + 1
            self.state = "down"
            self._put(self.resume)
        elif self._container is None:  # unreachable at start
            down = (time.time(), time.monotonic())
            self.state = "down"
            self._put(SourceStatus(self.name, "down", down[0], 0.0, 0, reason=self._first_error or "unreachable"))
        error: BaseException | None = None
        failed = 0  # attempts since frames last came, for `max_retries`
        try:
            while not self._stop.is_set():
                if self._container is None:
                    if self.config.max_retries is not None and failed >= self.config.max_retries:
                        error = StreamerError(f"{self.name}: gave up after {failed} reconnect attempts")
                        break
                    if self._stop.wait(backoff.next_wait()):
                        break
                    self.reconnects += 1
                    failed += 1
                    try:
                        self._connect()
                    except StreamerError as exc:
                        log.info("%s: cannot connect: %s", self.name, exc)
                        continue
                    except Exception as exc:  # noqa: BLE001 - a camera that answers nonsense is down, not the run
                        log.info("%s: cannot connect: %s", self.name, _reason(exc), exc_info=not _expected(exc))
                        continue
                if clock is None:
                    clock = MediaClock(1.0 / float(self.info.fps), last=self.resume.pts if self.resume else None)
                clock.start_session(0.0 if down is None else _down_for(down))
                self._fault = None
                began = time.monotonic()
                frames, reason = self._decode_session(clock, down)
                if self._stop.is_set():
                    break
                self._close()
                if frames:
                    failed = 0
                    if time.monotonic() - began >= self.config.backoff_max_s:
                        backoff.reset()  # up for a while: back off from the start; one that keeps failing waits longer
                if frames or down is None:  # it was up (or is not reported down yet): down once, with why
                    down = (time.time(), time.monotonic())
                    self.state = "down"
                    self._put(SourceStatus(self.name, "down", down[0], clock.last if clock.last is not None else 0.0,
                                           max(self.frames_decoded - 1, 0), reason=reason))
        except Exception as exc:  # a StreamerError (the recording cannot go on), or a bug outside any session
            error = exc
        self._close()
        if self.recorder is not None:
            try:
                self.recorder.close()
            except Exception as exc:  # noqa: BLE001 - ends the run as any reader failure does
                error = error or exc
        self._put(_End(error))

    def _decode_session(self, clock: MediaClock, down: tuple[float, float | None] | None) -> tuple[int, str]:
        """Decode until the stream ends or fails: (frames decoded, why it stopped)."""
        container = self._container
        stream = container.streams.video[0]
        realtime0 = container.start_time_realtime
        start_s = (container.start_time or 0) / 1e6
        frames = 0
        recorder = self.recorder
        if recorder is not None:
            recorder.session(stream)
        try:
            for av_frame in _flushed(container, stream, recorder):
                if self._stop.is_set():
                    return frames, "stopped"
                if self._fault is not None and frames:
                    return frames, self._fault
                now = time.time()
                raw = av_frame.time
                pts = clock.next(raw)
                camera_time = (realtime0 / 1e6 + (raw - start_s)
                               if realtime0 and raw is not None and math.isfinite(raw) else None)
                # The picture first: a frame that cannot be made ends the session before it is said to be up
                # (an "up" with no frame after it, then no "down", broke the camera's down/up pairs).
                frame = Frame(self.name, self.frames_decoded, pts, now, self._picture(av_frame), camera_time)
                if frames == 0:
                    self.state = "up"
                    if down is not None:
                        self._put(SourceStatus(self.name, "up", now, pts, self.frames_decoded, gap_s=_down_for(down)))
                self._put(frame)
                frames += 1
                self.frames_decoded += 1
                if recorder is not None:
                    recorder.frame(frame.index, pts)
        except (av.error.FFmpegError, OSError) as exc:  # the camera's failures mean "down", then reconnect
            return frames, _reason(exc)
        except StreamerError:
            raise
        except Exception as exc:  # noqa: BLE001 - anything else in this camera's stream is this camera's fault too
            reason = fault_reason(exc, self.source)
            log.warning("%s: %s", self.name, reason, exc_info=keeps_tracebacks())
            return frames, reason
        finally:
            if recorder is not None:
                recorder.cut()
        return frames, "stream ended"


def _down_for(down: tuple[float, float | None]) -> float:
    """Seconds a camera has been down, on the monotonic clock: the wall clock stepped by NTP during an outage (as a
    fresh machine's is in its first minutes) would make the gap negative or minutes too long. A camera down since
    before a restart has only its wall time."""
    wall, mono = down
    return time.monotonic() - mono if mono is not None else max(0.0, time.time() - wall)


def _flushed(container, stream, recorder=None):
    """Every frame of a camera's stream, with the frames still in the decoder when the stream breaks off (a
    camera that ends or drops has sent them; a decoder holds a few back for reordering). Each packet goes to the
    `recorder` too, once decoded."""
    try:
        for packet in container.demux(stream):
            frames = packet.decode()
            if recorder is not None:
                recorder.packet(packet)
            yield from frames
    except (av.error.FFmpegError, OSError):  # PyAV flushes the decoder at a normal end, not on an error
        try:
            yield from stream.codec_context.decode(None)
        except (av.error.FFmpegError, OSError, ValueError):
            pass
        raise


def _frames_at_most(path: str, n: int) -> int:
    """How many frames a (small, animated-image) file has, counting no further than `n`."""
    count = 0
    with av.open(path) as container:
        for _ in container.decode(video=0):
            count += 1
            if count >= n:
                break
    return count


def open_reader(source: str, name: str | None = None, live: bool | None = None, queue_size: int = 32,
                live_config: LiveConfig | None = None, resume: SourceStatus | None = None) -> Reader:
    """Open a source and return its reader, or raise one clear StreamerError.

    `live` says whether the source is a camera; None guesses (`sources.guess_live`), for a URL by opening it:
    media with an end is a file. A camera that is merely unreachable now is not an error: its reader keeps
    trying (and so does a URL that cannot say yet what it is). `resume`: see `CameraReader`.
    """
    name = name or display_name(source)
    config = live_config or LiveConfig()
    live = guess_live(source, live)
    if not is_url(source):
        path = Path(source)
        if not path.exists():
            raise StreamerError(f"input not found: {name}")
        if path.is_dir():
            raise StreamerError(f"input is a folder, not a video: {name}")
        kind = path.stat().st_mode
        if stat.S_ISFIFO(kind) or stat.S_ISSOCK(kind):  # a reader would wait on it forever
            raise StreamerError(f"input is a pipe or a socket, not a video file: {name} (save the stream to a file, "
                                "or serve it over a URL)")
        if not os.access(path, os.R_OK):
            raise StreamerError(f"input not readable: {name}")
    try:
        container, info = _open(source, name, config, live)
    except _PERMANENT as exc:
        raise StreamerError(f"cannot open {name}: {_reason(exc)}") from None
    except av.error.InvalidDataError as exc:
        if source.startswith(("http://", "https://")):  # the server answered, with something that is no media
            raise StreamerError(f"{name} is not a video: the server sent something else (an HTML page, an error "
                                f"text?): {_reason(exc)}") from None
        if live is False or not is_url(source):
            raise StreamerError(f"cannot open {name}: {_reason(exc)}") from None
        first_error = _reason(exc)  # an RTSP camera half-answering while it boots: keep trying
        return CameraReader(source, name, config, first_error=first_error, resume=resume)
    except (av.error.FFmpegError, OSError, StreamerError) as exc:
        if live is False:
            if isinstance(exc, StreamerError):
                raise
            raise StreamerError(f"cannot open {name}: {_reason(exc)}") from None
        # A camera that is off, booting or half-answering now (and a URL that cannot tell yet what it serves
        # is taken for one): the reader thread keeps trying.
        first_error = str(exc) if isinstance(exc, StreamerError) else _reason(exc)
        return CameraReader(source, name, config, first_error=first_error, resume=resume)
    if live is None:
        live = not _has_end(container)
    if live:
        return CameraReader(source, name, config, container, dataclasses.replace(info, total_frames=None),
                            resume=resume)
    return FileReader(source, name, FrameQueue(queue_size, drop_oldest=False), container, info)


def _open(source: str, name: str, config: LiveConfig, live: bool | None):
    """(container, info) of a source; URLs with the open and read timeouts, and a file's download resumable."""
    if is_url(source):
        options = {"timeout": str(int(config.read_timeout_s / 2 * 1e6))}  # FFmpeg gives up after about twice this
        if source.startswith(("rtsp://", "rtsps://")):
            options["rtsp_transport"] = config.rtsp_transport
        if source.startswith(("http://", "https://")) and live is not True:
            # A download that breaks off is asked again from the byte it stopped at (a Range request), not from
            # the start; never for a resource that cannot seek, where it would repeat what was read.
            options.update(reconnect="1", reconnect_on_network_error="1",
                           reconnect_delay_max=str(int(config.backoff_max_s)))
        # PyAV's read timeout interrupts any one read that takes longer, data flowing or not: right for a camera,
        # wrong for a file downloading slowly (a packet over a slow link takes seconds). A download has FFmpeg's
        # own socket timeout (`timeout`: no byte for that long), then its reconnect from where it stopped.
        steady = source.startswith(("http://", "https://")) and live is not True
        container = av.open(source, mode="r", options=options,
                            timeout=(config.open_timeout_s, None if steady else config.read_timeout_s / 2))
    else:
        container = av.open(source, mode="r")
    if not container.streams.video:
        container.close()
        raise StreamerError(f"no video stream in {name}")
    if container.format.name in ("image2", "ico") or container.format.name.endswith("_pipe") or (
            container.format.name in ("gif", "webp", "apng") and not is_url(source) and _frames_at_most(source, 2) < 2):
        container.close()
        raise StreamerError(f"{name} is a still image, not a video")
    stream = container.streams.video[0]
    context = stream.codec_context  # None where the probe got no codec (a stream trickling in too slowly)
    if context is not None:
        stream.thread_type = "AUTO"
    width, height = (context.width, context.height) if context is not None else (0, 0)
    if not width or not height:
        container.close()
        slow = ", or too little of it came in time (live.open_timeout_s)" if is_url(source) else ""
        raise StreamerError(f"cannot read the video size of {name}: not a playable video{slow}")
    fps = stream.average_rate or stream.guessed_rate or Fraction(25)
    info = StreamInfo(source=name, width=width, height=height, fps=Fraction(fps),
                      total_frames=None if live else (stream.frames or None))
    return container, info


def _ends_inside_a_packet(source: str, container) -> bool:
    """An MPEG-TS file cut short plays to the cut without a word from FFmpeg (it has no index to miss), but a cut
    at any byte but a packet's end leaves a file whose size is no whole number of packets (188 bytes; 192 for
    M2TS, 204 with DVB's error correction)."""
    if is_url(source) or container.format.name != "mpegts":
        return False
    size = Path(source).stat().st_size
    return all(size % packet for packet in (188, 192, 204))


def _has_end(container) -> bool:
    """Media with an end: FFmpeg knows its duration (a file behind a URL, an HLS playlist with #EXT-X-ENDLIST).
    Live HLS, MJPEG or MPEG-TS streamed over HTTP have none."""
    return container.duration is not None and container.duration > 0


def fault_reason(exc: BaseException, url: str = "") -> str:
    """A fault that is no camera failure as one line for `source_down`, no secret of the camera's `url` in it."""
    text = " ".join(scrub(str(exc), [url] if url else []).split())[:200]
    return f"internal error: {type(exc).__name__}" + (f": {text}" if text else "")


def keeps_tracebacks() -> bool:
    """Whether a fault's traceback goes to the log: only where the run keeps one (`--debug`); the console gets
    the fault's one line, never a traceback."""
    return bool(logging.getLogger().handlers)


def _expected(exc: BaseException) -> bool:
    return isinstance(exc, (av.error.FFmpegError, OSError))


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
