"""Recordings: a camera's stream as it arrives, copied packet by packet into segments on disk.

Nothing is decoded or encoded again (PyAV remux), so recording costs almost nothing beside decoding. Each segment
holds about `record.segment_s` of video, starts on a keyframe (it plays on its own) and is a fragmented MP4 (a
killed run leaves the open one playable up to about a second before). A segment is indexed in the event store
(source, wall-clock and media time, frames, bytes) the moment it closes, and retention (`retention`) runs then;
a segment left unindexed by a crash is indexed when the source records again.

Segments lie in `recordings/<source>/<YYYY-MM-DD>/<HHMMSS>-<run>-<n>.mp4` beside the store, named so that no
other run can take a file.
"""

from __future__ import annotations

import datetime as _dt
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

import av

from streamer.config import RecordConfig
from streamer.errors import StreamerError
from streamer.recording.retention import Retention
from streamer.records import Segment
from streamer.sources import safe_name

log = logging.getLogger("streamer.recording.recorder")
_ENFORCE_S = 30.0  # retention at most this often (the storage guard after every segment)

# A fragment a second, written at once: what a crash or a full disk leaves plays up to about then.
_FRAGMENTED = {"movflags": "frag_keyframe+empty_moov+default_base_moof", "frag_duration": "1000000",
               "flush_packets": "1"}


class _Open:
    """The segment being written."""

    def __init__(self, path: Path, in_stream, first_pts: int, wall: float) -> None:
        self.path = path
        self.container = av.open(str(path), mode="w", format="mp4", options=_FRAGMENTED)
        self.stream = self.container.add_stream_from_template(in_stream)
        self.time_base = in_stream.time_base
        self.first_pts = first_pts  # in the input's time base: the segment starts at 0
        self.last_pts = first_pts
        self.last_dts: int | None = None
        self.start_wall = wall
        self.first_frame: tuple[int, float] | None = None  # (index, media pts) of the first frame decoded
        self.last_frame: tuple[int, float] | None = None

    def seconds(self, pts: int) -> float:
        return float((pts - self.first_pts) * self.time_base)

    def follows(self, packet) -> bool:
        """Whether `packet` can go on this segment: its decoding time after the last one's."""
        dts = packet.dts if packet.dts is not None else packet.pts
        return self.last_dts is None or dts > self.last_dts

    def write(self, packet) -> None:
        pts = packet.pts
        dts = packet.dts if packet.dts is not None else pts
        self.last_pts = max(self.last_pts, pts)
        self.last_dts = dts
        packet.pts, packet.dts = pts - self.first_pts, dts - self.first_pts
        packet.stream = self.stream
        self.container.mux(packet)


