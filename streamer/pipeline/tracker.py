"""The tracker: links one task's keyframe detections into tracks, where the objects are now, not where they were.

Keyframes are sparse, so a box from the last keyframe may not overlap its object on the next one at all. The
tracker therefore matches each keyframe's detections against where every track is predicted to be on that
keyframe (its box followed frame by frame by `flow.Flow`, or moved at its velocity where flow lost it), with
ByteTrack's two stages: confident detections first, then the remaining tracks against the unsure ones. A track
seen once, or one whose prediction failed, may still take a detection of its label whose centre lies within
reach of it (motion-gated), so fast movers are kept. IoU is the `trackers` package's.

A track is confirmed (gets its id) at once when its first detection is sure (`confirm_at`), else when seen on
`min_hits` keyframes, and ends after `lost_after_s` of stream
time *and* as many answered keyframes as that spans without a sighting, so a slow model never ends a track that
is still there; one whose predicted box has left the picture ends at once, so it cannot hand its id to an object
entering where it left. A track's label is the vote of its sightings (weighted by confidence).
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import cv2
import numpy as np
import supervision as sv
from scipy.optimize import linear_sum_assignment
from trackers.utils.iou import IoU

from streamer.config import TrackerConfig
from streamer.records import DETECTED, KIND, MISSES, PREDICTED, TEXT, TRACK_KEY, Frame, Tracks

_IOU = IoU()
_SECOND_STAGE_IOU = 0.5  # ByteTrack's threshold for matching unsure detections
_REACH_NEW = 2.5  # how far (in box sizes) a track seen once may have moved by the next keyframe
_REACH = 0.5  # how far a confirmed track may be from its prediction
_OTHER_LABEL_IOU = 0.5  # a detection of another label than the track's must overlap its box this much
_GONE = 0.5  # a predicted box with less than this share inside the picture has left it
_LOOK_WEIGHT = 0.3  # what unlike colours add to the cost of an overlap (1 - IoU)
_UNLIKE = 0.5  # a lost track is found again only by a detection looking more like it than this
_SAME_LOOK = 0.3  # looks this alike: the same object, whatever label the model gave it this time


@dataclass(slots=True)
class _Track:
    key: int  # the tracker's own, never reused; `track_id` is given at confirmation
    box: np.ndarray  # on the last keyframe: where it was seen, or where it was predicted if missed
    seen_box: np.ndarray  # where it was last seen, at `seen_pts`
    seen_pts: float
    velocity: np.ndarray  # from its sightings: the steady prediction is seen_box + velocity * (t - seen_pts)
    confidence: float
    hits: int = 1
    misses: int = 0  # answered keyframes in a row that did not see it
    track_id: int = -1
    votes: Counter = field(default_factory=Counter)
    mask: np.ndarray | None = None
    text: str = ""  # read on this keyframe (OCR regions)
    look: np.ndarray | None = None  # its colours where it was seen (`_look`), averaged over its sightings

    @property
    def label(self) -> str:
        return self.votes.most_common(1)[0][0]


class Tracker:
    """One per source and scheduled task. Ids come from `ids`, shared by a source's trackers, so two tasks'
    tracks never share an id."""

    def __init__(self, config: TrackerConfig, keyframe_rate: float, ids: Iterator[int] | None = None) -> None:
        self.config = config
        self.lost_after = max(1, math.ceil(config.lost_after_s * keyframe_rate - 1e-9))
        self._ids = ids if ids is not None else itertools.count()
        self._keys = itertools.count()
        self._tracks: list[_Track] = []

    @property
    def holding(self) -> bool:
        """Whether any track is held: young, confirmed or lost but not ended yet."""
        return bool(self._tracks)

    def predictions(self, pts: float) -> dict[int, np.ndarray]:
        """Where each track would be at `pts` at its velocity (for tracks flow does not follow)."""
        return {t.key: t.seen_box + t.velocity * (pts - t.seen_pts) for t in self._tracks}

    def velocities(self) -> dict[int, np.ndarray]:
        return {t.key: t.velocity for t in self._tracks}

    def update(self, frame: Frame, detections: sv.Detections, predicted: dict[int, np.ndarray]) -> Tracks:
        """One answered keyframe. `predicted`: where flow put each track (by key) on this frame; the others are
        moved at their velocity."""
        pts = frame.pts
        h, w = frame.image.shape[:2]
        steady = self.predictions(pts)
        guess = {**steady, **{k: v for k, v in predicted.items() if k in steady}}
        boxes = np.array([guess[t.key] for t in self._tracks]).reshape(-1, 4)
        # Flow can be fooled (another object passing over a still one drags its points along): a detection may
        # also match where the track's keyframe velocity alone puts it.
        steady_boxes = np.array([steady[t.key] for t in self._tracks]).reshape(-1, 4)
        n = len(detections)
        conf = detections.confidence if detections.confidence is not None else np.ones(n)
        names = detections.data.get("class_name")
        labels = [str(x) for x in names] if names is not None else ["object"] * n
        looks = [_look(frame.image, box) for box in detections.xyxy]
        pairs = self._associate(boxes, steady_boxes, detections.xyxy.astype(np.float64), conf, labels, looks)
        matched_tracks = {ti for ti, _ in pairs}
        matched_dets = {di for _, di in pairs}
        for ti, di in pairs:
            self._see(self._tracks[ti], detections, di, conf[di], labels[di], pts, looks[di])
        ended: list[int] = []
        survivors: list[_Track] = []
        for ti, track in enumerate(self._tracks):
            if ti not in matched_tracks:
                track.misses += 1
                track.box, track.text = boxes[ti], ""
                gone = _inside(track.box, w, h) < _GONE
                lost = track.misses >= self.lost_after and pts - track.seen_pts >= self.config.lost_after_s - 1e-9
                if (track.track_id < 0 and track.misses > 1) or gone or lost:  # unconfirmed: one miss at most
                    if track.track_id >= 0:
                        ended.append(track.track_id)
                    continue
            survivors.append(track)
        self._tracks = survivors
        for di in range(n):
            if di not in matched_dets and conf[di] >= self.config.activation_threshold:
                box = detections.xyxy[di].astype(np.float64)
                track = _Track(next(self._keys), box, box, pts, np.zeros(4), float(conf[di]),
                               mask=None if detections.mask is None else detections.mask[di], look=looks[di])
                track.votes[labels[di]] += float(conf[di]) + 1e-6
                track.text = _text(detections, di)
                self._confirm(track, sure=conf[di] >= self.config.confirm_at)
                self._tracks.append(track)
        return Tracks(frame, self._as_detections(detections, pts, w, h), ended)

    def _see(self, track: _Track, detections: sv.Detections, di: int, confidence: float, label: str,
             pts: float, look: np.ndarray | None) -> None:
        box = detections.xyxy[di].astype(np.float64)
        if pts > track.seen_pts:  # smoothed: a single noisy keyframe must not fling the box on
            measured = (box - track.seen_box) / (pts - track.seen_pts)
            track.velocity = measured if track.hits == 1 else 0.5 * track.velocity + 0.5 * measured
        track.box, track.seen_box, track.seen_pts = box, box, pts
        track.confidence = float(confidence)
        track.hits += 1
        track.misses = 0
        track.votes[label] += float(confidence) + 1e-6
        track.mask = None if detections.mask is None else detections.mask[di]
        track.text = _text(detections, di)
        if look is not None:  # seen in part behind another, a look is a mix: its average moves slowly
            track.look = look if track.look is None else 0.7 * track.look + 0.3 * look
        self._confirm(track)

    def _confirm(self, track: _Track, sure: bool = False) -> None:
        if track.track_id < 0 and (sure or track.hits >= self.config.min_hits):
            track.track_id = next(self._ids)

    def _associate(self, boxes: np.ndarray, steady: np.ndarray, dets: np.ndarray, conf: np.ndarray,
                   labels: list[str], looks: list) -> list[tuple[int, int]]:
        """(track index, detection index) pairs, in ByteTrack's two stages, then by motion-gated distance."""
        iou = np.maximum(_IOU.compute(boxes, dets), _IOU.compute(steady, dets))
        unlike = np.array([[_unlike(t.look, look) for look in looks] for t in self._tracks]).reshape(iou.shape)
        sure = conf >= max(self.config.activation_threshold, 0.5)
        high, low = [int(i) for i in np.flatnonzero(sure)], [int(i) for i in np.flatnonzero(~sure)]
        tracks = list(range(len(boxes)))
        track_labels = np.array([t.label for t in self._tracks], dtype=object)
        same = (track_labels[:, None] == np.array(labels, dtype=object)[None, :]).reshape(len(tracks), len(dets))
        pairs = _match(iou, same, unlike, tracks, high, self.config.min_iou)
        matched = {p[0] for p in pairs}
        left = [t for t in tracks if t not in matched]
        pairs += _match(iou, same, unlike, [t for t in left if self._tracks[t].track_id >= 0], low,
                        _SECOND_STAGE_IOU)
        used_t, used_d = {p[0] for p in pairs}, {p[1] for p in pairs}
        left = [t for t in tracks if t not in used_t]
        rest = [d for d in range(len(dets)) if d not in used_d]
        if left and rest:
            pairs += self._rescue(boxes, dets, left, rest, labels, unlike, sure)
        return pairs

    def _rescue(self, boxes: np.ndarray, dets: np.ndarray, tracks: list[int], rest: list[int],
                labels: list[str], unlike: np.ndarray, sure: np.ndarray) -> list[tuple[int, int]]:
        """Tracks and detections that do not overlap: matched by centre distance in box sizes, within the reach
        of a track's motion, same label (or the same look), similar size. A confirmed track missed on some
        keyframes (hidden, or its prediction went astray: it stopped, it turned) is looked for further the longer
        it was lost, from where it is predicted and from where it was last seen, but only by a detection that looks
        like it; a track seen once, or an unsure detection, only by one that looks just like it."""
        cost = np.full((len(tracks), len(rest)), np.inf)
        for a, ti in enumerate(tracks):
            track = self._tracks[ti]
            size = _extent(boxes[ti])
            lost = track.misses if track.track_id >= 0 else 0
            reach = _REACH_NEW if track.hits == 1 else _REACH * (1 + lost)
            for b, di in enumerate(rest):
                ratio = _size(dets[di]) / max(_size(boxes[ti]), 1e-6)
                misread = labels[di] != track.label and unlike[ti, di] > _SAME_LOOK
                if misread or not 0.5 <= ratio <= 2.0:
                    continue
                if unlike[ti, di] > (_UNLIKE if (sure[di] and track.track_id >= 0) or lost else _SAME_LOOK):
                    continue
                distance = min(np.linalg.norm(_centre(dets[di]) - _centre(where)) / max(size, 1e-6)
                               for where in (boxes[ti], track.seen_box))
                if distance > reach:
                    continue
                cost[a, b] = distance / reach + unlike[ti, di]
        return _solve(cost, tracks, rest)

    def _as_detections(self, detections: sv.Detections, pts: float, w: int, h: int) -> sv.Detections:
        """Every live track at this keyframe: `KIND` is DETECTED (seen on it) or PREDICTED (missed)."""
        tracks = self._tracks
        det = sv.Detections(
            xyxy=np.array([t.box for t in tracks], dtype=np.float32).reshape(-1, 4),
            confidence=np.array([t.confidence for t in tracks], dtype=np.float32),
            tracker_id=np.array([t.track_id for t in tracks], dtype=int),
            data={
                "class_name": np.array([t.label for t in tracks], dtype=object),
                KIND: np.array([DETECTED if t.misses == 0 else PREDICTED for t in tracks], dtype=object),
                TRACK_KEY: np.array([t.key for t in tracks], dtype=int),
                MISSES: np.array([t.misses for t in tracks], dtype=int),
            },
        )
        if detections.mask is not None and tracks:
            det.mask = np.stack([t.mask if t.mask is not None else np.zeros((h, w), bool) for t in tracks])
        if TEXT in detections.data:
            det.data[TEXT] = np.array([t.text for t in tracks], dtype=object)
        return det


