"""The model worker: one thread that owns the model and runs keyframes in batches.

Keyframes come in through a bounded queue and each gets a Future for its `FrameDetections`, so the stage after
the worker waits on results in frame order without reaching back into the worker. Whatever has queued up (up to
`max_batch`, waiting at most `max_wait_ms` for more) runs in one call per task.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from concurrent.futures import Future
from typing import Protocol

from streamer.config import ModelConfig
from streamer.metrics import Metrics
from streamer.records import FrameDetections, Keyframe

_POLL_S = 0.1


class Detector(Protocol):
    """What the worker drives: Florence-2 in the product, a scripted stand-in in tests."""

    def detect(self, keyframes: list[Keyframe]) -> list[FrameDetections]:
        """Answer every keyframe of one task, in order."""


class KeyframeModel(Protocol):
    """What a source's run sends its keyframes to: the `Worker` in this process, or a Ray model worker through
    its client (`streamer.cluster.model_worker.RemoteModel`)."""

    def submit(self, keyframe: Keyframe) -> Future:
        """Queue a keyframe; the Future gives its `FrameDetections` (or is cancelled when the model stops)."""


def load_detector(model: ModelConfig) -> Detector:
    """Florence-2 as the config says; a module-level function, so Ray sends it to a worker actor by name."""
    from streamer.florence import Florence2Detector

    return Florence2Detector(model)


class Worker:
    """A `KeyframeModel` in this process: the thread that owns the detector."""

    def __init__(self, detector: Detector, max_batch: int = 4, max_wait_ms: float = 0.0, queue_size: int = 64,
                 metrics: Metrics | None = None):
        self.detector = detector
        self.metrics = metrics
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        # Detection keyframes first: a question about an object (`Keyframe.question`) waits behind any of them.
        self._queue: queue.PriorityQueue[tuple[int, int, Keyframe, Future]] = queue.PriorityQueue(maxsize=queue_size)
        self._order = itertools.count()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="worker", daemon=True)
        self.batches = 0
        self.keyframes = 0
        self.busy_s = 0.0

    def start(self) -> None:
        self._thread.start()

    def submit(self, keyframe: Keyframe) -> Future:
        """Queue a keyframe; blocks while the queue is full, which slows the readers down (back-pressure)."""
        future: Future = Future()
        while True:
            if self._stop.is_set():
                future.cancel()
                return future
            try:
                self._queue.put((int(keyframe.question), next(self._order), keyframe, future), timeout=_POLL_S)
                return future
            except queue.Full:
                continue

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    def stop(self) -> None:
        """Stop after the batch in hand; queued keyframes are cancelled."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        while True:
            try:
                *_, future = self._queue.get_nowait()
            except queue.Empty:
                break
            future.cancel()

    def _gather(self) -> list[tuple[Keyframe, Future]]:
        try:
            batch = [self._queue.get(timeout=_POLL_S)]
        except queue.Empty:
            return []
        deadline = time.monotonic() + self.max_wait_s
        while len(batch) < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                batch.append(self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait())
            except queue.Empty:
                break
        return [(keyframe, future) for _, _, keyframe, future in batch]

    def _run(self) -> None:
        while not self._stop.is_set():
            batch = self._gather()
            by_task: dict[tuple[str, str | None], list[tuple[Keyframe, Future]]] = {}
            for item in batch:
                by_task.setdefault((item[0].task, item[0].prompt), []).append(item)
            for group in by_task.values():
                self._run_group(group)

    def _run_group(self, group: list[tuple[Keyframe, Future]]) -> None:
        live = [(k, f) for k, f in group if f.set_running_or_notify_cancel()]
        if not live:
            return
        started = time.perf_counter()
        try:
            results = self.detector.detect([k for k, _ in live])
            if len(results) != len(live):
                raise RuntimeError(f"detector answered {len(results)} of {len(live)} keyframes")
        except BaseException as exc:  # delivered to whoever waits on the keyframe
            for _, future in live:
                future.set_exception(exc)
            return
        finally:
            self.busy_s += time.perf_counter() - started
        self.batches += 1
        self.keyframes += len(live)
        if self.metrics is not None:
            self.metrics.batch_size.observe(len(live))
        for (_, future), result in zip(live, results):
            future.set_result(result)
