"""The pipeline for one source: reader thread -> sampler -> worker thread -> tracker -> events -> sinks.

Frames wait in a bounded pending line until the keyframe before them has its detections, so every frame of the
output is drawn with the tracks of the latest keyframe at or before it, deterministically, while the model works
on later keyframes in parallel. A stop request (SIGINT/SIGTERM) ends reading, finishes what is pending, and closes
the outputs.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

import supervision as sv

from streamer.annotate import Annotator
from streamer.config import Config
from streamer.errors import StreamerError
from streamer.events import EventMaker
from streamer.reader import Reader
from streamer.records import Event, Frame, Keyframe, StreamInfo, Tracks
from streamer.sampler import Sampler
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


def _empty_tracks(frame: Frame) -> Tracks:
    detections = sv.Detections.empty()
    detections.tracker_id = detections.class_id = None
    return Tracks(frame, detections, keyframe=False)


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
        tracker = Tracker(cfg.tracker, sampler.expected_rate(float(info.fps)))
        maker = EventMaker(info.source, cfg.tracker.lost_after_s)
        annotator = Annotator()
        try:
            worker = Worker(self.make_detector(), max_batch=cfg.model.batch_size)
        except BaseException:
            reader.stop()
            raise
        stats.load_seconds = time.monotonic() - stats.started
        stats.started = time.monotonic()
        video = None
        log = None
        pending: deque[tuple[Frame, Future | None]] = deque()
        latest: Tracks | None = None
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
            nonlocal latest, last_frame
            while pending:
                frame, future = pending[0]
                if future is not None:
                    if wait == "none" and not future.done():
                        return
                    result = future.result()
                    tracked = tracker.update(result)
                    latest = Tracks(frame, tracked, keyframe=True)
                    stats.detections += len(result.detections)
                    emit(maker.update(latest, result.keyframe.task, result.text))
                    if wait == "head":
                        wait = "none"
                pending.popleft()
                if video is not None:
                    video.write(annotator.draw(frame.image, latest or _empty_tracks(frame)))
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
                    future = None
                    if sampler.is_keyframe(frame):
                        future = worker.submit(Keyframe(frame, cfg.model.task, cfg.model.prompt))
                        stats.keyframes += 1
                    pending.append((frame, future))
                    settle("head" if len(pending) >= cfg.pipeline.max_pending_frames else "none")
            except StreamerError as exc:  # a decode error: keep every frame read so far, then report it
                failure = exc
            stats.stopped_early = self._stop.is_set()
            settle("all")
            emit(maker.finish(last_frame))
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
