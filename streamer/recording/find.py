"""Find: a phrase asked of the footage after the fact (`streamer find STORE "person with a ladder"`).

Florence-2 grounds the phrase (`<CAPTION_TO_PHRASE_GROUNDING>`) on every kept keyframe of the store in range
and, where cameras were recorded, on frames taken from the segments (their key frames, at most one per
`every_s` seconds: a key frame decodes alone), in batches as the worker sends keyframes. Frames near an event
whose label, text or caption holds a word of the phrase (the store's full-text index) are asked first, so hits
come early in a long range. Each box at or above the confidence floor is a hit: time, source, frame, box,
confidence, the keyframe image or the segment it came from, and the stretch `streamer clip` cuts around it.
Answers are kept per frame, phrase and model in `find-cache.sqlite` beside the store: asking again is instant and
loads no model.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import datetime as _dt
import hashlib
import json
import sqlite3
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import av
import cv2
import numpy as np

from streamer.errors import StreamerError
from streamer.outputs.runfolder import resolve
from streamer.records import Frame, Keyframe
from streamer.tasks import PROMPT_MAX

TASK = "<CAPTION_TO_PHRASE_GROUNDING>"
NEAR_S = 10.0  # a frame this close to an event that names a word of the phrase is asked first
CLIP_S = 5.0  # footage before and after a hit in its clip


@dataclass
class Candidate:
    """A frame to ask: a kept keyframe, or a key frame of a recorded segment."""

    key: str  # what the cache knows it by
    source: str
    frame_index: int
    pts: float
    wall: float | None
    image: Path | None = None  # a kept keyframe's JPEG
    segment: Path | None = None  # a recorded segment, and `pts` in it
    rank: float | None = None  # BM25 of the nearest mention (lower is better); None: no mention near

    def picture(self) -> np.ndarray:
        if self.image is not None:
            picture = cv2.imread(str(self.image))
            if picture is None:
                raise StreamerError(f"kept keyframe {self.image} is missing or not an image")
            return picture
        with av.open(str(self.segment)) as container:
            stream = container.streams.video[0]
            container.seek(int(self.pts / stream.time_base), stream=stream, backward=True, any_frame=False)
            for frame in container.decode(stream):
                if frame.time is not None and frame.time >= self.pts - 1e-3:
                    return frame.to_ndarray(format="bgr24")
        raise StreamerError(f"frame at {self.pts:.2f} s of {self.segment} cannot be decoded")


@dataclass
class Hit:
    source: str
    frame_index: int
    wall_time: str | None
    box: list[float]
    confidence: float
    image: str | None  # the kept keyframe
    footage: str | None  # the recorded segment it came from, and `pts` into it
    pts: float
    clip: dict | None  # --source/--from/--to for `streamer clip`, where the time is known


def candidates(store: Path, source: str | None, start: float | None, end: float | None,
               every_s: float) -> list[Candidate]:
    """Every kept keyframe and sampled recorded frame of the store in range; said plainly when there is none."""
    from streamer.outputs.store import footage, kept_keyframes

    found = [Candidate(f"k:{image.name}", src, index, pts, wall, image=image)
             for image, src, index, pts, wall in kept_keyframes(store, source, start, end)]
    segments = [s for s in footage(store) if not s.original]
    for segment in segments:
        if (source is not None and segment.source != source or start is not None and segment.end_wall < start
                or end is not None and segment.start_wall > end):
            continue
        path = resolve(store.parent, segment.path)
        for pts in _key_frames(path, every_s):
            wall = segment.start_wall + pts - (segment.start_pts or 0.0)
            if (start is None or wall >= start) and (end is None or wall <= end):
                found.append(Candidate(f"s:{segment.path}@{pts:.3f}", segment.source, -1, pts, wall, segment=path))
    if not found:
        if not kept_keyframes(store) and not segments:
            raise StreamerError(f"{store} keeps no keyframes and no recordings to search: run with "
                                "output.save_keyframes: true, or record a camera (record.enabled)")
        raise StreamerError("nothing was kept in that range" + (f" for {source}" if source else "")
                            + ": widen --from/--to, or leave out --source")
    return found


def _key_frames(path: Path, every_s: float) -> list[float]:
    """Times (seconds into the segment) of its key frames, at most one per `every_s`."""
    times: list[float] = []
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            for packet in container.demux(stream):
                if packet.is_keyframe and packet.pts is not None:
                    at = float(packet.pts * stream.time_base)
                    if not times or at - times[-1] >= every_s - 1e-6:
                        times.append(at)
    except (av.FFmpegError, IndexError, OSError):
        return times  # a segment a killed run left open: its frames up to the cut
    return times


def prerank(store: Path, phrase: str, found: list[Candidate]) -> list[Candidate]:
    """Frames near a mention of a word of the phrase first (best mention first), then the rest oldest first."""
    from streamer.outputs.store import mentions

    said = mentions(store, phrase)
    by_source: dict[str, list[tuple[float, float]]] = {}
    for source, wall, rank in said:
        by_source.setdefault(source, []).append((wall, rank))
    for candidate in found:
        near = [rank for wall, rank in by_source.get(candidate.source, [])
                if candidate.wall is not None and abs(wall - candidate.wall) <= NEAR_S]
        candidate.rank = min(near) if near else None
    return sorted(found, key=lambda c: (c.rank is None, c.rank or 0.0, c.wall or 0.0, c.frame_index))


class Cache:
    """Answers per (frame, phrase, model) in a small SQLite beside the store; one that cannot be written (a
    read-only folder) is simply not kept."""

    def __init__(self, path: Path, model: str) -> None:
        self.model = model
        self._conn = None
        with contextlib.suppress(sqlite3.Error, OSError):
            conn = sqlite3.connect(str(path), isolation_level=None)
            conn.execute("CREATE TABLE IF NOT EXISTS answers (frame TEXT, phrase TEXT, model TEXT, boxes TEXT,"
                         " PRIMARY KEY (frame, phrase, model))")
            self._conn = conn

    def get(self, key: str, phrase: str) -> list | None:
        if self._conn is None:
            return None
        row = self._conn.execute("SELECT boxes FROM answers WHERE frame = ? AND phrase = ? AND model = ?",
                                 (key, phrase, self.model)).fetchone()
        return None if row is None else json.loads(row[0])

    def put(self, key: str, phrase: str, boxes: list) -> None:
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?)",
                                   (key, phrase, self.model, json.dumps(boxes)))

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


def find(store: Path, phrase: str, detector: Callable[[], object], model_name: str, *, source: str | None = None,
         start: float | None = None, end: float | None = None, every_s: float = 2.0, min_confidence: float = 0.3,
         batch: int = 4, on_progress: Callable[[int, int], None] | None = None,
         on_hit: Callable[[Hit], None] | None = None) -> list[Hit]:
    """Every hit, best first. `detector` is called (the model loaded) only when some frame's answer is not cached."""
    phrase = " ".join(phrase.split())
    if not phrase:
        raise StreamerError("find: the phrase is empty: say what to look for, e.g. \"person with a ladder\"")
    if len(phrase) > PROMPT_MAX:
        raise StreamerError(f"find: the phrase is {len(phrase)} characters; the model takes at most {PROMPT_MAX}: "
                            "say what to look for in a few words")
    ordered = prerank(store, phrase, candidates(store, source, start, end, every_s))
    cache = Cache(store.parent / "find-cache.sqlite", hashlib.sha256(model_name.encode()).hexdigest()[:16])
    hits: list[Hit] = []
    model = None
    try:
        done = 0
        for at in range(0, len(ordered), batch):
            group = ordered[at : at + batch]
            answers = [cache.get(c.key, phrase) for c in group]
            asked = [i for i, a in enumerate(answers) if a is None]
            if asked:
                model = model or detector()
                pictures = [group[i].picture() for i in asked]
                keyframes = [Keyframe(Frame(group[i].source, max(group[i].frame_index, 0), group[i].pts,
                                            group[i].wall or 0.0, picture), TASK, phrase)
                             for i, picture in zip(asked, pictures)]
                for i, result in zip(asked, model.detect(keyframes)):
                    det = result.detections
                    confidence = det.confidence if det.confidence is not None else np.ones(len(det))
                    answers[i] = [[*map(float, box), float(c)] for box, c in zip(det.xyxy, confidence)]
                    cache.put(group[i].key, phrase, answers[i])
            for candidate, answer in zip(group, answers):
                for *box, confidence in answer:
                    if confidence >= min_confidence and box[2] > box[0] and box[3] > box[1]:
                        hit = _hit(candidate, box, confidence)
                        hits.append(hit)
                        if on_hit is not None:
                            on_hit(hit)
            done += len(group)
            if on_progress is not None:
                on_progress(done, len(ordered))
    finally:
        cache.close()
    return sorted(hits, key=lambda h: -h.confidence)


