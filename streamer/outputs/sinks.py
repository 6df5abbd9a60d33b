"""The outputs a run writes to files (`outputs.Output`): the JSONL event log, the tracks file and the annotated
H.264 video (`VideoSink` is its encoder).

They are opened only once the source and the model are known to work, so a bad run never truncates the outputs
of an earlier one, and closed (the MP4 finalised, the files flushed) on every way out of a run.
"""

from __future__ import annotations

import datetime as _dt
import gzip
import json
from fractions import Fraction
from pathlib import Path
from collections.abc import Callable, Iterator

import av
import cv2
import numpy as np

from streamer.errors import StreamerError, cannot_write
from streamer.outputs.protocol import Output, Shown
from streamer.records import KIND, TEXT, FrameTracks, Logged, StreamInfo


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


class AnnotatedVideo(Output):
    """The annotated video: every frame with its tracks drawn, encoded once the first frame tells its size."""

    replays = True

    def __init__(self, path: Path, stream: Callable[[], StreamInfo], codec: str = "libx264", preset: str = "veryfast",
                 crf: int = 23) -> None:
        self.path, self._stream, self._settings = Path(path), stream, (codec, preset, crf)
        self._sink: VideoSink | None = None

    def frame(self, shown: Shown) -> None:
        if self._sink is None:
            self._sink = VideoSink(self.path, self._stream(), *self._settings)
        self._sink.write(shown.annotated, shown.frame.pts)

    def close(self) -> None:
        if self._sink is not None:
            self._sink.close()


class JsonlFile(Output):
    """A JSON Lines file, flushed every `flush_every` writes so a killed run keeps what it wrote; `append`
    continues the file of a run whose process died."""

    what = "JSONL file"
    replays = True
    flush_every = 1

    def __init__(self, path: Path, append: bool = False) -> None:
        self.path = Path(path)
        self._unflushed = 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a" if append else "w", encoding="utf-8")
        except OSError as exc:
            raise cannot_write(self.what, self.path, exc) from None

    def _write(self, lines: str) -> None:
        try:
            self._file.write(lines)
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


class EventLog(JsonlFile):
    """The event log: one event a line, flushed per event. With `keep_days` (a camera that runs for months) it
    rotates at local midnight: the day's log is renamed `<stem>.<YYYY-MM-DD><suffix>` beside it and a new one
    begins; rotated logs older than `keep_days` are deleted (the store keeps every event)."""

    what = "event log"

    def __init__(self, path: Path, append: bool = False, keep_days: float | None = None) -> None:
        super().__init__(path, append)
        self.keep_days = keep_days
        self._day: _dt.date | None = None

    def event(self, logged: Logged) -> None:
        if self.keep_days is not None:
            day = _dt.datetime.fromtimestamp(logged.event.wall_time).date()
            if self._day is not None and day != self._day:
                self._rotate(self._day, day)
            self._day = day
        self._write(logged.line + "\n")

    def _rotate(self, ended: _dt.date, today: _dt.date) -> None:
        self.close()
        stem, suffix = self.path.stem, self.path.suffix
        target, n = self.path.with_name(f"{stem}.{ended.isoformat()}{suffix}"), 1
        while target.exists():
            n += 1
            target = self.path.with_name(f"{stem}.{ended.isoformat()}-{n}{suffix}")
        try:
            self.path.rename(target)
            self._file = self.path.open("w", encoding="utf-8")
        except OSError as exc:
            raise cannot_write(self.what, self.path, exc) from None
        oldest = today - _dt.timedelta(days=self.keep_days)
        for old in self.path.parent.glob(f"{stem}.????-??-??*{suffix}"):
            try:
                if _dt.date.fromisoformat(old.name[len(stem) + 1:len(stem) + 11]) < oldest:
                    old.unlink()
            except (ValueError, OSError):
                continue


class TracksFile(JsonlFile):
    """The tracks file: a line for every frame, in frame order, with every box on it (`tracks`, empty on a frame
    without any, so a reader tells an empty frame from a missing one). Each box says its `task` and how it was
    made (`kind`): `detected` on a keyframe, `interpolated` between keyframes, `predicted` ahead of the last one.
    Unconfirmed boxes (drawn without an id) have `track_id` -1. `tracks_rows` reads it back a box a row."""

    what = "tracks file"
    flush_every = 25  # frames: a killed run keeps its tracks up to about a second before

    def frame(self, shown: Shown) -> None:
        self._write(_line(shown))


class SegmentTracks(Output):
    """A recorded camera's tracks file: the lines of a `TracksFile`, beside each recorded segment
    (`<segment>.tracks.jsonl.gz`), so they are pruned with its footage and a player of the segment draws from them.
    Frames that no segment holds (before the first keyframe, while recording failed) have no footage to go with."""

    replays = True
    flush_every = TracksFile.flush_every

    def __init__(self, recorder) -> None:
        self.recorder = recorder
        self._path: Path | None = None
        self._file = None
        self._unflushed = 0

    def frame(self, shown: Shown) -> None:
        segment = self.recorder.segment_of(shown.frame.index)
        if segment is None:
            return
        try:
            if segment != self._path:
                self._finish()
                self._path = segment
                self._file = gzip.open(tracks_beside(segment), "at", encoding="utf-8")
            self._file.write(_line(shown))
            self._unflushed += 1
            if self._unflushed >= self.flush_every:
                self._file.flush()
                self._unflushed = 0
        except OSError as exc:
            raise cannot_write("tracks file", tracks_beside(segment), exc) from None

    def _finish(self) -> None:
        if self._file is not None:
            file, self._file = self._file, None
            try:
                file.close()
            except OSError as exc:
                raise cannot_write("tracks file", tracks_beside(self._path), exc) from None

    def close(self) -> None:
        self._finish()


def tracks_beside(segment: Path) -> Path:
    """Where a recorded segment's tracks are."""
    return segment.with_name(segment.name + ".tracks.jsonl.gz")


def _line(shown: Shown) -> str:
    frame = shown.frame
    line = {"source": frame.source, "frame_index": frame.index, "pts": round(frame.pts, 6),
            "tracks": [box for frame_tracks in shown.tracks for box in _boxes(frame_tracks)]}
    return json.dumps(line, ensure_ascii=False) + "\n"


def _boxes(frame_tracks: FrameTracks) -> list[dict]:
    det = frame_tracks.detections
    return [{"task": frame_tracks.task, "track_id": int(det.tracker_id[i]), "label": str(det.data["class_name"][i]),
             "bbox": [round(float(v), 2) for v in det.xyxy[i]], "confidence": round(float(det.confidence[i]), 4),
             "text": str(det.data[TEXT][i]), "kind": str(det.data[KIND][i])} for i in range(len(det))]


def tracks_rows(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, box) for every box of a tracks file, each box with its frame's `source`, `frame_index` and
    `pts`; a line that is not a frame of a tracks file is one error naming it."""
    path = Path(path)
    try:
        with (gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else path.open(encoding="utf-8")) as f:
            for number, line in enumerate(f, 1):
                try:
                    record = json.loads(line)
                    head = {key: record[key] for key in ("source", "frame_index", "pts")}
                    boxes = record["tracks"]
                except (ValueError, KeyError, TypeError):
                    raise StreamerError(f"{path}:{number} is not a line of a tracks file") from None
                for box in boxes:
                    yield number, {**head, **box}
    except EOFError:  # a compressed file a killed run left open: what it flushed is all there is
        return
    except (OSError, UnicodeDecodeError) as exc:
        raise StreamerError(f"cannot read the tracks file {path}: {exc}") from None
