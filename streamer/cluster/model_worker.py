"""The model worker as a Ray actor, and the client a source uses to reach it from another process or host.

A `ModelWorker` actor owns one model (one GPU) and runs the same batching `Worker` as a single process: calls
from every source it serves arrive on the actor's threads at once and go into one batch. A source's
`RemoteModel` is a `KeyframeModel` like `Worker`, so the source's run is the same in both places. Keyframes
travel shrunk to the model's input size (and cropped to their zone), which is all the processor would keep of
them; answers come back in source pixels without the image. The client also notices when the worker behind its
answers changed (restarted, or replaced by another after it died) and says so on the first such answer.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np
from PIL import Image

from streamer.errors import StreamerError
from streamer.model.worker import Detector, KeyframeModel, Worker
from streamer.records import Frame, FrameDetections, Keyframe


def shrink(keyframe: Keyframe, size: tuple[int, int] | None) -> Keyframe:
    """The keyframe as a remote worker needs it: the zone's crop, resized to the model's input `size` (width,
    height) the way Florence-2's processor resizes (PIL bicubic), unless it is smaller already. The processor's
    own resize is then a no-op, so the model sees the same pixels as in one process."""
    frame = keyframe.frame
    height, width = frame.image.shape[:2]
    image = frame.image
    if keyframe.zone is not None:
        x1, y1, x2, y2 = keyframe.zone
        image = image[y1:y2, x1:x2]
    if size is not None and image.shape[0] * image.shape[1] > size[0] * size[1]:
        image = np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize(size, Image.Resampling.BICUBIC))
    image = np.ascontiguousarray(image)
    small = Frame(frame.source, frame.index, frame.pts, frame.wall_time, image, frame.camera_time)
    return dataclasses.replace(keyframe, frame=small, frame_size=(width, height))  # a question stays one


def where() -> str:
    """The node an actor runs on, as the driver prints it: its address and Ray's id for it."""
    import ray

    return f"node {ray.util.get_node_ip_address()} ({ray.get_runtime_context().get_node_id()[:8]})"


def cause_of(exc: BaseException) -> BaseException:
    """What an actor raised, out of the RayTaskError Ray wraps it in (anything else as it is)."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc


class ModelWorker:
    """The body of a model worker actor. A failed model load is kept and reported by `ready()`, so the driver
    can print its one line instead of Ray's traceback."""

    def __init__(self, make_detector: Callable[[], Detector], max_batch: int, max_wait_ms: float,
                 still_wait_s: float = 0.0) -> None:
        self.incarnation = uuid.uuid4().hex[:8]  # new on every (re)start
        self.error: str | None = None
        self.input_size: tuple[int, int] | None = None
        self.worker: Worker | None = None
        try:
            detector = make_detector()
        except StreamerError as exc:
            self.error = str(exc)
            return
        except Exception as exc:  # a bug or a broken install on that node: still one line at the driver
            self.error = f"the model worker could not start: {type(exc).__name__}: {exc}"
            return
        self.input_size = detector.input_size
        self.worker = Worker(detector, max_batch=max_batch, max_wait_ms=max_wait_ms, still_wait_s=still_wait_s)
        self.worker.start()

    def ready(self) -> dict:
        return {"error": self.error, "input_size": self.input_size}

    def detect(self, keyframes: list[Keyframe]):
        """One keyframe's tasks answered together: each one's detections and text, and which incarnation of this
        worker answered; blocks this actor thread, not the others."""
        if self.worker is None:
            raise StreamerError(self.error or "the model worker has no model")
        results = [future.result() for future in self.worker.submit_all(keyframes)]
        return [(result.detections, result.text) for result in results], self.incarnation

    def stats(self) -> dict:
        return {"incarnation": self.incarnation, "keyframes": self.worker.keyframes if self.worker else 0}

    def where(self) -> str:
        return where()

    def stop(self) -> None:
        if self.worker is not None:
            self.worker.stop()


@dataclass(eq=False)  # each call is itself: found in lists by identity
class _Call:
    """One keyframe's tasks on their way to worker `index`."""

    index: int
    keyframes: list
    wires: list
    outs: list
    sent: float
    abandoned: bool = False  # moved to another worker: a late answer from this one is not taken


