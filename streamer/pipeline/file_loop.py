"""A file's loop: every frame, deterministically. Frames wait in a bounded line until the keyframe after them is
tracked too, so each frame's boxes are interpolated between the keyframes around it, while the model works on
later keyframes in parallel; nothing is dropped (back-pressure)."""

from __future__ import annotations

import threading
from collections import deque

from streamer.errors import StreamerError
from streamer.pipeline.flow import small_grey
from streamer.pipeline.steps import Jobs, Steps
from streamer.pipeline.task_tracking import Grey
from streamer.records import Frame


class FileLoop(Steps):
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
