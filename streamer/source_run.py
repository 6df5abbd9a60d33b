"""One source's run, after its reader: sampling, scheduling, tracking, events, drawing and writing.

frame -> (keyframe -> model -> detections -> tracks -> events) -> annotated frame and events out. A `SourceRun`
is built with everything it needs (its opened reader, the keyframe model, its sinks and store, and, for a run
that takes over from a dead one, a `Takeover`) and does one thing: `run(stop)`. The local pipeline and a Ray
source actor both drive it that way.

Files are processed deterministically and completely: frames wait in a bounded line until the keyframe after
them is tracked too, so each frame's boxes are interpolated between the keyframes around it (`motion`), while
the model works on later keyframes in parallel; nothing is dropped (back-pressure).

Cameras must never build latency: a camera has at most one keyframe with the model at a time, every frame is
drawn at once with its tracks where they are predicted on it, and the reader drops stale frames.
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError, Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from streamer.annotate import Annotator
from streamer.config import Config, TaskEntry
from streamer.errors import StreamerError, cannot_write
from streamer.events import EventMaker, status_event, worker_event
from streamer.flow import small_grey
from streamer.metrics import Metrics
from streamer.motion import Motion
from streamer.questions import Questions
from streamer.reader import Reader
from streamer.records import Event, Frame, FrameDetections, FrameTracks, SourceStatus, StreamInfo, Tracks
from streamer.sampler import Sampler
from streamer.schedule import Schedule
from streamer.sinks import EventSink, FrameSink, JsonlSink, TracksSink, VideoSink
from streamer.sources import safe_name, scrub
from streamer.stats import RunStats
from streamer.store import EventStore
from streamer.tracker import Tracker
from streamer.worker import KeyframeModel
from streamer.zones import ZoneWatcher

DRAIN_S = 5.0  # how long a stopping camera waits for its keyframe in flight
_RECENT_LATENCIES = 4096
_RECENT_LOOKS = 150  # a camera's frames (small grey images) kept to follow tracks over a slow model's answer


@dataclass
class SourceSpec:
    """One source to run and where its outputs go."""

    url: str
    events_path: Path
    video_path: Path | None = None
    name: str | None = None
    live: bool | None = None  # None: guessed (see `sources.guess_live`)
    db_path: Path | None = None  # SQLite event store; sources naming the same file share it
    tracks_path: Path | None = None  # the tracks of every frame (JSONL, `sinks.TracksSink`)


@dataclass(frozen=True)
class Takeover:
    """How a run takes over from one whose process died (a restarted Ray source actor): `append` continues
    the log (a camera), `replay` is the number of events already delivered by the dead run that this one will
    make again and only log (a file redone from its start), and track ids start at `first_track_id`."""

    append: bool = False
    replay: int = 0
    first_track_id: int = 0


class TaskTracking:
    """Tracks, their boxes on every frame, and the events of one scheduled task of one source."""

    def __init__(self, config: Config, entry: TaskEntry, keyframe_rate: float, info: StreamInfo, ids,
                 model: KeyframeModel | None = None, live: bool = False) -> None:
        # A task that runs every few keyframes (or seconds) cannot see a track more often than that.
        period = max(entry.every_n_keyframes / keyframe_rate, entry.every_s or 0.0)
        tracking = config.tracker.model_copy(update={"lost_after_s": max(config.tracker.lost_after_s, period)})
        self.task = entry.task
        self.tracker = Tracker(tracking, 1.0 / period, ids)
        self.events = EventMaker(info.source, config.events.ocr_min_votes, config.events.ocr_window)
        self.zones = ZoneWatcher(config.events, info.source, info.width, info.height)
        self.motion = Motion()
        self.latest: Tracks | None = None
        objects = config.objects
        self.questions = (Questions(objects, config.model.object_share, model, behind=live)
                          if model is not None and (objects.describe or objects.read) else None)

    def step(self, frame: Frame, grey: np.ndarray | None) -> None:
        self.motion.step(frame, grey)

    def update(self, frame: Frame, result: FrameDetections, grey: np.ndarray, scale: int,
               later: Sequence[tuple[int, float, np.ndarray]] = (), keyframes: int = 0) -> list[Event]:
        """A keyframe's answer (the keyframe stepped already): tracks, the events they make, their boxes on the
        frames held before it and stepped after it, and the questions about them (`keyframes`: the source's
        detection keyframes so far, which the questions' share is counted against)."""
        tracks = self.tracker.update(frame, result.detections, self.motion.predicted(frame.index))
        events = self.events.update(tracks, result.keyframe.task, result.text)
        self.latest = tracks.seen()
        events += self.zones.update(self.latest)
        events += self._zone_exits(events, frame)
        ids = tracks.detections.tracker_id
        texts = [self.events.label_text(int(t)) for t in ids]
        self.motion.keyframe(tracks, grey, scale, texts, self.tracker.velocities(), later)
        if self.questions is not None:
            self.questions.ended(tracks.ended)
            self.questions.consider(tracks, keyframes, self.events.settled)
        return events

    def answers(self, wait: bool = False) -> list[tuple[Frame, list[Event]]]:
        """Events from the answers to questions about this task's tracks (with `wait`, every one asked), each
        with the frame it was asked about."""
        if self.questions is None:
            return []
        out = []
        for question, result in self.questions.answered(wait):
            said = result.text or ""
            made = (self.events.read(question.frame, question.track_id, said) if question.kind == "read"
                    else self.events.described(question.frame, question.track_id, said))
            out.append((question.frame, [dataclasses.replace(e, bbox=question.bbox) for e in made]))
        return out

    def take(self, frame: Frame) -> FrameTracks:
        return FrameTracks(frame, self.task, self.motion.take(frame))

    def finish(self, frame: Frame | None) -> list[Event]:
        events = self.events.finish(frame)
        return events + self._zone_exits(events, frame)

    def _zone_exits(self, events: list[Event], frame: Frame | None) -> list[Event]:
        return [e for left in events if left.type == "object_left" for e in self.zones.track_ended(left.track_id, frame)]


Jobs = list[tuple[TaskTracking, Future]]


class SourceRun:
    """One source from its opened reader to its outputs; see the module's docstring."""

    def __init__(self, spec: SourceSpec, config: Config, reader: Reader, model: KeyframeModel,
                 event_sinks: Sequence[EventSink] = (), frame_sinks: Sequence[FrameSink] = (),
                 store: EventStore | None = None, takeover: Takeover | None = None, metrics: Metrics | None = None,
                 on_progress: Callable[[RunStats], None] | None = None) -> None:
        """`reader`: opened (`reader.open_reader`); `store`: shared with other sources, acquired here and released
        when this run ends; `metrics`: the process's histograms, if anyone serves them; `on_progress`: called
        with the stats after every frame, on this run's thread (read them there; keep a `.copy()`)."""
        self.spec = spec
        self.config = config
        self.reader = reader
        self.model = model
        self.event_sinks = list(event_sinks)
        self.frame_sinks = list(frame_sinks)
        self.store = store.acquire() if store is not None else None
        self.takeover = takeover or Takeover()
        self.metrics = metrics
        self.on_progress = on_progress
        self._stats = RunStats(source=reader.name, live=reader.live, info=reader.info, events_path=spec.events_path,
                               tracks_path=spec.tracks_path, db_path=spec.db_path if store is not None else None)
        self._replay = self.takeover.replay
        self.max_track_id = self.takeover.first_track_id - 1  # the highest track id in an event so far
        self.last_frame: Frame | None = None
        self.latencies: deque[tuple[float, float]] = deque(maxlen=_RECENT_LATENCIES)  # (wall time, ms)
        self.sampler = Sampler(config.sampler)
        self.schedule = Schedule(config.tasks())
        self.annotator = Annotator()
        self.tasks: list[TaskTracking] = []
        self.video: VideoSink | None = None
        self.log: JsonlSink | None = None
        self.tracks_out: TracksSink | None = None
        self._held: list[Frame] = []  # a file's frames since its last keyframe, waiting for the next one
        self._recent: deque[tuple[int, float, np.ndarray]] = deque(maxlen=_RECENT_LOOKS)  # a camera's, ditto
        self._looks: dict[int, tuple[np.ndarray, int]] = {}  # small grey images of keyframes not placed yet
        self._keep_from: int | None = None  # a camera's keyframe in flight: its motion is kept from there

    def stats(self) -> RunStats:
        """A copy of the stats with the reader's own counters, which move even while no frame arrives."""
        stats = self._stats.copy()
        stats.dropped, stats.reconnects = self.reader.dropped, self.reader.reconnects
        if stats.live and stats.state == "running":
            stats.state = self.reader.state
        return stats

    def run(self, stop: threading.Event) -> RunStats:
        """Run the source to its end or `stop`. The outputs are closed on every way out; an error ends up in the
        returned stats (`error`), so one source's failure stops no other."""
        stats = self._stats
        stats.started = time.monotonic()
        stats.state = "running"
        try:
            self.log = JsonlSink(self.spec.events_path, append=self.takeover.append)
            if self.spec.tracks_path is not None:
                self.tracks_out = TracksSink(self.spec.tracks_path, append=self.takeover.append)
            self.reader.start()
            if self.reader.live:
                self._run_live(stop)
            else:
                self._run_file(stop)
        except Exception as exc:
            stats.error = self._as_error(exc)
        finally:
            self.reader.stop()
            stats.stopped_early = stop.is_set()
            stats.seconds = time.monotonic() - stats.started
            try:
                self._close()
            except Exception as exc:
                stats.error = stats.error or self._as_error(exc)
            stats.dropped, stats.reconnects = self.reader.dropped, self.reader.reconnects
            stats.state = "ended"
        return self.stats()

    def _as_error(self, exc: Exception) -> StreamerError:
        """Bad input as it is; a bug as one line naming the source (a bug in one source must not take the
        others down silently), its cause kept for --debug's traceback."""
        if isinstance(exc, StreamerError):
            return exc
        error = StreamerError(f"{self._stats.source}: {type(exc).__name__}: {scrub(str(exc), [self.spec.url])}")
        error.__cause__ = exc
        return error

    # -- the two loops ------------------------------------------------------------------------------------

    def _run_file(self, stop: threading.Event) -> None:
        pending: deque[tuple[Frame, Jobs]] = deque()
        limit = self.config.pipeline.max_pending_frames
        failure: StreamerError | None = None
        frames = self.reader.frames(stop)
        while True:
            try:
                frame = next(frames)
            except StopIteration:
                break
            except StreamerError as exc:  # a decode error: keep every frame read so far, then report it
                failure = exc
                break
            # 1. A keyframe goes to the model at once; every frame joins the line behind it.
            self._prepare(frame)
            pending.append((frame, self._send(frame) if self.sampler.is_keyframe(frame) else []))
            # 2. Frames whose keyframe is answered are tracked; a full line waits for its head.
            self._settle(pending, wait="head" if len(pending) + len(self._held) >= limit else "none")
        # 3. The end: every frame read is written. At the end of the file every keyframe still with the model is
        #    waited for; when asked to stop, those not answered yet are let go (their frames keep the tracks before).
        if stop.is_set():
            self._settle(pending, wait="none")
            for frame, jobs in pending:
                self._look(frame, keyframe=bool(jobs))
                if jobs and all(future.done() and not future.cancelled() for _, future in jobs):
                    self._track(frame, jobs)
                for _, future in jobs:
                    future.cancel()
                self._hold(frame)
            pending.clear()
        self._settle(pending, wait="all")
        self._release_held()
        self._answers(wait=not stop.is_set())
        if failure is not None:
            raise failure
        info = self._stats.info
        if not stop.is_set() and info.total_frames and self._stats.frames < info.total_frames:
            raise StreamerError(
                f"{info.source} ended after {self._stats.frames} of its {info.total_frames} frames: "
                "the file is truncated or corrupt (the outputs hold what was read)"
            )

    def _settle(self, pending: deque[tuple[Frame, Jobs]], wait: str) -> None:
        """Move the frames at the head of the line whose keyframe is answered on: each is looked at (its boxes
        followed), and held until the next keyframe is tracked, which writes the frames held before it. `wait`:
        "none" stops at the first keyframe still with the model, "head" waits for the first one only, "all" for
        every one."""
        while pending:
            frame, jobs = pending[0]
            if jobs and wait == "none" and not all(future.done() for _, future in jobs):
                return
            self._look(frame, keyframe=bool(jobs))
            if jobs:
                self._track(frame, jobs)
                self._release_held()
                if wait == "head":
                    wait = "none"
            pending.popleft()
            self._hold(frame)

    def _hold(self, frame: Frame) -> None:
        """A file's frame waits for the next keyframe (its boxes are interpolated towards it); when keyframes are
        further apart than the line is long, the oldest goes out with its predicted boxes."""
        self._held.append(frame)
        while len(self._held) >= self.config.pipeline.max_pending_frames:
            self._write(self._held.pop(0))

    def _release_held(self) -> None:
        for frame in self._held:
            self._write(frame)
        self._held.clear()

    def _run_live(self, stop: threading.Event) -> None:
        inflight: tuple[Frame, Jobs] | None = None
        for item in self.reader.frames(stop):
            # 1. A camera that went down or came back is an event, in stream order.
            if isinstance(item, SourceStatus):
                self._deliver([status_event(item)])
                continue
            frame = item
            self._prepare(frame)
            self._look(frame)
            # 2. The keyframe in flight, once answered, moves the tracks on (to this frame).
            if inflight is not None and all(future.done() for _, future in inflight[1]):
                self._track(*inflight)
                inflight = None
            # 3. A new keyframe goes out only when none is in flight: keyframes are skipped, never queued.
            if inflight is None and self.sampler.is_keyframe(frame):
                inflight = (frame, self._send(frame))
            self._keep_from = inflight[0].index if inflight is not None else None
            # 4. Every frame is drawn and written now, with the tracks where they are predicted on it.
            self._write(frame)
            # 5. Answers to questions about objects, as they come.
            self._answers()
        # 6. Stopping: the keyframe in flight gets a few seconds; one the model cannot finish is let go.
        if inflight is not None:
            try:
                for _, future in inflight[1]:
                    future.result(timeout=DRAIN_S)
            except (FutureTimeout, CancelledError):
                return
            self._track(*inflight)

    # -- the steps ----------------------------------------------------------------------------------------

    def _prepare(self, frame: Frame) -> None:
        """Trackers and the video need the stream's rate and size; a camera may only say so with its first frame."""
        if self.tasks:
            return
        info = self._stats.info = self.reader.info
        rate = self.sampler.expected_rate(float(info.fps))
        ids = itertools.count(self.takeover.first_track_id)
        self.tasks = [TaskTracking(self.config, entry, rate, info, ids, self.model, self.reader.live)
                      for entry in self.schedule.entries]
        watcher = self.tasks[0].zones
        self.annotator.areas(watcher.polygons(), watcher.segments())
        if self.spec.video_path is not None:
            out = self.config.output
            self.video = VideoSink(self.spec.video_path, info, out.codec, out.preset, out.crf)
            self._stats.video_path = self.spec.video_path

    def _send(self, frame: Frame) -> Jobs:
        """The keyframe to the model, once for each task the schedule runs on it."""
        self._stats.keyframes += 1
        jobs = self.schedule.jobs(frame)
        futures = self.model.submit_all([job for _, job in jobs])  # together: one image, several prompts
        return [(self.tasks[i], future) for (i, _), future in zip(jobs, futures)]

    def _look(self, frame: Frame, keyframe: bool = True) -> None:
        """Every frame, in order: its small grey image, and each task's boxes followed onto it. A keyframe's
        image is kept until it is tracked (a camera's frames until then too: its tracks are followed over them)."""
        live = self.reader.live and self._keep_from is not None  # a camera's keyframe is in flight
        if not (keyframe or live or any(tracking.motion.needs_image for tracking in self.tasks)):
            for tracking in self.tasks:  # nothing to measure flow on this frame: no need to look at it
                tracking.step(frame, None)
            return
        grey, step = small_grey(frame.image)
        for tracking in self.tasks:
            tracking.step(frame, grey)
        if keyframe:
            self._looks[frame.index] = (grey, step)
        if live:
            self._recent.append((frame.index, frame.pts, grey))

    def _track(self, frame: Frame, jobs: Jobs) -> None:
        """A keyframe's answers: tracks and events (with snapshots), the saved keyframe, and the latency."""
        grey, scale = self._looks.pop(frame.index)
        later = [look for look in self._recent if look[0] > frame.index]
        for tracking, future in jobs:
            result = future.result()
            if result.worker_change is not None:
                kind, extra = result.worker_change
                self._deliver([worker_event(kind, frame, self._stats.source, **extra)])
            self._stats.detections += len(result.detections)
            events = tracking.update(frame, result, grey, scale, later, self._stats.keyframes)
            if self.config.events.snapshots:
                events = self._snapshots(frame, events)
            self._deliver(events)
        self._answers()
        if self.config.output.save_keyframes and self.store is not None and self._replay == 0:
            self._save_keyframe(frame, [tracking for tracking, _ in jobs])
        now = time.time()
        seconds = now - frame.wall_time
        self._stats.latency_ms = 1000.0 * seconds
        self.latencies.append((now, self._stats.latency_ms))
        if self.metrics is not None:
            self.metrics.latency.labels(self._stats.source).observe(seconds)

    def _answers(self, wait: bool = False) -> None:
        """Answers to per-object questions that are in: their events, each with a snapshot of the view asked
        about (the question's frame)."""
        for tracking in self.tasks:
            if tracking.questions is None:
                continue
            for frame, events in tracking.answers(wait):
                self._deliver(self._snapshots(frame, events) if self.config.events.snapshots else events)
        counts = [t.questions.counts for t in self.tasks if t.questions is not None]
        self._stats.questions_asked = sum(c.asked for c in counts)
        self._stats.questions_answered = sum(c.answered for c in counts)
        self._stats.questions_dropped = sum(c.dropped for c in counts)

    def _deliver(self, events: list[Event]) -> None:
        """Every event to the log; to the store and the sinks unless a run before this one delivered it."""
        for event in events:
            self.log.event(event)
            if event.track_id is not None and event.track_id > self.max_track_id:
                self.max_track_id = event.track_id
            if self._replay > 0:
                self._replay -= 1
                continue
            if self.store is not None:
                self.store.write(event, self.spec.events_path.parent)
            for sink in self.event_sinks:
                sink.event(event)
            self._stats.events += 1
            self._stats.event_counts[event.type] = self._stats.event_counts.get(event.type, 0) + 1

    def _write(self, frame: Frame) -> None:
        """The frame's tracks to the tracks file; the frame drawn with them to the video and the frame sinks."""
        tracks = [tracking.take(frame) for tracking in self.tasks]
        keep = frame.index + 1 if self._keep_from is None else min(frame.index + 1, self._keep_from)
        for tracking in self.tasks:
            tracking.motion.forget(keep)
        for index in [i for i in self._looks if i <= frame.index and i != self._keep_from]:
            del self._looks[index]
        while self._recent and self._recent[0][0] < keep:
            self._recent.popleft()
        if self.tracks_out is not None:
            self.tracks_out.tracks(self._stats.source, tracks)
        if self.video is not None or self.frame_sinks:
            layers = [self.annotator.layer(t.detections) for t in tracks if len(t.detections)]
            image = self.annotator.draw(frame.image, layers)
            if self.video is not None:
                self.video.write(image, frame.pts)
            for sink in self.frame_sinks:
                sink.frame(self._stats.source, image, tracks)
        self.last_frame = frame
        self._stats.frames += 1
        if self.on_progress is not None:
            self.on_progress(self._stats)

    def _snapshots(self, frame: Frame, events: list[Event]) -> list[Event]:
        """The events, those of object_appeared and text_read with a JPEG crop of the object; its path, relative
        to the run folder (the event log's), goes into the new event."""
        folder = self.spec.events_path.parent
        out = []
        for event in events:
            crop = None
            if event.type in ("object_appeared", "text_read", "object_described") and event.bbox is not None:
                x1, y1, x2, y2 = (int(round(v)) for v in event.bbox)
                crop = frame.image[max(0, y1) : max(0, y2), max(0, x1) : max(0, x2)]
            if crop is None or crop.size == 0:
                out.append(event)
                continue
            name = f"snapshots/{safe_name(event.source)}-{frame.index:07d}-{event.track_id}-{event.type}.jpg"
            _write_jpeg(folder / name, crop, "snapshot")
            out.append(dataclasses.replace(event, extra={**event.extra, "snapshot": name}))
        return out

    def _save_keyframe(self, frame: Frame, tasks: list[TaskTracking]) -> None:
        path = self.store.path.parent / "keyframes" / f"{safe_name(self._stats.source)}-{frame.index:07d}.jpg"
        _write_jpeg(path, frame.image, "keyframe image")
        for tracking in tasks:
            if tracking.latest is not None and tracking.latest.frame is frame:
                self.store.write_keyframe(self._stats.source, frame.index, frame.pts, path, tracking.latest.detections)

    def _close(self) -> None:
        """Frames still held are written, open tracks end with the stream; then the video is finalised and the
        log and store closed, whatever fails first."""
        try:
            if self.log is not None:
                self._release_held()
                for tracking in self.tasks:
                    self._deliver(tracking.finish(self.last_frame))
        finally:
            try:
                if self.video is not None:
                    self.video.close()
            finally:
                if self.log is not None:
                    self.log.close()
                if self.tracks_out is not None:
                    self.tracks_out.close()
                if self.store is not None:
                    self.store.close()


def _write_jpeg(path: Path, image, what: str) -> None:
    """OpenCV says only False when a write fails; find out why, for the one line."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        ok, data = cv2.imencode(".jpg", image)
        if not ok:
            raise OSError(f"cannot encode a {image.shape[1]}x{image.shape[0]} image as JPEG")
        path.write_bytes(data.tobytes())
    except OSError as exc:
        raise cannot_write(what, path, exc) from None
