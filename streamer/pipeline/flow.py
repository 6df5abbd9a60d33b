"""Where each tracked box is on the frames between keyframes: sparse optical flow of points inside it.

Keyframes are sparse (one frame in ten or fewer), and an object may move two box widths between two of them. The
frames in between are cheap to look at, though: each box follows the median motion of a few feature points
inside it, tracked with pyramidal Lucas-Kanade (OpenCV) on a small grey image of every second frame (the frame
between moves at the rate measured), in a window around the box, kept only where a point tracked back lands
where it started. So a box moves when its object moves and stops when it stops, and the
tracker can match the next keyframe's detections where the objects really are. A box whose points are lost
(no texture), or which overlaps another box (one object passing in front of another takes the points of the
hidden one along), moves on at its last known velocity instead.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

GREY_WIDTH = 640  # the small image's width at most: small objects keep a few pixels, a box costs ~0.1 ms a frame
_WINDOW = (9, 9)
_LEVELS = 2  # with the window: up to ~20 small-image pixels a frame
_CRITERIA = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 10, 0.03)
_POINTS = 12  # feature points per box
_MIN_POINTS = 4  # fewer than this left: the box moves at its velocity instead
_FB_ERROR = 1.0  # forward-backward disagreement (small-image pixels) above which a point is dropped
EVERY = 2  # flow is measured on every second frame; the frame between moves at the rate measured


def small_grey(image: np.ndarray) -> tuple[np.ndarray, int]:
    """A grey copy of a BGR frame at most `GREY_WIDTH` wide (every n-th pixel of the green channel: no filtering
    needed for flow, and ten times cheaper than a resize), with n."""
    step = max(1, math.ceil(image.shape[1] / GREY_WIDTH))
    return np.ascontiguousarray(image[::step, ::step, 1]), step


class Flow:
    """The boxes of one task's tracks, moved frame by frame from the keyframe they were last placed on."""

    def __init__(self) -> None:
        self._grey: np.ndarray | None = None  # the small image flow was last measured on, at `_pts`
        self._step = 1
        self._pts = 0.0
        self._skipped = 0  # frames since then
        self._boxes: dict[int, np.ndarray] = {}  # key -> xyxy in source pixels, at `_pts`
        self._now: dict[int, np.ndarray] = {}  # key -> xyxy on the last frame advanced to
        self._velocity: dict[int, np.ndarray] = {}  # key -> xyxy change per second, for boxes without points
        self._points: dict[int, np.ndarray] = {}  # key -> (n, 2) float32 in small-image pixels
        self._stale: set[int] = set()  # boxes that overlapped another: their points are not trusted

    def keys(self) -> set[int]:
        return set(self._boxes)

    @property
    def needs_image(self) -> bool:
        """Whether the next frame's small image is needed (flow is measured on it)."""
        return bool(self._boxes) and self._skipped + 1 >= EVERY

    def boxes(self) -> dict[int, np.ndarray]:
        return {key: box.copy() for key, box in self._now.items()}

    def reset(self, grey: np.ndarray, step: int, pts: float, boxes: dict[int, np.ndarray],
              velocity: dict[int, np.ndarray]) -> None:
        """Place the boxes on a keyframe (`grey` being its small image) and pick the points they will follow."""
        self._grey = grey
        self._step, self._pts, self._skipped = step, pts, 0
        self._boxes = {key: np.asarray(box, dtype=np.float64).copy() for key, box in boxes.items()}
        self._now = dict(self._boxes)
        self._velocity = {key: velocity.get(key, np.zeros(4)) for key in boxes}
        self._points = {key: self._seed(grey, box) for key, box in self._boxes.items()}
        self._stale = set()

    def advance(self, grey: np.ndarray | None, pts: float) -> dict[int, np.ndarray]:
        """Move every box to the next frame of the stream, whose small image is `grey`; None (allowed unless
        `needs_image`) moves them at the rate last measured."""
        dt = max(0.0, pts - self._pts)
        if not self._boxes:
            self._grey, self._pts = None, pts
            return {}
        if grey is None:
            self._skipped += 1
            self._now = {key: box + self._velocity[key] * dt for key, box in self._boxes.items()}
            return self.boxes()
        self._pts, self._skipped = pts, 0
        moved: dict[int, np.ndarray] = {}
        if self._grey is not None and self._grey.shape == grey.shape:
            for key, points in self._points.items():
                if len(points):
                    a, b = _track_points(self._grey, grey, points)
                    if len(a) >= _MIN_POINTS:
                        moved[key] = _follow(self._boxes[key], a, b, self._step)
                    self._points[key] = b
        crowded = _crowded({key: moved.get(key, box + self._velocity[key] * dt) for key, box in self._boxes.items()})
        for key, box in self._boxes.items():
            if key in moved and key not in crowded:
                if dt > 0:  # the velocity a box falls back to, should its points be lost later
                    self._velocity[key] = 0.7 * self._velocity[key] + 0.3 * (moved[key] - box) / dt
                self._boxes[key] = moved[key]
            else:
                self._boxes[key] = box + self._velocity[key] * dt
            if key in crowded:
                self._stale.add(key)
            elif key in self._stale:  # out of the crowd: its points may have gone with the other object
                self._stale.discard(key)
                self._points[key] = self._seed(grey, self._boxes[key])
        self._grey = grey
        self._now = dict(self._boxes)
        return self.boxes()

    def _seed(self, grey: np.ndarray, box: np.ndarray) -> np.ndarray:
        """Corners inside the middle of the box (its edges are mostly background), or a grid where it has none."""
        h, w = grey.shape
        x1, y1, x2, y2 = box / self._step
        mx, my = 0.2 * (x2 - x1), 0.2 * (y2 - y1)
        x1, x2 = int(max(0, math.floor(x1 + mx))), int(min(w, math.ceil(x2 - mx)))
        y1, y2 = int(max(0, math.floor(y1 + my))), int(min(h, math.ceil(y2 - my)))
        if x2 - x1 < 2 or y2 - y1 < 2:
            return np.empty((0, 2), np.float32)
        corners = cv2.goodFeaturesToTrack(grey[y1:y2, x1:x2], _POINTS, 0.01, 2) if min(x2 - x1, y2 - y1) >= 5 else None
        if corners is None or len(corners) < _MIN_POINTS:
            xs, ys = np.meshgrid(np.linspace(0, x2 - x1 - 1, 5), np.linspace(0, y2 - y1 - 1, 5))
            corners = np.stack([xs.ravel(), ys.ravel()], axis=1)
        return (corners.reshape(-1, 2) + (x1, y1)).astype(np.float32)


