"""Events: what happened to the tracks of one source, as records people and other systems consume.

- `object_appeared`: a track is confirmed (seen on `tracker.min_hits` keyframes).
- `object_left`: a confirmed track the tracker ended (unseen on the answered keyframes of `tracker.lost_after_s`,
  or gone out of the picture), or still present when the stream ends (`reason`: `lost` or `stream_ended`), with
  its `dwell_s`. Its label is the track's vote over all its sightings. A restarted Ray camera actor ends the
  tracks its predecessor left open (`source_restarted`).
- `text_read`: text settled on a track (OCR regions): the most common of the track's last `ocr_window` reads,
  read at least `ocr_min_votes` times, so a plate read five times with one misread gives one event; for
  whole-frame OCR, the frame's text when it changes.
- `text_changed`: a track's settled text became another one (it must win the vote again), with `previous_text`.
- `caption`: a frame-level caption from a caption task; emitted when it changes.
- `object_described`: what Florence-2 says a track's object is, asked on a crop of it (`objects.describe`), and
  again when its view is clearly better (`objects.better_view`); a description that did not change is not sent;
  `text_read` / `text_changed` also come from reading a track's crop (`objects.read`), voted like region OCR.
- `source_down` / `source_up`: a live source was lost (with `reason`) or came back (with `gap_s`, how long it
  was gone); also when the process of a live source on a Ray cluster died and Ray restarted it.
- `phrase_seen`: a watched phrase (`watch:`, `--watch`) grounded on a box that a track of its own confirms, once
  per track, with the phrase, the box and its confidence; a watch makes no other events.
- `worker_restarted` / `worker_lost` (Ray only): the model worker answering this source came back after a
  restart, or died for good and the source's keyframes moved to another (`moved_to`).
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field

from streamer.records import DETECTED, KIND, TEXT, Event, Frame, SourceStatus, Tracks
from streamer.tasks import CAPTION_TASKS


@dataclass(slots=True)
class _Track:
    track_id: int
    label: str
    first_pts: float
    last_pts: float
    bbox: tuple[float, float, float, float]
    confidence: float | None
    text: str | None = None  # settled text
    reads: deque = field(default_factory=deque)
    description: str | None = None  # what the model said it is (objects.describe)


class EventMaker:
    """Turns each keyframe's tracks of one source into events; `finish` closes what is still open."""

    def __init__(self, source: str, ocr_min_votes: int = 1, ocr_window: int = 1) -> None:
        self.source = source
        self.ocr_min_votes = ocr_min_votes
        self.ocr_window = ocr_window
        self._active: dict[int, _Track] = {}
        self._frame_text: dict[str, str] = {}

    def _event(self, kind: str, frame: Frame, track: _Track | None = None, **extra) -> Event:
        text = extra.pop("text", None)
        return Event(
            type=kind,
            source=self.source,
            frame_index=frame.index,
            pts=frame.pts,
            wall_time=frame.wall_time,
            camera_time=frame.camera_time,
            track_id=None if track is None else track.track_id,
            label=None if track is None else track.label,
            bbox=None if track is None else track.bbox,
            confidence=None if track is None else track.confidence,
            text=text,
            extra=extra,
        )

    def update(self, tracks: Tracks, task: str, frame_text: str | None = None) -> list[Event]:
        """Events for one keyframe. `frame_text` is the answer of a text-only task, if any."""
        frame, det = tracks.frame, tracks.detections
        events: list[Event] = []
        names = det.data.get("class_name")
        texts = det.data.get(TEXT)
        kinds = det.data.get(KIND)
        for i, track_id in enumerate(det.tracker_id if det.tracker_id is not None else []):
            if track_id < 0 or (kinds is not None and kinds[i] != DETECTED):
                continue
            track_id = int(track_id)
            label = str(names[i]) if names is not None else "object"
            bbox = tuple(float(v) for v in det.xyxy[i])
            confidence = None if det.confidence is None else float(det.confidence[i])
            track = self._active.get(track_id)
            if track is None:
                track = _Track(track_id, label, frame.pts, frame.pts, bbox, confidence,
                               reads=deque(maxlen=self.ocr_window))
                self._active[track_id] = track
                events.append(self._event("object_appeared", frame, track))
            track.last_pts, track.bbox, track.confidence, track.label = frame.pts, bbox, confidence, label
            if texts is not None:
                events.extend(self._vote(frame, track, str(texts[i]).strip()))
        for track_id in tracks.ended:
            if track_id in self._active:
                events.append(self._left(frame, self._active[track_id], "lost"))
        if frame_text:
            kind = "caption" if task in CAPTION_TASKS else "text_read"
            if self._frame_text.get(task) != frame_text:
                self._frame_text[task] = frame_text
                events.append(self._event(kind, frame, text=frame_text, task=task))
        return events

    def read(self, frame: Frame, track_id: int, text: str) -> list[Event]:
        """A text read on a crop of a live track: one more vote."""
        track = self._active.get(track_id)
        return self._vote(frame, track, text.strip()) if track is not None else []

    def described(self, frame: Frame, track_id: int, text: str) -> list[Event]:
        """What the model said a live track's object is."""
        track = self._active.get(track_id)
        if track is None or not text.strip() or text.strip() == track.description:
            return []  # a better view that says the same thing is no news
        track.description = text.strip()
        return [self._event("object_described", frame, track, text=track.description)]

    def settled(self, track_id: int) -> bool:
        track = self._active.get(track_id)
        return track is not None and track.text is not None

    def label_text(self, track_id: int) -> str:
        """What a track's label shows after its class: the text its reads agreed on, and its description."""
        track = self._active.get(track_id)
        if track is None:
            return ""
        return " - ".join(part for part in (track.text, track.description) if part)

    def _vote(self, frame: Frame, track: _Track, text: str) -> list[Event]:
        if not text:
            return []
        track.reads.append(text)
        winner, votes = Counter(track.reads).most_common(1)[0]
        if votes < self.ocr_min_votes or winner == track.text:
            return []
        previous, track.text = track.text, winner
        if previous is None:
            return [self._event("text_read", frame, track, text=winner, votes=votes)]
        return [self._event("text_changed", frame, track, text=winner, previous_text=previous, votes=votes)]

    def _left(self, frame: Frame, track: _Track, reason: str) -> Event:
        del self._active[track.track_id]
        dwell = round(track.last_pts - track.first_pts, 6)
        return self._event("object_left", frame, track, text=track.text, dwell_s=dwell, reason=reason)

    def finish(self, last_frame: Frame | None, reason: str = "stream_ended") -> list[Event]:
        """Close every open track at the end of the stream (or of the tracking: `source_restarted`)."""
        if last_frame is None:
            return []
        return [self._left(last_frame, track, reason) for track in list(self._active.values())]


def status_event(status: SourceStatus) -> Event:
    extra = {"reason": status.reason} if status.state == "down" else {"gap_s": round(status.gap_s or 0.0, 3)}
    return Event(type=f"source_{status.state}", source=status.source, frame_index=status.frame_index,
                 pts=status.pts, wall_time=status.wall_time, extra=extra)


def worker_event(kind: str, frame: Frame, source: str, **extra) -> Event:
    """A remote model worker changed under a source: `worker_restarted` or `worker_lost`."""
    return Event(type=kind, source=source, frame_index=frame.index, pts=frame.pts, wall_time=frame.wall_time,
                 extra=extra)