def _text(detections: sv.Detections, i: int) -> str:
    texts = detections.data.get("text")
    return "" if texts is None else str(texts[i]).strip()


def _match(iou: np.ndarray, same: np.ndarray, unlike: np.ndarray, tracks: list[int], candidates: list[int],
           min_iou: float) -> list[tuple[int, int]]:
    """By overlap with the predicted boxes; a detection labelled otherwise than the track (a misread, or another
    object passing) only when it overlaps well or looks just like the track, and after any of the track's own
    label; between two that overlap alike (objects passing each other), the one that looks like the track."""
    if not tracks or not candidates:
        return []
    iou, unlike = iou[np.ix_(tracks, candidates)], unlike[np.ix_(tracks, candidates)]
    alike = same[np.ix_(tracks, candidates)]
    enough = np.where(alike | (unlike <= _SAME_LOOK), max(min_iou, 1e-6), max(min_iou, _OTHER_LABEL_IOU))
    cost = np.where(iou >= enough, 1.0 - iou + np.where(alike, 0.0, 0.5) + _LOOK_WEIGHT * unlike, np.inf)
    return _solve(cost, tracks, candidates)


def _solve(cost: np.ndarray, rows: list[int], cols: list[int]) -> list[tuple[int, int]]:
    """The cheapest one-to-one pairs whose cost is finite (Hungarian)."""
    finite = np.isfinite(cost)
    if not finite.any():
        return []
    r, c = linear_sum_assignment(np.where(finite, cost, 1e9))
    return [(rows[i], cols[j]) for i, j in zip(r, c) if finite[i, j]]