@dataclass
class RemoteModel(KeyframeModel):
    """A source's way to the model workers, a `KeyframeModel`. The source prefers worker `first`; while Ray
    restarts a worker, its calls wait and are retried by Ray. A worker dead for good, or one that answers nothing
    (not even a ping) for `restart_timeout_s` (restarting where it cannot be placed: its node is gone), is dropped
    and its keyframes go to the next one alive; with none left, they fail (the source ends, saying so)."""

    workers: list  # Ray actor handles of ModelWorker, in the driver's order
    first: int = 0
    input_size: tuple[int, int] | None = None
    shrink: bool = True
    restart_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        self._dead: set[int] = set()
        self._seen: dict[int, set[str]] = {}  # worker index -> incarnations that answered
        self._moved_from: int | None = None  # the worker that died for good, until another answers
        self._lock = threading.Lock()
        self._calls: list[_Call] = []  # on their way
        self._heard: dict[int, float] = {}  # worker index -> when it last answered anything
        self._pinging: set[int] = set()
        self._watchdog: threading.Thread | None = None

    def __getstate__(self) -> dict:
        return {"workers": self.workers, "first": self.first, "input_size": self.input_size, "shrink": self.shrink,
                "restart_timeout_s": self.restart_timeout_s}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.__post_init__()

    def _pick(self) -> int | None:
        n = len(self.workers)
        with self._lock:
            return next((i for i in ((self.first + k) % n for k in range(n)) if i not in self._dead), None)

    def submit(self, keyframe: Keyframe) -> Future:
        return self.submit_all([keyframe])[0]

    def submit_all(self, keyframes: list[Keyframe]) -> list[Future]:
        """One keyframe's tasks in one call to a worker, which batches them together."""
        if not keyframes:
            return []
        outs = [Future() for _ in keyframes]
        wires = [shrink(k, self.input_size) if self.shrink else k for k in keyframes]
        self._send(keyframes, wires, outs)
        return outs

    def _send(self, keyframes: list[Keyframe], wires: list[Keyframe], outs: list[Future]) -> None:
        index = self._pick()
        if index is None:
            for out in outs:
                if not out.done():
                    out.set_exception(StreamerError("every model worker of the cluster is gone (dead, or silent "
                                                    "for cluster.restart_timeout_s)"))
            return
        call = _Call(index, keyframes, wires, outs, time.monotonic())
        with self._lock:
            self._calls.append(call)
            if self._watchdog is None or not self._watchdog.is_alive():
                self._watchdog = threading.Thread(target=self._watch, name="worker-watchdog", daemon=True)
                self._watchdog.start()
        ref = self.workers[index].detect.remote(wires)
        ref.future().add_done_callback(lambda done: self._answered(done, call))

    def _answered(self, done: Future, call: _Call) -> None:
        from ray.exceptions import ActorDiedError

        with self._lock:
            if call in self._calls:
                self._calls.remove(call)
            if call.abandoned:
                return
            self._heard[call.index] = time.monotonic()
        try:
            answers, incarnation = done.result()
        except ActorDiedError:  # out of restarts, or its node is gone: move on to the next worker
            self._lost(call.index)
            self._send(call.keyframes, call.wires, call.outs)
        except BaseException as exc:
            for out in call.outs:
                out.set_exception(cause_of(exc))
        else:
            change = self._change(call.index, incarnation)  # worth one event, on the first task's answer
            for i, (keyframe, out, (detections, text)) in enumerate(zip(call.keyframes, call.outs, answers)):
                out.set_result(FrameDetections(keyframe, detections, text, worker_change=None if i else change))

    def _lost(self, index: int) -> None:
        with self._lock:
            self._dead.add(index)
            self._moved_from = index

    def _watch(self) -> None:
        """While calls are on their way: ping each worker they wait on (one ping in flight each); one silent for
        `restart_timeout_s` since it last answered (or since the oldest call to it) is lost, and its calls go to
        the next worker. Ends when nothing is on its way."""
        while True:
            with self._lock:
                if not self._calls:
                    self._watchdog = None
                    return
                waiting: dict[int, float] = {}
                for call in self._calls:
                    waiting[call.index] = min(waiting.get(call.index, call.sent), call.sent)
                to_ping = [i for i in waiting if i not in self._pinging]
                self._pinging.update(to_ping)
            for index in to_ping:
                self._ping(index)
            now = time.monotonic()
            for index, oldest in waiting.items():
                if now - max(self._heard.get(index, oldest), oldest) >= self.restart_timeout_s:
                    self._move_off(index)
            time.sleep(min(1.0, self.restart_timeout_s / 4))

    def _ping(self, index: int) -> None:
        def heard(done: Future) -> None:
            with self._lock:
                self._pinging.discard(index)
                if done.exception() is None:
                    self._heard[index] = time.monotonic()

        self.workers[index].stats.remote().future().add_done_callback(heard)

    def _move_off(self, index: int) -> None:
        """Worker `index` is silent: every call waiting on it goes to the next worker alive."""
        with self._lock:
            stuck = [call for call in self._calls if call.index == index and not call.abandoned]
            for call in stuck:
                call.abandoned = True
                self._calls.remove(call)
        if not stuck:
            return
        self._lost(index)
        for call in stuck:
            self._send(call.keyframes, call.wires, call.outs)

    def _change(self, index: int, incarnation: str) -> tuple[str, dict[str, str]] | None:
        """The first answer of a restarted worker, or of another one after a worker died, is worth an event.
        Answers from before a restart may still come in after it: they are not."""
        with self._lock:
            seen = self._seen.setdefault(index, set())
            if incarnation in seen:
                return None
            seen.add(incarnation)
            if len(seen) > 1:
                return "worker_restarted", {"worker": f"worker-{index}"}
            if self._moved_from is not None and self._moved_from != index:
                moved, self._moved_from = self._moved_from, None
                return "worker_lost", {"worker": f"worker-{moved}", "moved_to": f"worker-{index}"}
            return None