class Recorder:
    """One camera's recording. The reader hands it every packet of the video stream (`packet`, after decoding
    it) and the frames decoded (`frame`); `session` starts each connection, `cut` ends one, `close` the last.
    `wanted`: whether recording is switched on now (`switches`); switched off, the open segment ends at once and
    the next keyframe after it is switched on again starts a new one."""

    def __init__(self, store, source: str, config: RecordConfig, run_id: str = "",
                 wanted: Callable[[], bool] = lambda: True) -> None:
        self.store = store.acquire()
        self.wanted = wanted
        self.source = source
        self.config = config
        self.run_id = run_id
        self.base = Path(store.path).parent
        self.folder = self.base / "recordings" / safe_name(source)
        self.retention = Retention(store, config)
        self.segments = 0  # closed and indexed by this recorder
        self.errors = 0  # segments that could not be written (a full disk): recording goes on with the next one
        self._in_stream = None
        self._open: _Open | None = None
        self._count = 0
        self._spans: deque[tuple[int, Path]] = deque(maxlen=64)  # (first frame, file) of the latest segments
        self._lock = threading.Lock()
        self._enforced = time.monotonic()
        self.recover()

    def recover(self) -> None:
        """Index the segments on disk that the index lacks (a run killed with one open), then apply retention."""
        known = set(self.store.segment_paths(self.source))
        for path in sorted(self.folder.glob("*/*.mp4")):
            rel = path.relative_to(self.base).as_posix()
            if rel not in known:
                segment = _probe(path, self.source, rel)
                if segment is not None:
                    self.store.add_segment(segment)
        self.retention.enforce()

    def session(self, in_stream) -> None:
        """A new connection to the camera: its packets go into a new segment from its first keyframe."""
        self.cut()
        self._in_stream = in_stream

    def packet(self, packet, now: float | None = None) -> None:
        """One packet of the video stream, already decoded (muxing takes the packet's data)."""
        if not self._in_stream or packet.pts is None or packet.size == 0:
            return
        if not self.wanted():
            self.cut()
            return
        now = time.time() if now is None else now
        segment = self._open
        if segment is not None and not segment.follows(packet):
            # The stream's clock went back (a looped or spliced stream) or stood still: an MP4 cannot hold that,
            # so the segment ends here, and the next one starts on this packet if it is a keyframe (a loop's is).
            self.cut()
            segment = None
        if packet.is_keyframe and (segment is None or segment.seconds(packet.pts) >= self.config.segment_s):
            self.cut()
            segment = self._start(packet, now)
        if segment is None:
            return  # waiting for a keyframe to start on
        try:
            segment.write(packet)
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            self._failed(exc)

    def frame(self, index: int, pts: float) -> None:
        """A frame decoded from the packets written to the open segment."""
        if self._open is not None:
            if self._open.first_frame is None:
                self._open.first_frame = (index, pts)
                with self._lock:
                    self._spans.append((index, self._open.path))
            self._open.last_frame = (index, pts)

    def segment_of(self, index: int) -> Path | None:
        """The segment that holds frame `index` (a frame of the last minute or so), or None (not recorded:
        before the first keyframe, or while a segment could not be written)."""
        with self._lock:
            spans = list(self._spans)
        for first, path in reversed(spans):
            if first <= index:
                return path
        return None

    def cut(self) -> None:
        """Close the open segment and index it (then apply retention); nothing to do without one."""
        segment, self._open = self._open, None
        if segment is None:
            return
        try:
            segment.container.close()
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            log.warning("%s: the segment %s could not be finished: %s", self.source, segment.path, exc)
            self.errors += 1
        duration = segment.seconds(segment.last_pts) + self._frame_s()
        first, last = segment.first_frame, segment.last_frame
        try:
            size = segment.path.stat().st_size
        except OSError:
            size = 0
        if size == 0:
            segment.path.unlink(missing_ok=True)
            return
        if segment.last_frame is not None:
            with self._lock:  # frames after the last one recorded belong to no segment
                self._spans.append((segment.last_frame[0] + 1, None))
        try:
            self.store.add_segment(Segment(
                self.source, segment.path.relative_to(self.base).as_posix(), segment.start_wall,
                segment.start_wall + duration, first and first[1], last and last[1] + self._frame_s(),
                first and first[0], last and last[0], size, run=self.run_id or None))
        except StreamerError as exc:  # the store cannot be written now: the next run indexes the file (`recover`)
            log.warning("%s: %s", self.source, exc)
            self.errors += 1
            return
        self.segments += 1
        if time.monotonic() - self._enforced >= _ENFORCE_S:
            self._enforced = time.monotonic()
            self.retention.enforce()
        else:
            self.retention.guard()

    def close(self) -> None:
        """Close the open segment and let the store go; once."""
        if self._in_stream is False:
            return
        try:
            self.cut()
        finally:
            self._in_stream = False
            self.store.close()

    def _frame_s(self) -> float:
        rate = self._in_stream.average_rate if self._in_stream else None
        return 1.0 / float(rate) if rate else 0.0

    def _start(self, packet, now: float) -> _Open | None:
        self.retention.guard()  # room first: recording never stops on a full disk
        stamp = _dt.datetime.fromtimestamp(now)
        folder = self.folder / stamp.strftime("%Y-%m-%d")
        self._count += 1
        path = folder / f"{stamp.strftime('%H%M%S')}-{self.run_id}{self._count:05d}.mp4"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            if path.exists():  # never over a file that is there
                raise FileExistsError(f"{path} exists")
            self._open = _Open(path, self._in_stream, packet.pts, now)
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            self._failed(exc)
        return self._open

    def _failed(self, exc: Exception) -> None:
        """A segment that cannot be written (a full disk, a folder gone) is closed and indexed as far as it got
        (nothing is left on disk that retention cannot see); the next keyframe starts another, after the storage
        guard has made room."""
        self.errors += 1
        log.warning("%s: recording: %s", self.source, exc)
        self.cut()


def _probe(path: Path, source: str, rel: str) -> Segment | None:
    """A segment found on disk without an index row (its run was killed): its length read from the file, its
    start from when it was last written."""
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            last = None
            for packet in container.demux(stream):
                if packet.pts is not None:
                    last = packet.pts if last is None else max(last, packet.pts)
            if last is None:
                raise ValueError("no video")
            duration = float(last * stream.time_base) + (1.0 / float(stream.average_rate) if stream.average_rate else 0)
    except (av.error.FFmpegError, OSError, ValueError, IndexError):
        log.warning("%s: %s holds no playable video; left as it is", source, path)
        return None
    end = path.stat().st_mtime
    return Segment(source, rel, end - duration, end, None, None, None, None, path.stat().st_size)
