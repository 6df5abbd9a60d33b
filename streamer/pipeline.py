"""The pipeline for one source: reader thread -> sampler -> worker thread -> tracker -> events -> sinks.

Frames wait in a bounded pending line until the keyframe before them has its detections, so every frame of the
output is drawn with the tracks of the latest keyframe at or before it, deterministically, while the model works
on later keyframes in parallel. A stop request (SIGINT/SIGTERM) ends reading, finishes what is pending, and closes
the outputs.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

from streamer.annotate import Annotator
from streamer.config import Config, TaskEntry
from streamer.errors import StreamerError
from streamer.events import EventMaker
from streamer.reader import Reader
from streamer.records import Event, Frame, FrameDetections, StreamInfo, Tracks
from streamer.sampler import Sampler
from streamer.schedule import Schedule
from streamer.sinks import JsonlSink, VideoSink
from streamer.tracker import Tracker
from streamer.worker import Detector, Worker


@dataclass
class RunStats:
    """What a run did; updated as it goes, for the progress bar and the summary."""

    source: str
    info: StreamInfo | None = None
    frames: int = 0
    keyframes: int = 0
    detections: int = 0
    events: int = 0
    event_counts: dict[str, int] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    seconds: float = 0.0  # processing time, after the model has loaded
    load_seconds: float = 0.0
    video_path: Path | None = None
    events_path: Path | None = None
    stopped_early: bool = False

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


class _Branch:
    """Tracks and events of one scheduled task of one source."""

    def __init__(self, config: Config, entry: TaskEntry, keyframe_rate: float, source: str, ids) -> None:
        # A task that runs every few keyframes (or seconds) cannot see a track more often than that.
        period = max(entry.every_n_keyframes / keyframe_rate, entry.every_s or 0.0)
        tracking = config.tracker.model_copy(update={"lost_after_s": max(config.tracker.lost_after_s, period)})
        self.tracker = Tracker(tracking, 1.0 / period, ids)
        self.events = EventMaker(source, tracking.lost_after_s)
        self.latest: Tracks | None = None

    def update(self, frame: Frame, result: FrameDetections) -> list[Event]:
        self.latest = Tracks(frame, self.tracker.update(result), keyframe=True)
        return self.events.update(self.latest, result.keyframe.task, result.text)


class Pipeline:
    def __init__(self, config: Config, make_detector: Callable[[], Detector]) -> None:
        """`make_detector` is called once the source has opened, so bad input fails before a slow model load."""
        self.config = config
        self.make_detector = make_detector
        self._stop = threading.Event()

    def stop(self) -> None:
        """Ask a running `run` to wind down; safe from a signal handler."""
        self._stop.set()

    def run(
        self,
        source: str,
        video_path: Path | None,
        events_path: Path,
        on_progress: Callable[[RunStats], None] | None = None,
    ) -> RunStats:
        cfg = self.config
        reader = Reader(source, queue_size=cfg.pipeline.frame_queue)
        stats = RunStats(source=reader.name)
        stats.info = info = reader.open()
        sampler = Sampler(cfg.sampler)
        schedule = Schedule(cfg.tasks())
        rate = sampler.expected_rate(float(info.fps))
        ids = itertools.count()
        branches = [_Branch(cfg, entry, rate, info.source, ids) for entry in schedule.entries]
        annotator = Annotator()
        try:
            worker = Worker(self.make_detector(), max_batch=cfg.model.batch_size, max_wait_ms=cfg.model.max_wait_ms)
        except BaseException:
            reader.stop()
            raise
        stats.load_seconds = time.monotonic() - stats.started
        stats.started = time.monotonic()
        video = None
        log = None
        pending: deque[tuple[Frame, list[tuple[_Branch, Future]]]] = deque()
        last_frame: Frame | None = None

        def emit(events: list[Event]) -> None:
            for event in events:
                log.write(event)
                stats.events += 1
                stats.event_counts[event.type] = stats.event_counts.get(event.type, 0) + 1

        def settle(wait: str) -> None:
            """Track, log, draw and write the frames at the head of the line whose keyframe is answered.

            `wait`: "none" stops at the first unanswered keyframe, "head" waits for the first one only (the line
            is full), "all" waits for every one (the end of the run).
            """
            nonlocal last_frame
            while pending:
                frame, jobs = pending[0]
                if jobs:
                    if wait == "none" and not all(future.done() for _, future in jobs):
                        return
                    for branch, future in jobs:
                        result = future.result()
                        stats.detections += len(result.detections)
                        emit(branch.update(frame, result))
                    if wait == "head":
                        wait = "none"
                pending.popleft()
                if video is not None:
                    video.write(annotator.draw(frame.image, [b.latest for b in branches if b.latest is not None]))
                last_frame = frame
                stats.frames += 1
                if on_progress is not None:
                    on_progress(stats)

        try:
            # Outputs are created only now, after the source opened; a bad input leaves old files alone.
            if video_path is not None:
                video = VideoSink(video_path, info, cfg.output.codec, cfg.output.preset, cfg.output.crf)
                stats.video_path = video_path
            log = JsonlSink(events_path)
            stats.events_path = events_path
            worker.start()
            reader.start()
            failure: StreamerError | None = None
            try:
                for frame in reader.frames(stop=self._stop):
                    jobs = []
                    if sampler.is_keyframe(frame):
                        jobs = [(branches[i], worker.submit(job)) for i, job in schedule.jobs(frame)]
                        stats.keyframes += 1
                    pending.append((frame, jobs))
                    settle("head" if len(pending) >= cfg.pipeline.max_pending_frames else "none")
            except StreamerError as exc:  # a decode error: keep every frame read so far, then report it
                failure = exc
            stats.stopped_early = self._stop.is_set()
            settle("all")
            for branch in branches:
                emit(branch.events.finish(last_frame))
            if failure is not None:
                raise failure
            if not stats.stopped_early and info.total_frames and stats.frames < info.total_frames:
                raise StreamerError(
                    f"{info.source} ended after {stats.frames} of its {info.total_frames} frames: "
                    "the file is truncated or corrupt (the outputs hold what was read)"
                )
        finally:
            reader.stop()
            worker.stop()
            stats.seconds = time.monotonic() - stats.started
            try:
                if video is not None:
                    video.close()
            finally:
                if log is not None:
                    log.close()
        return stats
