"""One scheduled task of one source, from its keyframes' answers to its tracks on every frame and its events.

keyframe answer -> tracker -> tracks -> events (appear, leave, text, zones) and boxes on every frame (`motion`),
and the questions asked about the tracks (`questions`), all for one task of the schedule.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from streamer.config import Config, TaskEntry
from streamer.events import EventMaker
from streamer.motion import Motion
from streamer.questions import Questions
from streamer.records import Event, Frame, FrameDetections, FrameTracks, StreamInfo, Tracks
from streamer.tracker import Tracker
from streamer.worker import KeyframeModel
from streamer.zones import ZoneWatcher


class TaskTracking:
    """Tracks, their boxes on every frame, and the events of one scheduled task of one source."""

    def __init__(self, config: Config, entry: TaskEntry, keyframe_rate: float, info: StreamInfo, ids,
                 model: KeyframeModel | None = None, live: bool = False) -> None:
        # A task that runs every few keyframes (or seconds) cannot see a track more often than that.
        period = max(entry.every_n_keyframes / keyframe_rate, entry.every_s or 0.0)
        tracking = config.tracker.model_copy(update={"lost_after_s": max(config.tracker.lost_after_s, period)})
        self.task = entry.task
        self.tracker = Tracker(tracking, 1.0 / period, ids)
        self.events = EventMaker(info.source, config.events.ocr_min_votes, config.events.ocr_window)
        self.zones = ZoneWatcher(config.events, info.source, info.width, info.height)
        self.motion = Motion()
        self.latest: Tracks | None = None
        objects = config.objects
        self.questions = (Questions(objects, config.model.object_share, model, behind=live)
                          if model is not None and (objects.describe or objects.read) else None)

    def step(self, frame: Frame, grey: np.ndarray | None) -> None:
        self.motion.step(frame, grey)

    def update(self, frame: Frame, result: FrameDetections, grey: np.ndarray, scale: int,
               later: Sequence[tuple[int, float, np.ndarray]] = (), keyframes: int = 0) -> list[Event]:
        """A keyframe's answer (the keyframe stepped already): tracks, the events they make, their boxes on the
        frames held before it and stepped after it, and the questions about them (`keyframes`: the source's
        detection keyframes so far, which the questions' share is counted against)."""
        tracks = self.tracker.update(frame, result.detections, self.motion.predicted(frame.index))
        events = self.events.update(tracks, result.keyframe.task, result.text)
        self.latest = tracks.seen()
        events += self.zones.update(self.latest)
        events += self._zone_exits(events, frame)
        ids = tracks.detections.tracker_id
        texts = [self.events.label_text(int(t)) for t in ids]
        self.motion.keyframe(tracks, grey, scale, texts, self.tracker.velocities(), later)
        if self.questions is not None:
            self.questions.ended(tracks.ended)
            self.questions.consider(tracks, keyframes, self.events.settled)
        return events

    def answers(self, wait: bool = False) -> list[tuple[Frame, list[Event]]]:
        """Events from the answers to questions about this task's tracks (with `wait`, every one asked), each
        with the frame it was asked about."""
        if self.questions is None:
            return []
        out = []
        for question, result in self.questions.answered(wait):
            said = result.text or ""
            made = (self.events.read(question.frame, question.track_id, said) if question.kind == "read"
                    else self.events.described(question.frame, question.track_id, said))
            out.append((question.frame, [dataclasses.replace(e, bbox=question.bbox) for e in made]))
        return out

    def take(self, frame: Frame) -> FrameTracks:
        return FrameTracks(frame, self.task, self.motion.take(frame))

    def finish(self, frame: Frame | None) -> list[Event]:
        events = self.events.finish(frame)
        return events + self._zone_exits(events, frame)

    def _zone_exits(self, events: list[Event], frame: Frame | None) -> list[Event]:
        return [e for left in events if left.type == "object_left" for e in self.zones.track_ended(left.track_id, frame)]
