"""Full-rate boxes from sparse keyframes: each track moves at its last measured velocity between keyframes.

The velocity of a track is its box's change between its last two keyframes over their time apart (a
constant-velocity model, per box corner). Frames between keyframes are drawn where the track is predicted to be,
not frozen where it was last seen; extrapolation stops after `horizon_s`, so a lost track does not fly away.
"""

from __future__ import annotations

import numpy as np

from streamer.records import Tracks


class Motion:
    def __init__(self, horizon_s: float = 2.0) -> None:
        self.horizon_s = horizon_s
        self._last: dict[int, tuple[float, np.ndarray]] = {}
        self._velocity: dict[int, np.ndarray] = {}
        self._base: np.ndarray | None = None
        self._rates: np.ndarray | None = None
        self._tracks: Tracks | None = None

    def observe(self, tracks: Tracks) -> None:
        """Learn velocities from a keyframe's tracks; remember its boxes as the base for `place`."""
        det = tracks.detections
        self._tracks = tracks
        self._base = det.xyxy.copy()
        self._rates = np.zeros_like(self._base)
        ids = det.tracker_id if det.tracker_id is not None else np.full(len(det), -1)
        for i, track_id in enumerate(int(t) for t in ids):
            if track_id < 0:
                continue
            previous = self._last.get(track_id)
            box = self._base[i]
            if previous is not None and tracks.frame.pts > previous[0]:
                self._velocity[track_id] = (box - previous[1]) / (tracks.frame.pts - previous[0])
            self._last[track_id] = (tracks.frame.pts, box.copy())
            self._rates[i] = self._velocity.get(track_id, 0.0)
        stale = [t for t, (pts, _) in self._last.items() if tracks.frame.pts - pts > 2 * self.horizon_s]
        for track_id in stale:  # long gone: keep memory flat over days of tracks
            del self._last[track_id]
            self._velocity.pop(track_id, None)

    def boxes_at(self, tracks: Tracks, pts: float) -> np.ndarray:
        """The boxes of the keyframe's `tracks` where they should be at `pts` (a new array; the tracks are left
        as they are). Tracks other than the last observed ones are not moved."""
        if tracks is not self._tracks or self._base is None or len(self._base) == 0:
            return tracks.detections.xyxy
        dt = min(max(0.0, pts - tracks.frame.pts), self.horizon_s)
        return self._base + self._rates * dt
