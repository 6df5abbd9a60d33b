"""Clips: a stretch of footage cut from a camera's segments (or a file's original), packets copied (seconds, not
minutes).

`streamer clip STORE OUT.mp4 --event ID` cuts from `record.pre_s` before the event's track appeared (or the
event, without a track) to `record.post_s` after it left; `--source S --from TIME --to TIME` cuts any stretch.
A clip starts on the keyframe at or before the start asked for, so it plays from its first frame and holds at
least what was asked; it is an MP4 with its index first (`faststart`), so a browser plays and seeks it at once.
`--annotate` draws the tracks on it: that stretch alone is decoded, drawn and encoded again.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import supervision as sv

from streamer.errors import StreamerError, cannot_write
from streamer.outputs.sinks import tracks_beside, tracks_rows
from streamer.outputs.store import original, reading, recordings
from streamer.records import TEXT

log = logging.getLogger("streamer.recording.clip")

@dataclass(frozen=True)
class Cut:
    """What a clip holds: its source, when its first frame was (on the span's clock), its length and frames, and
    where each frame came from (`shown`: frame index and tracks file, in the clip's order)."""

    source: str
    start: float
    seconds: float
    frames: int
    shown: tuple = ()

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds else 25.0


@dataclass(frozen=True)
class Span:
    """A stretch of a source to cut: epoch seconds of a camera's recordings, or, with `run`, media seconds of the
    original file a file source's run indexed as its recording."""

    source: str
    start: float
    end: float
    run: str | None = None


def event_range(store: Path, event_id: int, pre_s: float, post_s: float) -> Span:
    """The stretch around an event: its track in its run from appearing to leaving, or the event alone."""
    with reading(store) as (conn, tables):
        run_column = "run" if "run" in tables["events"] else "NULL"
        row = None if not 0 < event_id < 2**63 else conn.execute(  # no SQLite id is outside that
            f"SELECT source, wall_epoch, pts, track_id, {run_column} FROM events WHERE id = ?", (event_id,)).fetchone()
        if row is None:
            last = conn.execute("SELECT max(id) FROM events").fetchone()[0]
            known = f"ids 1 to {last}" if last else "no events"
            raise StreamerError(f"{store} has no event {event_id} (it holds {known}; `streamer events` lists them)")
        source, when, pts, track, run = row
        file = original(store, run) is not None
        start = end = pts if file else when
        if track is not None:
            column = "pts" if file else "wall_epoch"
            start, end = conn.execute(f"SELECT min({column}), max({column}) FROM events WHERE source = ? AND "
                                      f"track_id = ? AND {run_column} IS ?", (source, track, run)).fetchone()
    return Span(source, start - pre_s, end + post_s, run if file else None)


def cut(store: Path, span: Span, out: Path, annotate: bool = False) -> Cut:
    """The footage of `span` into a new file `out`; with `annotate`, the tracks drawn on it (decoded, drawn and
    encoded again: that stretch only)."""
    out = Path(out)
    if out.exists() or out.is_symlink():
        raise StreamerError(f"{out} exists: name a new file for the clip")
    if span.end <= span.start:
        raise StreamerError("the clip ends before it starts: --to must be after --from")
    if span.run is not None:
        file = original(store, span.run)
        segments, zero = [file], [0.0]
    else:
        segments = recordings(store, span.source, span.start, span.end)
        zero = [s.start_wall for s in segments]
    if not segments:
        raise _no_footage(store, span)
    base = Path(store).parent
    part = out.with_name(f".{out.name}.part")
    frames, first_at, offset, shown = 0, None, 0.0, []
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with av.open(str(part), mode="w", format="mp4", options={"movflags": "+faststart"}) as output:
            stream = None
            for segment, at in zip(segments, zero):
                path = base / segment.path
                if not path.is_file():
                    continue  # deleted by retention since the index was read, or a file moved away
                stream, offset, begun, indices = _copy(path, output, stream, at, span.start, span.end, offset,
                                                       first_at is None)
                if begun is not None and first_at is None:
                    first_at = begun
                frames += len(indices)
                tracks = Path(segment.tracks) if segment.tracks else tracks_beside(path)
                shown += [((segment.first_frame or 0) + i, tracks) for i in indices]
        if annotate and frames:
            _annotate(part, shown)
    except OSError as exc:
        part.unlink(missing_ok=True)
        raise cannot_write("clip", out, exc) from None
    except av.error.FFmpegError as exc:
        part.unlink(missing_ok=True)
        raise StreamerError(f"cannot cut the clip from the recordings of {span.source}: {exc}") from None
    if frames == 0:
        part.unlink(missing_ok=True)
        raise _no_footage(store, span)
    if out.exists():
        part.unlink(missing_ok=True)
        raise StreamerError(f"{out} exists: name a new file for the clip")
    os.replace(part, out)
    return Cut(span.source, first_at, offset, frames, tuple(shown))


def _copy(path: Path, output, stream, segment_at: float, start: float, end: float, offset: float,
          first: bool):
    """Copy the packets of one segment (its first frame at `segment_at` on the span's clock) inside [start, end]
    (from the keyframe before `start` in the first one) to `output`, at `offset` seconds on: (the output stream,
    the offset after the last packet, when the first packet copied was on the span's clock or None, and for each
    frame copied, in the order they show, its place among the segment's frames). A long file is sought into,
    not read from its start."""
    try:
        source = av.open(str(path))
        in_stream = source.streams.video[0]
    except (av.error.FFmpegError, IndexError) as exc:  # replaced or damaged by hand: the rest of the span still plays
        log.warning("the recording %s cannot be read (%s): left out of the clip", path, exc)
        return stream, offset, None, []
    with source:
        tb = in_stream.time_base
        rate = in_stream.average_rate
        step = 1.0 / float(rate) if rate else 0.04
        t0 = float(in_stream.start_time * tb) if in_stream.start_time is not None else 0.0  # its first frame
        lo, hi = start - segment_at, end - segment_at
        if first and lo > 10.0:
            source.seek(int((t0 + lo) / tb), stream=in_stream, backward=True, any_frame=False)
        packets = []
        try:
            for packet in source.demux(in_stream):
                if packet.pts is None or not packet.size:
                    continue
                at = float(packet.pts * tb) - t0
                if at > hi + 2.0:  # past the end, with room for frames shown out of order
                    break
                if not packets and not packet.is_keyframe:
                    continue  # a clip starts on a keyframe
                if first and packet.is_keyframe and at <= max(lo, 0.0):
                    packets = []  # a later keyframe still at or before the start: begin there
                packets.append((at, packet))
        except av.error.FFmpegError as exc:  # cut short (by hand, or by a crash): what came before the cut goes in
            log.warning("the recording %s breaks off (%s): the clip has it up to there", path, exc)
        chosen = _whole([(at, packet) for at, packet in packets if at <= hi], in_stream)
        if not chosen:
            return stream, offset, None, []
        if stream is None:
            stream = output.add_stream_from_template(in_stream)
        zero = min(at for at, _ in chosen)
        shift = round((offset - zero) / float(tb))
        last = offset
        for at, packet in chosen:
            packet.pts += shift
            packet.dts = (packet.dts if packet.dts is not None else packet.pts - shift) + shift
            packet.stream = stream
            output.mux(packet)
            last = max(last, offset + at - zero + step)
    base = round(zero / step)  # the first frame's place in the segment (a constant rate assumed after a seek)
    return stream, last, segment_at + zero, [base + n for n in range(len(chosen))]


def _whole(chosen: list, in_stream) -> list:
    """`chosen` without a broken tail: a segment cut short (by hand, by a crash) ends in a packet whose data is
    cut, which no player decodes. Its last keyframe's packets on are decoded (a second or two of frames) and
    what follows the first that fails is left out."""
    last_key = max((i for i, (_, packet) in enumerate(chosen) if packet.is_keyframe), default=None)
    if last_key is None:
        return chosen
    decoder = av.CodecContext.create(in_stream.codec_context.name, "r")
    decoder.extradata = in_stream.codec_context.extradata
    for i in range(last_key, len(chosen)):
        try:
            decoder.decode(chosen[i][1])
        except (av.error.FFmpegError, ValueError):
            log.warning("a recording breaks off inside a frame: the clip ends before it")
            return chosen[:i]
    return chosen


def _annotate(path: Path, shown: list[tuple[int, Path]]) -> None:
    """Draw on every frame of the clip at `path` the boxes its tracks file has for the frame it came from
    (`shown`: (frame index, tracks file) in the clip's order), and encode it again in its place."""
    from streamer.outputs.annotate import Annotator
    from streamer.outputs.sinks import VideoSink
    from streamer.records import StreamInfo

    boxes = boxes_of(shown)
    annotator = Annotator()
    drawn = path.with_name(path.name + ".drawn.mp4")
    with av.open(str(path)) as source:
        stream = source.streams.video[0]
        info = StreamInfo("clip", stream.codec_context.width, stream.codec_context.height,
                          stream.average_rate or Fraction(25), None)
        sink = VideoSink(drawn, info)
        try:
            for n, frame in enumerate(source.decode(stream)):
                image = frame.to_ndarray(format="bgr24")
                rows = boxes[n] if n < len(boxes) else []
                if rows:
                    image = annotator.draw(image, [annotator.layer(_detections(rows))])
                sink.write(image, float(frame.time or 0.0))
        finally:
            sink.close()
    os.replace(drawn, path)


def boxes_of(shown) -> list[list[dict]]:
    """The tracks' boxes on each frame of a clip (`Cut.shown`), read from their tracks files."""
    found: dict[tuple[Path, int], list[dict]] = {}
    for tracks in {t for _, t in shown}:
        if tracks.exists():
            for _, row in tracks_rows(tracks):
                found.setdefault((tracks, row["frame_index"]), []).append(row)
    return [found.get((tracks, index), []) for index, tracks in shown]


def _detections(rows: list[dict]) -> sv.Detections:
    return sv.Detections(
        xyxy=np.array([r["bbox"] for r in rows], dtype=np.float32),
        confidence=np.array([r["confidence"] for r in rows], dtype=np.float32),
        tracker_id=np.array([r["track_id"] for r in rows], dtype=int),
        data={"class_name": np.array([r["label"] for r in rows], dtype=object),
              TEXT: np.array([r["text"] for r in rows], dtype=object)})


def _no_footage(store: Path, span: Span) -> StreamerError:
    if span.run is not None:
        return StreamerError(f"no footage of {span.source} from {max(span.start, 0):.1f} s to {span.end:.1f} s of "
                             "its file")
    return StreamerError(f"no footage of {span.source} from {_local(span.start)} to {_local(span.end)}; "
                         f"{_held(store, span.source)}")


def _held(store: Path, source: str) -> str:
    """What footage the store has, for the one line that says a range has none."""
    held = recordings(store, source)
    if not held:
        others = sorted({s.source for s in recordings(store)})
        return (f"the store holds recordings of {', '.join(others)}" if others else
                "the store holds no recordings (cameras are recorded unless record.enabled is false)")
    return f"its recordings run from {_local(held[0].start_wall)} to {_local(held[-1].end_wall)}"


def _local(epoch: float) -> str:
    return _dt.datetime.fromtimestamp(epoch).astimezone().isoformat(timespec="seconds")