def _crowded(boxes: dict[int, np.ndarray], share: float = 0.2) -> set[int]:
    """Boxes that cover more than `share` of another box or are covered so: where one object passes another, the
    points of the hidden one go with the one in front, so both move at their velocity until they part."""
    keys = list(boxes)
    if len(keys) < 2:
        return set()
    xyxy = np.array([boxes[k] for k in keys])
    x1 = np.maximum(xyxy[:, None, 0], xyxy[None, :, 0])
    y1 = np.maximum(xyxy[:, None, 1], xyxy[None, :, 1])
    x2 = np.minimum(xyxy[:, None, 2], xyxy[None, :, 2])
    y2 = np.minimum(xyxy[:, None, 3], xyxy[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = np.maximum((xyxy[:, 2] - xyxy[:, 0]) * (xyxy[:, 3] - xyxy[:, 1]), 1e-6)
    cover = inter / np.minimum(area[:, None], area[None, :])
    np.fill_diagonal(cover, 0)
    return {keys[i] for i in np.flatnonzero((cover > share).any(axis=1))}


def _track_points(before: np.ndarray, after: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The points (small-image pixels) that flow follows from `before` to `after` and back to where they were,
    and where they went. Only a window around them is looked at: the cost is the box's, not the frame's."""
    h, w = before.shape
    x1, y1 = points.min(axis=0)
    x2, y2 = points.max(axis=0)
    margin = max(x2 - x1, y2 - y1, 16.0) + _WINDOW[0] * 2
    cx1, cy1 = int(max(0, x1 - margin)), int(max(0, y1 - margin))
    cx2, cy2 = int(min(w, x2 + margin + 1)), int(min(h, y2 + margin + 1))
    a = np.ascontiguousarray(before[cy1:cy2, cx1:cx2])
    b = np.ascontiguousarray(after[cy1:cy2, cx1:cx2])
    start = (points - (cx1, cy1)).reshape(-1, 1, 2).astype(np.float32)
    end, ok, _ = cv2.calcOpticalFlowPyrLK(a, b, start, None, winSize=_WINDOW, maxLevel=_LEVELS, criteria=_CRITERIA)
    back, ok_back, _ = cv2.calcOpticalFlowPyrLK(b, a, end, None, winSize=_WINDOW, maxLevel=_LEVELS,
                                                criteria=_CRITERIA)
    good = (ok.ravel() == 1) & (ok_back.ravel() == 1)
    good &= np.linalg.norm((back - start).reshape(-1, 2), axis=1) < _FB_ERROR
    end = end.reshape(-1, 2) + (cx1, cy1)
    good &= (end[:, 0] >= 0) & (end[:, 0] < w) & (end[:, 1] >= 0) & (end[:, 1] < h)
    return points[good], end[good].astype(np.float32)


def _follow(box: np.ndarray, a: np.ndarray, b: np.ndarray, step: int) -> np.ndarray:
    """The box moved by the median motion of its points, and scaled by the change of their spread."""
    shift = np.median(b - a, axis=0) * step
    da, db = a - a.mean(axis=0), b - b.mean(axis=0)
    spread = float((da * da).sum())
    scale = min(max(math.sqrt(float((db * db).sum()) / spread), 0.95), 1.05) if spread > 4.0 else 1.0
    cx, cy = (box[0] + box[2]) / 2 + shift[0], (box[1] + box[3]) / 2 + shift[1]
    hw, hh = (box[2] - box[0]) / 2 * scale, (box[3] - box[1]) / 2 * scale
    return np.array([cx - hw, cy - hh, cx + hw, cy + hh])
