"""Clips: a stretch of a camera's recording cut from its segments, packets copied (seconds, not minutes).

`streamer clip STORE --event ID OUT.mp4` cuts from `record.pre_s` before the event's track appeared (or the event,
without a track) to `record.post_s` after it left; `--source S --from TIME --to TIME` cuts any stretch. A clip
starts on the keyframe at or before the start asked for, so it plays from its first frame and holds at least
what was asked. It is an MP4 with its index first (`faststart`): a browser plays and seeks it at once.
"""

from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass
from pathlib import Path

import av

from streamer.errors import StreamerError, cannot_write
from streamer.store import connect, recordings

_NOT_SEEN = ("source_down", "source_up", "worker_restarted", "worker_lost")


@dataclass(frozen=True)
class Cut:
    """What a clip holds: its source, the wall-clock time of its first frame, its length and frames."""

    source: str
    start: float
    seconds: float
    frames: int


def event_range(store: Path, event_id: int, pre_s: float, post_s: float) -> tuple[str, float, float]:
    """(source, from, to) around an event: its track from appearing to leaving, or the event alone."""
    conn = connect(store, create=False)
    try:
        row = conn.execute("SELECT source, wall_epoch, track_id FROM events WHERE id = ?", (event_id,)).fetchone()
        if row is None:
            last = conn.execute("SELECT max(id) FROM events").fetchone()[0]
            known = f"ids 1 to {last}" if last else "no events"
            raise StreamerError(f"{store} has no event {event_id} (it holds {known}; `streamer events` lists them)")
        source, when, track = row
        start = end = when
        if track is not None:
            start, end = conn.execute("SELECT min(wall_epoch), max(wall_epoch) FROM events WHERE source = ? AND "
                                      "track_id = ?", (source, track)).fetchone()
    finally:
        conn.close()
    return source, start - pre_s, end + post_s


def cut(store: Path, source: str, start: float, end: float, out: Path) -> Cut:
    """The recording of `source` from `start` to `end` (epoch seconds) into a new file `out`."""
    out = Path(out)
    if out.exists() or out.is_symlink():
        raise StreamerError(f"{out} exists: name a new file for the clip")
    if end <= start:
        raise StreamerError("the clip ends before it starts: --to must be after --from")
    segments = recordings(store, source, start, end)
    if not segments:
        raise StreamerError(f"no footage of {source} from {_local(start)} to {_local(end)}; {_held(store, source)}")
    base = Path(store).parent
    part = out.with_name(f".{out.name}.part")
    frames, first_wall, seconds = 0, None, 0.0
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with av.open(str(part), mode="w", format="mp4", options={"movflags": "+faststart"}) as output:
            stream, offset = None, 0.0  # clip seconds at the start of the segment being copied
            for segment in segments:
                path = base / segment.path
                if not path.is_file():
                    continue  # deleted by retention since the index was read
                stream, offset, begun, copied = _copy(path, output, stream, segment.start_wall, start, end, offset,
                                                      first_wall is None)
                if begun is not None and first_wall is None:
                    first_wall = begun
                frames += copied
            seconds = offset
    except OSError as exc:
        part.unlink(missing_ok=True)
        raise cannot_write("clip", out, exc) from None
    except av.error.FFmpegError as exc:
        part.unlink(missing_ok=True)
        raise StreamerError(f"cannot cut the clip from the recordings of {source}: {exc}") from None
    if frames == 0:
        part.unlink(missing_ok=True)
        raise StreamerError(f"no footage of {source} from {_local(start)} to {_local(end)}; {_held(store, source)}")
    if out.exists():
        part.unlink(missing_ok=True)
        raise StreamerError(f"{out} exists: name a new file for the clip")
    os.replace(part, out)
    return Cut(source, first_wall, seconds, frames)


def _copy(path: Path, output, stream, segment_wall: float, start: float, end: float, offset: float,
          first: bool):
    """Copy the packets of one segment inside [start, end] (from the keyframe before `start` in the first one)
    to `output`, at `offset` seconds on: (the output stream, the offset after the last packet, the wall time of
    the first packet copied or None, the packets copied)."""
    last = offset
    with av.open(str(path)) as source:
        in_stream = source.streams.video[0]
        tb = in_stream.time_base
        rate = in_stream.average_rate
        step = 1.0 / float(rate) if rate else 0.04
        packets = [p for p in source.demux(in_stream) if p.pts is not None and p.size]
        times = [float(p.pts * tb) for p in packets]
        lo, hi = start - segment_wall, end - segment_wall
        begin = 0
        if first:  # the clip opens on the keyframe at or before its start
            keys = [i for i, p in enumerate(packets) if p.is_keyframe and times[i] <= max(lo, 0.0)]
            begin = keys[-1] if keys else next((i for i, p in enumerate(packets) if p.is_keyframe), len(packets))
        chosen = [i for i in range(begin, len(packets)) if times[i] <= hi]
        if not chosen:
            return stream, offset, None, 0
        if stream is None:
            stream = output.add_stream_from_template(in_stream)
        zero = times[chosen[0]]
        begun = segment_wall + zero
        for i in chosen:
            packet = packets[i]
            shift = round((offset - zero) / float(tb))
            packet.pts += shift
            packet.dts = (packet.dts if packet.dts is not None else packet.pts - shift) + shift
            packet.stream = stream
            output.mux(packet)
            last = max(last, offset + times[i] - zero + step)
    return stream, last, begun, len(chosen)


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
