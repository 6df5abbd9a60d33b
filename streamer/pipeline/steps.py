"""The steps every frame of a source goes through, whichever loop reads it (`file_loop`, `camera_loop`): prepared
(the tracking made for the stream's rate and size), sent to the model when it is a keyframe, its answers tracked
into events, held until its boxes are settled, then written to the outputs with its tracks."""

from __future__ import annotations

import dataclasses
import time
from concurrent.futures import Future

from streamer.outputs.protocol import Shown
from streamer.pipeline.events import worker_event
from streamer.pipeline.task_tracking import SourceTracking, TaskTracking
from streamer.records import Event, Frame

Jobs = list[tuple[TaskTracking, Future]]


class Steps:
    """One source's steps; the state they share is made by `source_run.SourceRun`, which runs them."""

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
