"""The pipeline: per source, reader thread -> sampler -> shared worker thread -> trackers -> events -> sinks.

Files are processed deterministically and completely: frames wait in a bounded pending line until the keyframe
before them has its detections, so every frame of the output is drawn with the tracks of the latest keyframe at
or before it, while the model works on later keyframes in parallel; nothing is dropped (back-pressure).

Live sources must never build latency: a source has at most one keyframe with the model at a time, every frame
is drawn at once with the latest tracks known, and the reader drops stale frames. One worker serves every source,
batching their keyframes; each source runs on its own thread, so a frozen camera stalls nobody else.

A stop request (SIGINT/SIGTERM, --duration) ends reading, finishes what is in hand, and closes the outputs.
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path

import cv2

from streamer.annotate import Annotator
from streamer.config import Config, TaskEntry
from streamer.errors import StreamerError
from streamer.events import EventMaker, status_event, worker_event
from streamer.motion import Motion
from streamer.reader import Reader
from streamer.sources import safe_name, scrub
from streamer.records import Event, Frame, FrameDetections, SourceStatus, StreamInfo, Tracks
from streamer.sampler import Sampler
from streamer.schedule import Schedule
from streamer.sinks import JsonlSink, VideoSink
from streamer.store import SqliteSink
from streamer.tracker import Tracker
from streamer.worker import Detector, Worker
from streamer.zones import ZoneWatcher

_DRAIN_S = 5.0  # how long a stopping live source waits for its keyframe in flight
LATENCY_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass
class SourceSpec:
    """One source to run and where its outputs go."""

    url: str
    events_path: Path
    video_path: Path | None = None
    name: str | None = None
    live: bool | None = None
    db_path: Path | None = None  # SQLite event store; sources naming the same file share it


@dataclass
class RunStats:
    """What a source's run did; updated as it goes, for progress, status lines and the summary."""

    source: str
    live: bool = False
    info: StreamInfo | None = None
    state: str = "starting"
    frames: int = 0
    keyframes: int = 0
    detections: int = 0
    dropped: int = 0
    reconnects: int = 0
    latency_ms: float | None = None  # frame read -> its keyframe's tracks and events, latest
    latencies: deque = field(default_factory=lambda: deque(maxlen=4096))  # (wall time, ms), recent keyframes
    latency_buckets: list[int] = field(default_factory=lambda: [0] * len(LATENCY_BUCKETS_S))  # cumulative
    latency_sum_s: float = 0.0
    latency_count: int = 0
    events: int = 0
    event_counts: dict[str, int] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    seconds: float = 0.0  # processing time, after the model has loaded
    load_seconds: float = 0.0
    video_path: Path | None = None
    events_path: Path | None = None
    db_path: Path | None = None
    stopped_early: bool = False
    error: StreamerError | None = None

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    @property
    def fps_so_far(self) -> float:
        """Frames per second since the source started, while it runs; over the whole run once it ended."""
        if self.state == "ended":
            return self.fps
        return self.frames / max(1e-9, time.monotonic() - self.started)


class _Branch:
    """Tracks, motion and events of one scheduled task of one source."""

    def __init__(self, config: Config, entry: TaskEntry, keyframe_rate: float, info: StreamInfo, ids) -> None:
        # A task that runs every few keyframes (or seconds) cannot see a track more often than that.
        period = max(entry.every_n_keyframes / keyframe_rate, entry.every_s or 0.0)
        tracking = config.tracker.model_copy(update={"lost_after_s": max(config.tracker.lost_after_s, period)})
        self.tracker = Tracker(tracking, 1.0 / period, ids)
        self.events = EventMaker(info.source, tracking.lost_after_s, config.events.ocr_min_votes,
                                 config.events.ocr_window)
        self.zones = ZoneWatcher(config.events, info.source, info.width, info.height)
        self.motion = Motion(horizon_s=tracking.lost_after_s)
        self.latest: Tracks | None = None

    def update(self, frame: Frame, result: FrameDetections) -> list[Event]:
        self.latest = Tracks(frame, self.tracker.update(result))
        events = self.events.update(self.latest, result.keyframe.task, result.text)
        events += self.zones.update(self.latest)
        events += self._zone_exits(events, frame)
        self.motion.observe(self.latest)
        return events

    def finish(self, frame: Frame | None) -> list[Event]:
        events = self.events.finish(frame)
        return events + self._zone_exits(events, frame)

    def _zone_exits(self, events: list[Event], frame: Frame | None) -> list[Event]:
        return [e for left in events if left.type == "object_left" for e in self.zones.track_ended(left.track_id, frame)]