class OnWorker:
    """A running pipeline's model as `find`'s detector: each frame asked as a question, which waits behind the
    cameras' keyframes, so searching from the page never delays detection."""

    def __init__(self, worker, timeout_s: float = 600.0) -> None:
        self.worker, self.timeout_s = worker, timeout_s

    def detect(self, keyframes: list[Keyframe]) -> list:
        futures = [self.worker.submit(dataclasses.replace(k, question=True)) for k in keyframes]
        try:
            return [future.result(timeout=self.timeout_s) for future in futures]
        except (concurrent.futures.CancelledError, concurrent.futures.TimeoutError):
            raise StreamerError("find: the model stopped, or did not answer in time") from None


def _hit(candidate: Candidate, box: list[float], confidence: float) -> Hit:
    wall = None if candidate.wall is None else _iso(candidate.wall)
    clip = None if candidate.wall is None else {"source": candidate.source, "from": _iso(candidate.wall - CLIP_S),
                                                "to": _iso(candidate.wall + CLIP_S)}
    return Hit(candidate.source, candidate.frame_index, wall, [round(v, 2) for v in box], round(confidence, 4),
               str(candidate.image) if candidate.image else None,
               str(candidate.segment) if candidate.segment else None, round(candidate.pts, 3), clip)


def _iso(epoch: float) -> str:
    return _dt.datetime.fromtimestamp(epoch).astimezone().isoformat(timespec="seconds")


def render(hits: list[Hit], fmt: str) -> str:
    if fmt == "json":
        return json.dumps([asdict(h) for h in hits], indent=1, ensure_ascii=False)
    rows = [[h.wall_time or "-", h.source, str(h.frame_index) if h.frame_index >= 0 else f"{h.pts:.1f}s",
             f"{h.confidence:.2f}", " ".join(f"{v:.0f}" for v in h.box), h.image or h.footage or "-"] for h in hits]
    from streamer.outputs.store import text_table

    return text_table(["time", "source", "frame", "conf", "box", "where"], rows, "hits")
