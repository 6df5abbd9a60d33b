"""One source's run, after its reader: sampling, scheduling, tracking and events, handed to its outputs.

frame -> (keyframe -> model -> detections -> tracks -> events) -> outputs (`outputs.Outputs`). A `SourceRun` is
built with its opened reader, the keyframe model, the store and the process's shared outputs (and, for a run that
takes over from a dead one, a `Takeover`), and does one thing: `run(stop)`. The local pipeline and a Ray source
actor both drive it that way.

Files are processed deterministically and completely: frames wait in a bounded line until the keyframe after
them is tracked too, so each frame's boxes are interpolated between the keyframes around it (`motion`), while
the model works on later keyframes in parallel; nothing is dropped (back-pressure).

Cameras must never build latency: a camera has at most one keyframe with the model at a time and the reader drops
stale frames. The live view gets every frame at once, with its tracks where they are predicted on it; the other
outputs get a camera's frames once the keyframe they follow is answered (at most `live.hold_frames` behind it),
so the video and the tracks file show what the model saw on it.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError, Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path


from streamer.config import Config
from streamer.errors import StreamerError
from streamer.metrics import Metrics
from streamer.model.worker import KeyframeModel
from streamer.outputs.annotate import Annotator
from streamer.outputs.build import Outputs, source_outputs
from streamer.outputs.protocol import Output, Shown
from streamer.outputs.snapshots import Snapshots
from streamer.outputs.store import EventStore
from streamer.outputs.switches import Switches
from streamer.pipeline.events import status_event, worker_event
from streamer.pipeline.flow import small_grey
from streamer.pipeline.reader import Reader, fault_reason, keeps_tracebacks
from streamer.pipeline.sampler import Sampler
from streamer.pipeline.schedule import Schedule
from streamer.pipeline.stats import RunStats
from streamer.pipeline.task_tracking import Grey, SourceTracking, TaskTracking
from streamer.recording.recorder import Recorder, Segment
from streamer.records import Event, Frame, SourceStatus
from streamer.sources import is_url, scrub

log = logging.getLogger("streamer.source")
DRAIN_S = 5.0  # how long a stopping camera waits for its keyframe in flight
_REFAULT_S = 60.0  # a camera's second fault this soon after its first starts its tracking over
_RECENT_LATENCIES = 4096


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
    counted: RunStats | None = None  # what the dead run had counted, for a summary of the whole source
    closing: tuple[Event, ...] = ()  # `object_left` of the tracks the dead run left open (a camera's)


Jobs = list[tuple[TaskTracking, Future]]


class SourceRun:
    """One source from its opened reader to its outputs; see the module's docstring."""

    def __init__(self, spec: SourceSpec, config: Config, reader: Reader, model: KeyframeModel,
                 shared: Sequence[Output] = (), store: EventStore | None = None, takeover: Takeover | None = None,
                 metrics: Metrics | None = None, on_progress: Callable[[RunStats], None] | None = None,
                 switches: Switches | None = None) -> None:
        """`reader`: opened (`reader.open_reader`); `shared`: outputs of the process that serve every source
        (MQTT, webhooks, the live view; closed by whoever made them); `store`: shared with other sources;
        `metrics`: the process's histograms, if anyone serves them; `on_progress`: called with the stats after
        every frame, on this run's thread (read them there; keep a `.copy()`); `switches`: detection, recording
        and snapshots turned off and on while it runs."""
        self.spec = spec
        self.config = config
        self.reader = reader
        self.model = model
        self.shared = list(shared)
        self.store = store
        self.takeover = takeover or Takeover()
        self.metrics = metrics
        self.on_progress = on_progress
        self.switches = switches
        self._detecting = True  # the detect switch at the last frame
        self._still_sent = False  # the last keyframe sent was still (`Keyframe.still`)
        self._stats = RunStats(source=reader.name, live=reader.live, info=reader.info, events_path=spec.events_path,
                               tracks_path=spec.tracks_path, db_path=spec.db_path if store is not None else None,
                               video_path=spec.video_path)
        if self.takeover.counted is not None:
            before = self.takeover.counted
            self._stats.frames, self._stats.keyframes, self._stats.detections = (before.frames, before.keyframes,
                                                                                  before.detections)
            self._stats.events, self._stats.event_counts = before.events, dict(before.event_counts)
        self.run_id = uuid.uuid4().hex[:8] + "-"  # in the names of the files this run writes beside others'
        self.max_track_id = self.takeover.first_track_id - 1  # the highest track id in an event so far
        self._ids = itertools.count(self.takeover.first_track_id)  # the source's track ids, whatever tracks them
        self.last_frame: Frame | None = None
        self.latencies: deque[tuple[float, float]] = deque(maxlen=_RECENT_LATENCIES)  # (wall time, ms)
        self.sampler = Sampler(config.sampler)
        self.schedule = Schedule(config.tasks())
        self.annotator = Annotator()
        self.snapshots = Snapshots(spec.events_path.parent, self.run_id) if config.events.snapshots else None
        self.tracking: SourceTracking | None = None  # once the first frame tells the stream's rate and size
        self.outputs: Outputs | None = None
        self._held: list[Frame] = []  # frames waiting for the keyframe after (a file) or before (a camera) them
        self._inflight: tuple[Frame, Jobs] | None = None  # a camera's keyframe with the model
        self._faulted = False  # a camera's fault asked for a reconnect: its frames until then are let go
        self._last_fault = float("-inf")
        self._sent: set[int] = set()  # indices of held frames that went to the model

    def stats(self) -> RunStats:
        """A copy of the stats with the reader's own counters, which move even while no frame arrives."""
        stats = self._stats.copy()
        stats.dropped, stats.reconnects = self.reader.dropped, self.reader.reconnects
        recorder = self.reader.recorder
        if recorder is not None:
            stats.segments, stats.segments_deleted = recorder.segments, recorder.retention.deleted
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
            if self.reader.live and self.config.record.enabled and self.store is not None:
                self.reader.recorder = Recorder(self.store, self.reader.name, self.config.record, self.run_id,
                                                wanted=lambda: self._on("record"))
                stats.tracks_path = None  # beside each segment
            try:
                self.outputs = source_outputs(self.spec, self.config, lambda: self.reader.info, self.store,
                                              self.takeover.append, self.shared, self.takeover.replay,
                                              self.reader.live, self.run_id, self.reader.recorder)
            except BaseException:
                if self.reader.recorder is not None:
                    self.reader.recorder.close()  # its reader never started, so never closes it
                raise
            self._deliver(list(self.takeover.closing))
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
        pending: deque[tuple[Frame, Jobs, Grey | None]] = deque()
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
            grey = small_grey(frame.image) if self.sampler.looks else None
            keyframe = self._on("detect") and self.sampler.is_keyframe(frame, grey and grey[0])
            pending.append((frame, self._send(frame) if keyframe else [], grey))
            # 2. Frames whose keyframe is answered are tracked; a full line waits for its head.
            self._settle(pending, wait="head" if len(pending) + len(self._held) >= limit else "none")
        # 3. The end: every frame read is written. At the end of the file every keyframe still with the model is
        #    waited for; when asked to stop, those not answered yet are let go (their frames keep the tracks before).
        if stop.is_set():
            self._settle(pending, wait="none")
            for frame, jobs, grey in pending:
                self.tracking.look(frame, bool(jobs), grey)
                if jobs and all(future.done() and not future.cancelled() for _, future in jobs):
                    self._track(frame, jobs)
                for _, future in jobs:
                    future.cancel()
                self._hold(frame, limit)
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

    def _settle(self, pending: deque[tuple[Frame, Jobs, Grey | None]], wait: str) -> None:
        """Move the frames at the head of the line whose keyframe is answered on: each is looked at (its boxes
        followed), and held until the next keyframe is tracked, which writes the frames held before it. `wait`:
        "none" stops at the first keyframe still with the model, "head" waits for the first one only, "all" for
        every one."""
        while pending:
            frame, jobs, grey = pending[0]
            if jobs and wait == "none" and not all(future.done() for _, future in jobs):
                return
            self.tracking.look(frame, bool(jobs), grey)
            if jobs:
                self._track(frame, jobs)
                self._release_held()
                if wait == "head":
                    wait = "none"
            pending.popleft()
            self._hold(frame, self.config.pipeline.max_pending_frames)

    def _run_live(self, stop: threading.Event) -> None:
        """A camera until the stop. A fault anywhere on its path (sampling, the model's answer, tracking, events,
        an output: any exception but a `StreamerError`, which is an output that cannot go on) is the camera's,
        never the run's: it is logged, counted, and the camera reconnects (`_fault`)."""
        while True:
            try:
                self._live(stop)
                break
            except StreamerError:
                raise
            except Exception as exc:  # noqa: BLE001 - see the docstring
                if not self.reader.recovers:
                    raise
                self._fault(exc)
        # Stopping: the keyframe in flight gets a few seconds; one the model cannot finish is let go.
        if self._inflight is not None:
            try:
                for _, future in self._inflight[1]:
                    future.result(timeout=DRAIN_S)
                self._track(*self._inflight)
            except (FutureTimeout, CancelledError):
                return
            except StreamerError:
                raise
            except Exception as exc:  # noqa: BLE001 - a fault while stopping: the last answer is let go
                log.warning("%s: %s", self._stats.source, fault_reason(exc, self.spec.url))

    def _live(self, stop: threading.Event) -> None:
        for item in self.reader.frames(stop):
            # 1. A camera that went down or came back is an event, in stream order.
            if isinstance(item, SourceStatus):
                self._faulted = False
                self._deliver([status_event(item)])
                continue
            if self._faulted:  # frames read before the reconnect a fault asked for: let go
                continue
            frame = item
            self._switched()
            self._prepare(frame)
            grey = self.tracking.look(frame)
            # 2. The keyframe in flight, once answered, moves the tracks on (to this frame); the frames held behind
            #    it go out with them.
            inflight = self._inflight
            if inflight is not None and all(future.done() for _, future in inflight[1]):
                self._inflight = None
                self._track(*inflight)
                self._release_held()
            # 3. A new keyframe goes out only when none is in flight: keyframes are skipped, never queued. A still
            #    camera's keyframe that still waits behind others gives way to a frame where something moves.
            if self._inflight is not None and self._still_sent and self._detecting:
                self._moving(frame, grey)
            if self._inflight is None and self._detecting and self.sampler.is_keyframe(frame, grey and grey[0]):
                self._inflight = (frame, self._send(frame))
            self.tracking.keep_from = self._inflight[0].index if self._inflight is not None else None
            # 4. The live view shows the frame now; the other outputs get it once the keyframe before it is answered.
            self._preview(frame)
            self._hold(frame, self.config.live.hold_frames + 1)
            if self._inflight is None:
                self._release_held()
            # 5. Answers to questions about objects, as they come.
            self._answers()

    def _moving(self, frame: Frame, grey: Grey | None) -> None:
        """Something moves on a still camera whose keyframe has not reached the model yet (it waits behind
        other cameras', up to `pipeline.still_wait_s`): it is taken back and this frame goes instead, at once
        and not still, so a person crossing a quiet camera is seen now, not after the wait."""
        change = self.sampler.changed(frame, grey and grey[0])
        if change is None or change < self.config.pipeline.still_change:
            return
        waiting, jobs = self._inflight
        if not self.model.withdraw([future for _, future in jobs]):
            return  # the model has it already
        self._sent.discard(waiting.index)
        self.tracking.placed(waiting)
        self.sampler.take(frame, grey and grey[0])
        self._inflight = (frame, self._send(frame))

    def _fault(self, exc: Exception) -> None:
        """A fault on a camera's path: one log line (the traceback under --debug), counted, and a reconnect whose
        `source_down` says why. What was in hand for the broken step is let go (the keyframe in flight, the frames
        held behind it: the recording has them); the tracks stay. A second fault within `_REFAULT_S` of the first
        starts the tracking over (its open tracks end), in case its state is what fails."""
        reason = fault_reason(exc, self.spec.url)
        log.warning("%s: %s", self._stats.source, reason, exc_info=keeps_tracebacks())
        now = time.monotonic()
        self._stats.faults += 1
        self._let_go()
        self._held.clear()
        self._sent.clear()
        if self.tracking is not None and now - self._last_fault < _REFAULT_S:
            tracking, self.tracking = self.tracking, None
            try:
                self._deliver(tracking.finish(self.last_frame, "source_restarted"))
            except StreamerError:
                raise
            except Exception as again:  # noqa: BLE001 - the tracks are let go without their object_left
                log.warning("%s: open tracks dropped: %s", self._stats.source, fault_reason(again, self.spec.url))
        self._last_fault = now
        self._faulted = True
        self.reader.reconnect(reason)

    def _let_go(self) -> None:
        """A camera's keyframe in flight is let go: its answer will not be tracked."""
        if self._inflight is not None:
            for _, future in self._inflight[1]:
                future.cancel()
            self._inflight = None
            if self.tracking is not None:
                self.tracking.keep_from = None

    def _on(self, switch: str) -> bool:
        return self.switches is None or self.switches.on(self.reader.name, switch)

    def _switched(self) -> None:
        """Detection switched off: the keyframe in flight is let go and the tracks end (`object_left`, reason
        `detect_off`); frames go on with no boxes, and tracking starts over (new ids) once it is back on."""
        detecting, self._detecting = self._detecting, self._on("detect")
        if detecting and not self._detecting and self.tracking is not None:
            self._let_go()
            self._release_held()
            tracking, self.tracking = self.tracking, None
            self._deliver(tracking.finish(self.last_frame, "detect_off"))

    # -- the steps ----------------------------------------------------------------------------------------

    def _prepare(self, frame: Frame) -> None:
        """Trackers need the stream's rate and size; a camera may only say so with its first frame, and may come
        back from a reconnect at another size: then the tracks (in the old size's pixels) end and tracking starts
        over at the new one."""
        height, width = frame.image.shape[:2]
        if self.tracking is not None:
            if self.tracking.size == (width, height) or not self.reader.live:
                return  # a file that changes size is tracked on (its video scales); a camera starts over
            self._let_go()  # the keyframe in flight was asked in the old size's pixels
            self._release_held()
            tracking, self.tracking = self.tracking, None
            self._deliver(tracking.finish(self.last_frame, "source_restarted"))
        info = self._stats.info = self.reader.info
        if (info.width, info.height) != (width, height):
            info = self._stats.info = dataclasses.replace(info, width=width, height=height)
        rate = self.sampler.expected_rate(float(info.fps))
        self.tracking = SourceTracking(self.config, self.schedule.entries, rate, info, self._ids, self.model,
                                       self.reader.live)
        watcher = self.tracking.tasks[0].zones
        self.annotator.areas(watcher.polygons(), watcher.segments())

    def _send(self, frame: Frame) -> Jobs:
        """The keyframe to the model, once for each task the schedule runs on it; a camera's marked `still` when
        its picture hardly changed since its last keyframe and it holds no track."""
        self._stats.keyframes += 1
        self._sent.add(frame.index)
        change, pipeline = self.sampler.change, self.config.pipeline
        still = self.reader.live and change is not None and change < pipeline.still_change and not self.tracking.holding
        self._stats.still_keyframes += still
        self._still_sent = still
        jobs = self.schedule.jobs(frame, still)
        futures = self.model.submit_all([job for _, job in jobs])  # together: one image, several prompts
        return [(self.tracking.tasks[i], future) for (i, _), future in zip(jobs, futures)]

    def _track(self, frame: Frame, jobs: Jobs) -> None:
        """A keyframe's answers: tracks and events (with snapshots), and the latency."""
        for tracking, future in jobs:
            result = future.result()
            if result.worker_change is not None:
                kind, extra = result.worker_change
                self._deliver([worker_event(kind, frame, self._stats.source, **extra)])
            self._stats.detections += len(result.detections)
            self._deliver(self.tracking.update(tracking, frame, result, self._stats.keyframes), frame)
        self.tracking.placed(frame)
        self._answers()
        now = time.time()
        seconds = now - frame.wall_time
        self._stats.latency_ms = 1000.0 * seconds
        self.latencies.append((now, self._stats.latency_ms))
        if self.metrics is not None:
            self.metrics.latency.labels(self._stats.source).observe(seconds)

    def _answers(self, wait: bool = False) -> None:
        """Answers to per-object questions that are in: their events, each with a snapshot of the view asked
        about (the question's frame)."""
        if self.tracking is None:
            return
        for frame, events in self.tracking.answers(wait):
            self._deliver(events, frame)
        stats = self._stats
        stats.questions_asked, stats.questions_answered, stats.questions_dropped = self.tracking.question_counts()

    def _deliver(self, events: list[Event], frame: Frame | None = None) -> None:
        """Every event to the outputs (with snapshots cut from `frame`, where they are asked for); counted
        unless a run before this one delivered it."""
        if self.snapshots is not None and frame is not None and self._on("snapshots"):
            events = self.snapshots.add(frame, events)
        for event in events:
            if event.track_id is not None and event.track_id > self.max_track_id:
                self.max_track_id = event.track_id
            if self.outputs.event(event):
                self._stats.events += 1
                self._stats.event_counts[event.type] = self._stats.event_counts.get(event.type, 0) + 1

    def _hold(self, frame: Frame, limit: int) -> None:
        """A frame waits for the keyframe that settles its boxes; past `limit` frames held, the oldest goes out
        with the boxes predicted on it."""
        self._held.append(frame)
        while len(self._held) >= limit:
            self._write(self._held.pop(0))

    def _release_held(self) -> None:
        for frame in self._held:
            self._write(frame)
        self._held.clear()

    def _preview(self, frame: Frame) -> None:
        if self.outputs.previewing:
            self.outputs.preview(Shown(frame, self.tracking.peek(frame), self.annotator))

    def _write(self, frame: Frame) -> None:
        """The frame with its tracks to the outputs; what it needed kept for motion is let go."""
        tracks = self.tracking.take(frame)
        keyframe = frame.index in self._sent
        self._sent.discard(frame.index)
        self.outputs.frame(Shown(frame, tracks, self.annotator, keyframe))
        self.last_frame = frame
        self._stats.frames += 1
        if self.on_progress is not None:
            self.on_progress(self._stats)

    def _close(self) -> None:
        """Frames still held are written, open tracks end with the stream; then every output is closed, whatever
        fails first."""
        if self.outputs is None:
            return
        try:
            self._release_held()
            if self.tracking is not None:
                self._deliver(self.tracking.finish(self.last_frame))
            self._index_original()
        finally:
            self.outputs.close()

    def _index_original(self) -> None:
        """A file on disk is its own recording: indexed (a link, never a copy, never deleted by retention), so
        its events' clips are cut from it as a camera's are from its segments."""
        path = Path(self.spec.url)
        if (self.reader.live or self.store is None or not self.config.record.enabled or self.last_frame is None
                or is_url(self.spec.url) or not path.is_file()):
            return
        frame_s = 1.0 / float(self._stats.info.fps) if self._stats.info and self._stats.info.fps else 0.0
        self.store.add_segment(Segment(
            self._stats.source, str(path.resolve()), time.time() - self._stats.seconds, time.time(), 0.0,
            self.last_frame.pts + frame_s, 0, self.last_frame.index, path.stat().st_size, original=True,
            run=self.run_id, tracks=str(self.spec.tracks_path.resolve()) if self.spec.tracks_path else None))
