"""A camera's loop: frames as they come, never building latency. At most one keyframe is with the model at a time
(keyframes are skipped, never queued); the live view gets each frame at once, the other outputs once the keyframe
before it is answered; a fault anywhere on the camera's path is a reconnect, never the run's end."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import CancelledError
from concurrent.futures import TimeoutError as FutureTimeout

from streamer.errors import StreamerError
from streamer.pipeline.events import status_event
from streamer.pipeline.reader import fault_reason, keeps_tracebacks
from streamer.pipeline.steps import Steps
from streamer.pipeline.task_tracking import Grey
from streamer.records import Frame, SourceStatus

log = logging.getLogger("streamer.source")
DRAIN_S = 5.0  # how long a stopping camera waits for its keyframe in flight
_REFAULT_S = 60.0  # a camera's second fault this soon after its first starts its tracking over


class CameraLoop(Steps):
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

    def _switched(self) -> None:
        """Detection switched off: the keyframe in flight is let go and the tracks end (`object_left`, reason
        `detect_off`); frames go on with no boxes, and tracking starts over (new ids) once it is back on."""
        detecting, self._detecting = self._detecting, self._on("detect")
        if detecting and not self._detecting and self.tracking is not None:
            self._let_go()
            self._release_held()
            tracking, self.tracking = self.tracking, None
            self._deliver(tracking.finish(self.last_frame, "detect_off"))
