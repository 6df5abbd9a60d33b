"""The model worker: one thread that owns the model and runs keyframes in batches.

Keyframes come in through a bounded queue and each gets a Future for its `FrameDetections`, so the stage after
the worker waits on results in frame order without reaching back into the worker. Whatever has queued up (up to
`max_batch`, waiting at most `max_wait_ms` for more) runs in one call, whatever its tasks; the tasks of one
keyframe are queued as one item, so they always share a call (one image, several prompts decoded together).
"""

from __future__ import annotations

import itertools
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Protocol

from streamer.config import ModelConfig
from streamer.interrupts import held_back
from streamer.metrics import Metrics
from streamer.records import FrameDetections, Keyframe

_POLL_S = 0.1


class Detector(Protocol):
    """What the worker drives: Florence-2 in the product, a scripted stand-in in tests."""

    # The (width, height) the model resizes every image to, so a remote source sends keyframes no larger;
    # None: it takes them as they are.
    input_size: tuple[int, int] | None

    def detect(self, keyframes: list[Keyframe]) -> list[FrameDetections]:
        """Answer every keyframe, in order; their tasks may differ."""


class KeyframeModel(Protocol):
    """What a source's run sends its keyframes to: the `Worker` in this process, or a Ray model worker through
    its client (`streamer.cluster.model_worker.RemoteModel`)."""

    def submit(self, keyframe: Keyframe) -> Future:
        """Queue a keyframe; the Future gives its `FrameDetections` (or is cancelled when the model stops)."""

    def submit_all(self, keyframes: list[Keyframe]) -> list[Future]:
        """Queue one keyframe's tasks to be answered together where the model can (one after another here)."""
        return [self.submit(keyframe) for keyframe in keyframes]

    def withdraw(self, futures: list[Future]) -> bool:
        """Take back a keyframe (its tasks' Futures, as `submit_all` gave them) the model has not begun: True
        when it was still waiting, and its Futures are cancelled; False (nothing changed) once it has begun, or
        where the model cannot tell."""
        return False


def load_detector(model: ModelConfig) -> Detector:
    """Florence-2 as the config says; a module-level function, so Ray sends it to a worker actor by name."""
    with held_back():  # torch imports with it
        from streamer.model.florence import Florence2Detector

    return Florence2Detector(model)


@dataclass(slots=True)
class _Waiting:
    """One keyframe's tasks and their Futures, waiting for the model."""

    question: int  # 1: a question about an object, which waits behind every detection keyframe
    still: bool  # a still camera's (`Keyframe.still`)
    since: float  # monotonic
    order: int
    keyframes: list[Keyframe]
    futures: list[Future]


class _Line:
    """The keyframes waiting for the model, at most `size`. The next one out: detection keyframes before
    questions; among those, a still camera's behind the others unless it has waited `still_wait_s` (so the
    model's time goes where something moves, and a still camera is still asked at that floor rate); otherwise
    first come, first served. A few dozen items at most: looked through whole."""

    def __init__(self, size: int, still_wait_s: float) -> None:
        self.size = size
        self.still_wait_s = still_wait_s
        self._items: list[_Waiting] = []
        self._changed = threading.Condition()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: _Waiting, timeout: float) -> bool:
        with self._changed:
            if not self._changed.wait_for(lambda: len(self._items) < self.size, timeout):
                return False
            self._items.append(item)
            self._changed.notify_all()
            return True

    def withdraw(self, futures: list[Future]) -> bool:
        """Take out the item of these Futures if it is still waiting (atomically: the worker never gets it)."""
        with self._changed:
            for item in self._items:
                if item.futures == futures:
                    self._items.remove(item)
                    self._changed.notify_all()
                    for future in futures:
                        future.cancel()
                    return True
        return False

    def get(self, timeout: float) -> _Waiting | None:
        with self._changed:
            if not self._changed.wait_for(lambda: self._items, timeout):
                return None
            now = time.monotonic()
            best = min(self._items, key=lambda i: (i.question, i.still and now - i.since < self.still_wait_s,
                                                   i.order))
            self._items.remove(best)
            self._changed.notify_all()
            return best


class Worker(KeyframeModel):
    """A `KeyframeModel` in this process: the thread that owns the detector."""

    def __init__(self, detector: Detector, max_batch: int = 4, max_wait_ms: float = 0.0, queue_size: int = 64,
                 metrics: Metrics | None = None, still_wait_s: float = 0.0):
        """`still_wait_s`: how long a still camera's keyframe (`Keyframe.still`) may wait behind others."""
        self.detector = detector
        self.metrics = metrics
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        self._queue = _Line(queue_size, still_wait_s)
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
        return self.submit_all([keyframe])[0]

    def submit_all(self, keyframes: list[Keyframe]) -> list[Future]:
        """Queue one keyframe's tasks as one item: a batch takes all of them or none."""
        if not keyframes:
            return []
        futures = [Future() for _ in keyframes]
        item = _Waiting(int(any(k.question for k in keyframes)), all(k.still for k in keyframes), time.monotonic(),
                        next(self._order), list(keyframes), futures)
        while not self._stop.is_set():
            if self._queue.put(item, timeout=_POLL_S):
                return futures
        for future in futures:
            future.cancel()
        return futures

    def withdraw(self, futures: list[Future]) -> bool:
        return self._queue.withdraw(futures)

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    def stop(self) -> None:
        """Stop after the batch in hand; queued keyframes are cancelled."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        while (item := self._queue.get(0)) is not None:
            for future in item.futures:
                future.cancel()

    def _gather(self) -> list[_Waiting]:
        first = self._queue.get(_POLL_S)
        if first is None:
            return []
        items, size = [first], len(first.keyframes)
        deadline = time.monotonic() + self.max_wait_s
        while size < self.max_batch:
            item = self._queue.get(max(0.0, deadline - time.monotonic()))
            if item is None:
                break
            items.append(item)
            size += len(item.keyframes)
        return items

    def _run(self) -> None:
        while not self._stop.is_set():
            items = self._gather()
            # Questions go in calls of their own, after the detection keyframes they were gathered with.
            for question in (0, 1):
                for call in self._calls([item for item in items if item.question == question]):
                    self._run_group(call)

    def _calls(self, items: list) -> list[list[tuple[Keyframe, Future]]]:
        """Whole items packed into calls of at most `max_batch` (an item with more tasks than that is cut)."""
        calls: list[list[tuple[Keyframe, Future]]] = []
        for item in items:
            keyframes, futures = item.keyframes, item.futures
            if not calls or len(calls[-1]) + len(keyframes) > self.max_batch:
                calls.append([])
            calls[-1].extend(zip(keyframes, futures))
        return [call[i : i + self.max_batch] for call in calls for i in range(0, len(call), self.max_batch)]

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
