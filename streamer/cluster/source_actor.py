"""A source's actor on a Ray cluster, and the board where every source posts its progress.

A source actor holds what one process holds per source (reader and `SourceRun`: sampler, trackers, events,
annotated video, JSONL, SQLite, MQTT/webhooks), so outputs stay next to the camera or file and only keyframes
cross to a model worker. Ray restarts a killed actor and retries its `run`; the new incarnation finds nothing
opened and takes over: it redoes a file from its start, writing its log and video again but delivering only
the events its predecessor had not (the run is deterministic), or picks a camera up where the last progress it
posted left off: `source_down` / `source_up` around the frames it missed, track ids after the last one, the
video in a new segment beside the first.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

from streamer.cluster.model_worker import RemoteModel
from streamer.config import Config
from streamer.outputs.store import EventStore
from streamer.outputs.switches import Switches
from streamer.pipeline.reader import Reader, open_reader
from streamer.pipeline.source_run import SourceRun, SourceSpec, Takeover
from streamer.pipeline.stats import RunStats
from streamer.records import Event, SourceStatus, StreamInfo
from streamer.sources import safe_name

POST_S = 0.5


class ProgressBoard:
    """The latest post of every source: its stats, the last frame it handled, the highest track id it issued.
    The driver reads it for progress (and how long ago each source last posted, on the board's own clock); a
    restarted source reads its own last post to resume."""

    def __init__(self) -> None:
        self.posts: dict[str, dict] = {}
        self.when: dict[str, float] = {}

    def post(self, key: str, post: dict) -> None:
        self.posts[key] = post
        self.when[key] = time.monotonic()

    def get(self, key: str) -> dict | None:
        return self.posts.get(key)

    def all(self) -> dict[str, dict]:
        now = time.monotonic()
        return {key: {**post, "age_s": now - self.when[key]} for key, post in self.posts.items()}


class SourceActor:
    """The body of one source's actor. `open` runs once, so a bad path or URL fails before any model loads;
    `run` is retried by Ray on a restarted actor, which finds nothing opened and takes over from its
    predecessor."""

    def __init__(self, key: str, spec: SourceSpec, config: Config) -> None:
        self.key = key
        self.spec = spec
        self.config = config
        self.incarnation = uuid.uuid4().hex[:8]
        self.stop_event = threading.Event()
        self.reader: Reader | None = None
        self.source_run: SourceRun | None = None

    def open(self) -> StreamInfo | None:
        self.reader = self._open_reader(None)
        return self.reader.info

    def _open_reader(self, resume: SourceStatus | None) -> Reader:
        return open_reader(self.spec.url, self.spec.name, self.spec.live, self.config.pipeline.frame_queue,
                           self.config.live, resume=resume)

    def _take_over(self, board) -> tuple[Reader, SourceSpec, Takeover]:
        import ray

        post = ray.get(board.get.remote(self.key))
        logged = _logged(self.spec.events_path)
        resume = None
        if post is not None and post["frame"] is not None:
            index, pts, wall_time = post["frame"]
            resume = SourceStatus(post["stats"].source, "down", wall_time, pts, index, reason="source actor restarted")
        reader = self._open_reader(resume)
        counted = RunStats(source=reader.name, events=len(logged), event_counts=dict(Counter(e["type"] for e in logged)))
        if not reader.live:  # redone from the start: what the log holds was delivered already
            return reader, self.spec, Takeover(replay=len(logged), counted=counted)
        if post is not None:  # the frames it read are not read again
            before = post["stats"]
            counted.frames, counted.keyframes, counted.detections = before.frames, before.keyframes, before.detections
        spec = dataclasses.replace(self.spec, video_path=_segment(self.spec.video_path))
        max_logged = max((e["track_id"] for e in logged if e.get("track_id") is not None), default=-1)
        first_track_id = max(max_logged, post["max_track_id"] if post else -1) + 1
        closing = () if resume is None else _left_open(logged, resume)
        return reader, spec, Takeover(append=True, first_track_id=first_track_id, counted=counted, closing=closing)

    def run(self, model: RemoteModel, board) -> RunStats:
        from streamer.outputs.build import Outputs, process_outputs

        reader, spec, takeover = (self.reader, self.spec, None) if self.reader is not None else self._take_over(board)
        self.reader = None  # a retried `run` on this incarnation (not a restart) takes over too
        name = safe_name(reader.name)
        switches = Switches(self.config)  # this camera's, turned over MQTT by its actor's own client
        shared = process_outputs(self.config, self.config.output.dir / "outbox" / name, client_tag=name,
                                 sources=[reader.name], switches=switches)
        store = EventStore(spec.db_path) if spec.db_path is not None else None
        self.source_run = SourceRun(spec, self.config, reader, model, shared, store=store, takeover=takeover,
                                    switches=switches)
        done = threading.Event()
        poster = threading.Thread(target=self._post_loop, args=(board, done), name="post", daemon=True)
        try:
            poster.start()
            stats = self.source_run.run(self.stop_event)
        finally:
            done.set()
            poster.join(timeout=2)
            Outputs(shared).close()
        board.post.remote(self.key, self._post())
        return stats

    def _post(self) -> dict:
        run = self.source_run
        last = run.last_frame
        return {"stats": run.stats(), "incarnation": self.incarnation, "max_track_id": run.max_track_id,
                "frame": None if last is None else (last.index, last.pts, last.wall_time)}

    def _post_loop(self, board, done: threading.Event) -> None:
        while not done.wait(POST_S):
            board.post.remote(self.key, self._post())

    def where(self) -> str:
        from streamer.cluster.model_worker import where

        return where()

    def stop(self) -> None:
        self.stop_event.set()


def _logged(path: Path) -> list[dict]:
    """The events an earlier incarnation logged; a half-written last line is cut off."""
    if not path.is_file():
        return []
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        with path.open("r+b") as f:
            f.truncate(end)
    return [json.loads(line) for line in data[:end].splitlines() if line.strip()]


def _left_open(logged: list[dict], down: SourceStatus) -> tuple[Event, ...]:
    """`object_left` (reason `source_restarted`) for each track the dead incarnation confirmed and never ended,
    where it stopped: the new one's tracker does not know them (ids go on after theirs), and whoever counts
    what is present (Home Assistant's occupancy) must not see them there for ever."""
    first: dict[int, dict] = {}
    last: dict[int, dict] = {}
    for event in logged:
        track = event.get("track_id")
        if track is None:
            continue
        if event["type"] == "object_appeared":
            first[track] = event
        if event["type"] == "object_left":
            first.pop(track, None)
        last[track] = event
    return tuple(
        Event(type="object_left", source=last[track]["source"], frame_index=down.frame_index, pts=down.pts,
              wall_time=down.wall_time, track_id=track, label=last[track]["label"],
              bbox=tuple(last[track]["bbox"]) if last[track].get("bbox") else None,
              confidence=last[track].get("confidence"), text=last[track].get("text"),
              extra={"dwell_s": round(last[track]["pts"] - first[track]["pts"], 6), "reason": "source_restarted"})
        for track in sorted(first))


def _segment(path: Path | None) -> Path | None:
    """The first free `<stem>.partN<suffix>` beside `path`: a restarted camera's video goes on in a new file."""
    if path is None:
        return None
    n = 1
    while (candidate := path.with_name(f"{path.stem}.part{n}{path.suffix}")).exists():
        n += 1
    return candidate