class _SourceRun:
    """Everything of one source after the reader: sampling, scheduling, tracking, events, drawing, writing.

    A run that takes over from one whose process died (on a Ray cluster) says how: `append` continues the log
    and store, `replay` events are written to the log again but not delivered to the store and observers (a file
    redone from its start), track ids start at `first_track_id`, and the reader continues from `resume`.
    """

    def __init__(self, spec: SourceSpec, config: Config, stop: threading.Event, observers: list,
                 resume: SourceStatus | None = None) -> None:
        self.spec = spec
        self.config = config
        self.stop = stop
        self.event_observers = [o for o in observers if hasattr(o, "event")]
        self.frame_observers = [o for o in observers if hasattr(o, "frame")]
        self.reader = Reader(spec.url, name=spec.name, live=spec.live, queue_size=config.pipeline.frame_queue,
                             live_config=config.live, resume=resume)
        self.append = False
        self.replay = 0
        self.first_track_id = 0
        self.max_track_id = -1  # the highest track id in an event so far, where a successor starts above
        self.workers: dict[str, set[str]] = {}  # remote worker name -> incarnations that answered
        self.worker: str | None = None  # the remote worker that answered last
        self.stats = RunStats(source=self.reader.name, live=bool(self.reader.live))
        self.sampler = Sampler(config.sampler)
        self.schedule = Schedule(config.tasks())
        self.annotator = Annotator()
        self.branches: list[_Branch] = []
        self.video: VideoSink | None = None
        self.log: JsonlSink | None = None
        self.db: SqliteSink | None = None
        self.last_frame: Frame | None = None

    def open(self) -> None:
        self.stats.info = self.reader.open()
        self.stats.live = self.reader.live  # a URL's mode is known once it is open

    def snapshot(self) -> RunStats:
        """The stats with the reader's own counters, which move even while no frame arrives."""
        self.stats.dropped, self.stats.reconnects = self.reader.dropped, self.reader.reconnects
        if self.stats.live and self.stats.state not in ("starting", "ended"):
            self.stats.state = self.reader.state
        return self.stats

    def open_outputs(self, stores: dict[Path, SqliteSink]) -> None:
        """Created only after every source opened and the model loaded: a bad run leaves old files alone."""
        self.log = JsonlSink(self.spec.events_path, append=self.append)
        self.stats.events_path = self.spec.events_path
        if self.spec.db_path is not None:
            key = Path(self.spec.db_path).resolve()
            if key not in stores:
                stores[key] = SqliteSink(self.spec.db_path)
            self.db = stores[key].acquire()
            self.stats.db_path = self.spec.db_path

    def _ensure_ready(self, frame: Frame) -> None:
        """Trackers and the video need the stream's rate and size; a live source may only say so now."""
        if self.branches:
            return
        info = self.stats.info = self.reader.info
        rate = self.sampler.expected_rate(float(info.fps))
        ids = itertools.count(self.first_track_id)
        self.branches = [_Branch(self.config, e, rate, info, ids) for e in self.schedule.entries]
        watcher = self.branches[0].zones
        self.annotator.areas(watcher.polygons(), watcher.segments())
        if self.spec.video_path is not None:
            out = self.config.output
            self.video = VideoSink(self.spec.video_path, info, out.codec, out.preset, out.crf,
                                   fragmented=self.reader.live)
            self.stats.video_path = self.spec.video_path

    def emit(self, events: list[Event]) -> None:
        for event in events:
            self.log.write(event)
            if event.track_id is not None and event.track_id > self.max_track_id:
                self.max_track_id = event.track_id
            if self.replay > 0:  # delivered by the run this one took over from
                self.replay -= 1
                continue
            if self.db is not None:
                self.db.write(event, self.spec.events_path.parent)
            for observer in self.event_observers:
                observer.event(event)
            self.stats.events += 1
            self.stats.event_counts[event.type] = self.stats.event_counts.get(event.type, 0) + 1

    def apply(self, frame: Frame, jobs: list[tuple[_Branch, Future]]) -> None:
        for branch, future in jobs:
            result = future.result()
            if result.worker is not None:
                self._note_worker(frame, result.worker)
            self.stats.detections += len(result.detections)
            events = branch.update(frame, result)
            if self.config.events.snapshots:
                events = self._snapshots(frame, events)
            self.emit(events)
        if self.config.output.save_keyframes and self.db is not None and self.replay == 0:
            self._save_keyframe(frame, [branch for branch, _ in jobs])
        now = time.time()
        seconds = now - frame.wall_time
        stats = self.stats
        stats.latency_ms = 1000.0 * seconds
        stats.latencies.append((now, stats.latency_ms))
        stats.latency_sum_s += seconds
        stats.latency_count += 1
        for i, bound in enumerate(LATENCY_BUCKETS_S):
            if seconds <= bound:
                stats.latency_buckets[i] += 1

    def _note_worker(self, frame: Frame, worker: tuple[str, str]) -> None:
        """The first keyframe answered by a restarted worker, or by another one after its own died, is worth an
        event. Answers from before a restart may still come in after it: they are not."""
        name, incarnation = worker
        seen = self.workers.setdefault(name, set())
        previous, self.worker = self.worker, name
        if incarnation in seen:
            return
        seen.add(incarnation)
        if len(seen) > 1:
            self.emit([worker_event("worker_restarted", frame, self.stats.source, worker=name)])
        elif previous is not None and previous != name:
            self.emit([worker_event("worker_lost", frame, self.stats.source, worker=previous, moved_to=name)])

    def _snapshots(self, frame: Frame, events: list[Event]) -> list[Event]:
        """The events, those of object_appeared and text_read with a JPEG crop of the object; its path, relative
        to the run folder (the event log's), goes into the new event."""
        folder = self.spec.events_path.parent
        out = []
        for event in events:
            crop = None
            if event.type in ("object_appeared", "text_read") and event.bbox is not None:
                x1, y1, x2, y2 = (int(round(v)) for v in event.bbox)
                crop = frame.image[max(0, y1) : max(0, y2), max(0, x1) : max(0, x2)]
            if crop is None or crop.size == 0:
                out.append(event)
                continue
            name = f"snapshots/{safe_name(event.source)}-{frame.index:07d}-{event.track_id}-{event.type}.jpg"
            (folder / "snapshots").mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(folder / name), crop)
            out.append(dataclasses.replace(event, extra={**event.extra, "snapshot": name}))
        return out

    def _save_keyframe(self, frame: Frame, branches: list[_Branch]) -> None:
        folder = Path(self.spec.db_path).parent / "keyframes"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{safe_name(self.stats.source)}-{frame.index:07d}.jpg"
        cv2.imwrite(str(path), frame.image)
        for branch in branches:
            if branch.latest is not None and branch.latest.frame is frame:
                self.db.write_keyframe(self.stats.source, frame.index, frame.pts, path, branch.latest.detections)

    def write(self, frame: Frame, on_progress) -> None:
        if self.video is not None or self.frame_observers:
            for branch in self.branches:
                if branch.latest is not None:
                    branch.motion.place(branch.latest, frame.pts)
            image = self.annotator.draw(frame.image, [b.latest for b in self.branches if b.latest])
            if self.video is not None:
                self.video.write(image)
            for observer in self.frame_observers:
                observer.frame(self.stats.source, image)  # a reference: a viewer encodes only what it shows
        self.last_frame = frame
        self.stats.frames += 1
        if on_progress is not None:
            on_progress(self.stats)

    def submit(self, frame: Frame, worker: Worker) -> list[tuple[_Branch, Future]]:
        self.stats.keyframes += 1
        return [(self.branches[i], worker.submit(job)) for i, job in self.schedule.jobs(frame)]

    def run(self, worker: Worker, on_progress) -> None:
        self.stats.started = time.monotonic()
        self.stats.state = "running"
        try:
            (self._run_live if self.reader.live else self._run_file)(worker, on_progress)
        except StreamerError as exc:
            self.stats.error = exc
        except Exception as exc:  # a bug in one source must not take the others down silently
            detail = scrub(str(exc), [self.spec.url])
            self.stats.error = StreamerError(f"{self.stats.source}: {type(exc).__name__}: {detail}")
        finally:
            self.reader.stop()
            self.stats.stopped_early = self.stop.is_set()
            self.stats.seconds = time.monotonic() - self.stats.started
            self.snapshot()
            self.stats.state = "ended"
            self._close()

    def _close(self) -> None:
        try:
            for branch in self.branches:
                self.emit(branch.finish(self.last_frame))
        finally:
            try:
                if self.video is not None:
                    self.video.close()
            finally:
                if self.log is not None:
                    self.log.close()
                if self.db is not None:
                    self.db.close()

    def _run_file(self, worker: Worker, on_progress) -> None:
        pending: deque[tuple[Frame, list[tuple[_Branch, Future]]]] = deque()
        limit = self.config.pipeline.max_pending_frames

        def settle(wait: str) -> None:
            """Track, log, draw and write the frames at the head of the line whose keyframe is answered.

            `wait`: "none" stops at the first unanswered keyframe, "head" waits for the first one only (the line
            is full), "all" waits for every one (the end of the run).
            """
            while pending:
                frame, jobs = pending[0]
                if jobs:
                    if wait == "none" and not all(future.done() for _, future in jobs):
                        return
                    self.apply(frame, jobs)
                    if wait == "head":
                        wait = "none"
                pending.popleft()
                self.write(frame, on_progress)

        failure: StreamerError | None = None
        try:
            for frame in self.reader.frames(stop=self.stop):
                self._ensure_ready(frame)
                jobs = self.submit(frame, worker) if self.sampler.is_keyframe(frame) else []
                pending.append((frame, jobs))
                settle("head" if len(pending) >= limit else "none")
        except StreamerError as exc:  # a decode error: keep every frame read so far, then report it
            failure = exc
        settle("all")
        if failure is not None:
            raise failure
        info = self.stats.info
        if not self.stop.is_set() and info.total_frames and self.stats.frames < info.total_frames:
            raise StreamerError(
                f"{info.source} ended after {self.stats.frames} of its {info.total_frames} frames: "
                "the file is truncated or corrupt (the outputs hold what was read)"
            )

    def _run_live(self, worker: Worker, on_progress) -> None:
        inflight: tuple[Frame, list[tuple[_Branch, Future]]] | None = None
        for item in self.reader.frames(stop=self.stop):
            if isinstance(item, SourceStatus):
                self.emit([status_event(item)])
                continue
            frame = item
            self._ensure_ready(frame)
            if inflight is not None and all(f.done() for _, f in inflight[1]):
                self.apply(*inflight)
                inflight = None
            if inflight is None and self.sampler.is_keyframe(frame):
                inflight = (frame, self.submit(frame, worker))
            self.write(frame, on_progress)
        if inflight is not None:
            try:
                for _, future in inflight[1]:
                    future.result(timeout=_DRAIN_S)
                self.apply(*inflight)
            except (FutureTimeout, Exception):
                pass  # stopping: a keyframe the model could not finish in time is let go


