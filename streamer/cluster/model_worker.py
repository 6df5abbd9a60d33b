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
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np
from PIL import Image

from streamer.errors import StreamerError
from streamer.records import Frame, FrameDetections, Keyframe
from streamer.worker import Detector, KeyframeModel, Worker


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


def cause_of(exc: BaseException) -> BaseException:
    """What an actor raised, out of the RayTaskError Ray wraps it in (anything else as it is)."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc


class ModelWorker:
    """The body of a model worker actor. A failed model load is kept and reported by `ready()`, so the driver
    can print its one line instead of Ray's traceback."""

    def __init__(self, make_detector: Callable[[], Detector], max_batch: int, max_wait_ms: float) -> None:
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
        self.worker = Worker(detector, max_batch=max_batch, max_wait_ms=max_wait_ms)
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

    def stop(self) -> None:
        if self.worker is not None:
            self.worker.stop()


@dataclass
class RemoteModel(KeyframeModel):
    """A source's way to the model workers, a `KeyframeModel`. The source prefers worker `first`; while Ray
    restarts a worker, its calls wait and are retried by Ray; a worker dead for good is dropped and the keyframe
    goes to the next one alive."""

    workers: list  # Ray actor handles of ModelWorker, in the driver's order
    first: int = 0
    input_size: tuple[int, int] | None = None
    shrink: bool = True

    def __post_init__(self) -> None:
        self._dead: set[int] = set()
        self._seen: dict[int, set[str]] = {}  # worker index -> incarnations that answered
        self._moved_from: int | None = None  # the worker that died for good, until another answers
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:
        return {"workers": self.workers, "first": self.first, "input_size": self.input_size, "shrink": self.shrink}

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
                out.set_exception(StreamerError("every model worker of the cluster is gone"))
            return
        ref = self.workers[index].detect.remote(wires)
        ref.future().add_done_callback(lambda done: self._answered(done, index, keyframes, wires, outs))

    def _answered(self, done: Future, index: int, keyframes: list[Keyframe], wires: list[Keyframe],
                  outs: list[Future]) -> None:
        from ray.exceptions import ActorDiedError

        try:
            answers, incarnation = done.result()
        except ActorDiedError:  # out of restarts, or its node is gone: move on to the next worker
            with self._lock:
                self._dead.add(index)
                self._moved_from = index
            self._send(keyframes, wires, outs)
        except BaseException as exc:
            for out in outs:
                out.set_exception(cause_of(exc))
        else:
            change = self._change(index, incarnation)  # worth one event, on the first task's answer
            for i, (keyframe, out, (detections, text)) in enumerate(zip(keyframes, outs, answers)):
                out.set_result(FrameDetections(keyframe, detections, text, worker_change=None if i else change))

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
