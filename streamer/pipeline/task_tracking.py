"""One scheduled task of one source, from its keyframes' answers to its tracks on every frame and its events.

keyframe answer -> tracker -> tracks -> events (appear, leave, text, zones) and boxes on every frame (`motion`),
and the questions asked about the tracks (`questions`), all for one task of the schedule.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Iterator, Sequence

import numpy as np

from streamer.config import Config, TaskEntry
from streamer.model.worker import KeyframeModel
from streamer.pipeline.events import EventMaker
from streamer.pipeline.flow import small_grey
from streamer.pipeline.motion import Motion
from streamer.pipeline.questions import Questions
from streamer.pipeline.tracker import Tracker
from streamer.pipeline.zones import ZoneWatcher
from streamer.records import Event, Frame, FrameDetections, FrameTracks, StreamInfo, Tracks


class TaskTracking:
    """Tracks, their boxes on every frame, and the events of one scheduled task of one source."""

    def __init__(self, config: Config, entry: TaskEntry, keyframe_rate: float, info: StreamInfo, ids,
                 model: KeyframeModel | None = None, live: bool = False) -> None:
        # A task that runs every few keyframes (or seconds) cannot see a track more often than that.
        period = max(entry.every_n_keyframes / keyframe_rate, entry.every_s or 0.0)
        tracking = config.tracker.model_copy(update={"lost_after_s": max(config.tracker.lost_after_s, period)})
        self.task = entry.task
        self.watch = entry.watch_min_confidence  # a watch: only `phrase_seen`, from boxes this sure or more
        self.phrase = entry.prompt
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
        detections = result.detections
        if self.watch is not None and len(detections):
            sure = detections.confidence if detections.confidence is not None else np.ones(len(detections))
            detections = detections[sure >= self.watch]
        tracks = self.tracker.update(frame, detections, self.motion.predicted(frame.index))
        events = self.events.update(tracks, result.keyframe.task, result.text)
        self.latest = tracks.seen()
        if self.watch is not None:
            events = [self._seen(e) for e in events if e.type == "object_appeared"]
        else:
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

    def finish(self, frame: Frame | None, reason: str = "stream_ended") -> list[Event]:
        events = self.events.finish(frame, reason)
        return [] if self.watch is not None else events + self._zone_exits(events, frame)

    def _seen(self, appeared: Event) -> Event:
        """A watch's track confirmed: the phrase was seen (once per track)."""
        return dataclasses.replace(appeared, type="phrase_seen", label=self.phrase,
                                   extra={**appeared.extra, "phrase": self.phrase})

    def _zone_exits(self, events: list[Event], frame: Frame | None) -> list[Event]:
        return [e for left in events if left.type == "object_left" for e in self.zones.track_ended(left.track_id, frame)]


Grey = tuple[np.ndarray, int]  # a frame's small grey image and its step (`flow.small_grey`)
_RECENT_LOOKS = 150  # a camera's frames (small grey images) kept to follow tracks over a slow model's answer


class SourceTracking:
    """Every scheduled task's tracking of one source, and the small grey images they need kept: a keyframe's
    until it is answered, and a camera's frames after its keyframe in flight (`keep_from`), which its tracks are
    followed over when the answer comes."""

    def __init__(self, config: Config, entries: list[TaskEntry], keyframe_rate: float, info: StreamInfo,
                 ids: Iterator[int], model: KeyframeModel | None, live: bool) -> None:
        """`ids`: the source's track ids, shared by its tasks (and by the tracking that follows this one, when a
        camera's tracking starts over: an id is never given twice)."""
        self.size = (info.width, info.height)
        self.tasks = [TaskTracking(config, entry, keyframe_rate, info, ids, model, live) for entry in entries]
        self.live = live
        self.keep_from: int | None = None
        self._looks: dict[int, Grey] = {}
        self._recent: deque[tuple[int, float, np.ndarray]] = deque(maxlen=_RECENT_LOOKS)

    @property
    def holding(self) -> bool:
        """Whether any task holds a track (young, confirmed, or lost and looked for)."""
        return any(tracking.tracker.holding for tracking in self.tasks)

    def look(self, frame: Frame, keyframe: bool = True, grey: Grey | None = None) -> Grey | None:
        """Every frame, in order: its small grey image (`grey`, if the sampler made it already), and each task's
        boxes followed onto it."""
        live = self.live and self.keep_from is not None  # a camera's keyframe is in flight
        if not (keyframe or live or any(tracking.motion.needs_image for tracking in self.tasks)):
            for tracking in self.tasks:  # nothing to measure flow on this frame: no need to look at it
                tracking.step(frame, None if grey is None else grey[0])
            return grey
        grey = grey or small_grey(frame.image)
        for tracking in self.tasks:
            tracking.step(frame, grey[0])
        if keyframe:
            self._looks[frame.index] = grey
        if live:
            self._recent.append((frame.index, frame.pts, grey[0]))
        return grey

    def update(self, tracking: TaskTracking, frame: Frame, result: FrameDetections, keyframes: int) -> list[Event]:
        """One task's answer on a keyframe that was looked at (see `TaskTracking.update`)."""
        grey, scale = self._looks[frame.index]
        later = [look for look in self._recent if look[0] > frame.index]
        return tracking.update(frame, result, grey, scale, later, keyframes)

    def placed(self, frame: Frame) -> None:
        """Every answer on the keyframe is in: its image is no longer needed."""
        self._looks.pop(frame.index, None)

    def answers(self, wait: bool = False) -> list[tuple[Frame, list[Event]]]:
        return [answer for tracking in self.tasks for answer in tracking.answers(wait)]

    def take(self, frame: Frame) -> list[FrameTracks]:
        """The tracks on `frame`, one `FrameTracks` per task, for it to be written; what it needed kept is let
        go, unless a camera's keyframe in flight needs it."""
        tracks = [tracking.take(frame) for tracking in self.tasks]
        keep = frame.index + 1 if self.keep_from is None else min(frame.index + 1, self.keep_from)
        for tracking in self.tasks:
            tracking.motion.forget(keep)
        for index in [i for i in self._looks if i <= frame.index and i != self.keep_from]:
            del self._looks[index]
        while self._recent and self._recent[0][0] < keep:
            self._recent.popleft()
        return tracks

    def peek(self, frame: Frame) -> list[FrameTracks]:
        """The tracks predicted on `frame` now (a camera's live view), letting nothing go."""
        return [tracking.take(frame) for tracking in self.tasks]

    def finish(self, frame: Frame | None, reason: str = "stream_ended") -> list[Event]:
        return [event for tracking in self.tasks for event in tracking.finish(frame, reason)]

    def question_counts(self) -> tuple[int, int, int]:
        """Questions asked, answered and dropped, over every task."""
        counts = [t.questions.counts for t in self.tasks if t.questions is not None]
        return (sum(c.asked for c in counts), sum(c.answered for c in counts), sum(c.dropped for c in counts))