class Pipeline:
    def __init__(self, config: Config, make_detector: Callable[[], Detector], observers: list | None = None) -> None:
        """`make_detector` is called once the sources have opened, so bad input fails before a slow model load.
        `observers` get every event (`event(event)`) and/or every annotated frame (`frame(source, image)`):
        MQTT, webhooks, the live view."""
        self.config = config
        self.make_detector = make_detector
        self.observers = observers or []
        self._stop = threading.Event()
        self.runs: list[_SourceRun] = []
        self.worker: Worker | None = None
        self.model_loaded = False

    def stop(self) -> None:
        """Ask a running pipeline to wind down; safe from a signal handler or a timer."""
        self._stop.set()

    def run(self, source: str, video_path: Path | None, events_path: Path, on_progress=None) -> RunStats:
        """One source; raises its error, if any, after its outputs are closed."""
        [stats] = self.run_many([SourceSpec(source, events_path, video_path)], on_progress)
        return stats

    def run_many(self, specs: list[SourceSpec], on_progress=None, duration_s: float | None = None) -> list[RunStats]:
        """Run every source to its end, a stop, or `duration_s` seconds after the sources started (the model
        load not counted). A source's failure does not stop the others; the first one is raised once all
        outputs are closed."""
        self.runs = runs = [_SourceRun(spec, self.config, self._stop, self.observers) for spec in specs]
        started = time.monotonic()
        try:
            _open_all(runs)
            detector = self.make_detector()
        except BaseException:
            for run in runs:
                run.reader.stop()
            raise
        load_seconds = time.monotonic() - started
        model = self.config.model
        self.worker = worker = Worker(detector, max_batch=model.batch_size, max_wait_ms=model.max_wait_ms)
        self.model_loaded = True
        threads = []
        try:
            stores: dict[Path, SqliteSink] = {}
            for run in runs:
                run.stats.load_seconds = load_seconds
                run.open_outputs(stores)
            worker.start()
            for run in runs:
                run.reader.start()
                thread = threading.Thread(target=run.run, args=(worker, on_progress), name=f"source:{run.stats.source}",
                                          daemon=True)
                thread.start()
                threads.append(thread)
            deadline = time.monotonic() + duration_s if duration_s else None
            for thread in threads:
                while thread.is_alive():
                    thread.join(timeout=0.2)  # the main thread stays free for signal handlers
                    if deadline is not None and time.monotonic() >= deadline:
                        self.stop()
        finally:
            self._stop.set()
            for thread in threads:
                thread.join(timeout=_DRAIN_S + 5)
            worker.stop()
        for run in runs:
            if run.stats.error is not None:
                raise run.stats.error
        return [run.stats for run in runs]


def _open_all(runs: list[_SourceRun]) -> None:
    """Open every source at once: an RTSP open probes for about a second, and sixteen cameras should not wait
    sixteen seconds. The first error, in the order the sources were given, is raised."""
    errors: list[BaseException | None] = [None] * len(runs)

    def open_one(i: int) -> None:
        try:
            runs[i].open()
        except BaseException as exc:  # re-raised below, in the caller's thread
            errors[i] = exc

    threads = [threading.Thread(target=open_one, args=(i,), daemon=True) for i in range(len(runs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for error in errors:
        if error is not None:
            raise error