def _look(image: np.ndarray, box: np.ndarray) -> np.ndarray | None:
    """A cheap appearance descriptor: the hue-saturation histogram of the box's middle (its edges hold the
    background), normalised; None for a box with no pixels in the picture."""
    h, w = image.shape[:2]
    x1, y1, x2, y2 = box
    dx, dy = (x2 - x1) * 0.15, (y2 - y1) * 0.15
    x1, y1, x2, y2 = (int(round(v)) for v in (max(x1 + dx, 0), max(y1 + dy, 0), min(x2 - dx, w), min(y2 - dy, h)))
    if x2 - x1 < 2 or y2 - y1 < 2:
        return None
    hsv = cv2.cvtColor(image[y1:y2, x1:x2], cv2.COLOR_BGR2HSV)
    hist = cv2.calcHist([hsv], [0, 1], None, [16, 4], [0, 180, 0, 256]).ravel()
    return hist / max(float(hist.sum()), 1e-6)


def _unlike(a: np.ndarray | None, b: np.ndarray | None) -> float:
    """How unlike two looks are: the Bhattacharyya distance (0 the same colours, 1 none shared); where one is
    unknown (a box of a pixel or two), just alike enough that the look neither keeps a match nor makes one."""
    if a is None or b is None:
        return _SAME_LOOK
    return float(math.sqrt(max(0.0, 1.0 - float(np.sum(np.sqrt(a * b))))))


def _size(box: np.ndarray) -> float:
    return float(math.sqrt(max(box[2] - box[0], 1e-6) * max(box[3] - box[1], 1e-6)))


def _extent(box: np.ndarray) -> float:
    return float(max(box[2] - box[0], box[3] - box[1], 1e-6))


def _centre(box: np.ndarray) -> np.ndarray:
    return np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])


def _inside(box: np.ndarray, w: int, h: int) -> float:
    """The share of the box's area inside the w x h picture."""
    area = max(box[2] - box[0], 1e-6) * max(box[3] - box[1], 1e-6)
    ix = max(0.0, min(box[2], w) - max(box[0], 0))
    iy = max(0.0, min(box[3], h) - max(box[1], 0))
    return float(ix * iy / area)
