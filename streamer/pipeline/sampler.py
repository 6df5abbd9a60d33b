"""The sampler: decides which frames the model sees.

Three rules, all configurable (see `SamplerConfig`): the first frame is always a keyframe; after that a frame
is a keyframe when `every_n_frames` have passed since the last one, or when the scene changed, measured as the
mean absolute difference of a small grey thumbnail against the last keyframe's (0..1) above
`scene_threshold`. `max_fps` caps both triggers, so a flickering scene cannot flood the model.
"""

from __future__ import annotations

import cv2
import numpy as np

from streamer.config import SamplerConfig
from streamer.pipeline.flow import small_grey
from streamer.records import Frame


class Sampler:
    def __init__(self, config: SamplerConfig) -> None:
        self.config = config
        self._last_index: int | None = None
        self._last_pts: float | None = None
        self._last_thumb: np.ndarray | None = None
        self.change: float | None = None  # the last frame's change since the last keyframe, where it was measured

    def expected_rate(self, source_fps: float) -> float:
        """Keyframes per second this sampler will give on a static scene; trackers are tuned to it."""
        rate = source_fps / self.config.every_n_frames if self.config.every_n_frames else source_fps
        if self.config.max_fps:
            rate = min(rate, self.config.max_fps)
        return max(rate, 1e-3)

    @property
    def looks(self) -> bool:
        """Whether it looks at the pictures (scene changes), so needs each frame's small grey image."""
        return bool(self.config.scene_threshold)

    def _thumb(self, frame: Frame, grey: np.ndarray | None) -> np.ndarray:
        """A thumbnail of the frame's small grey image (`flow.small_grey`, made once a frame for the sampler and
        optical flow alike; made here if not given), averaged down to `scene_size` wide."""
        grey = grey if grey is not None else small_grey(frame.image)[0]
        height, width = grey.shape[:2]
        side = self.config.scene_size
        return cv2.resize(grey, (side, max(1, round(side * height / width))), interpolation=cv2.INTER_AREA)

    def _since_keyframe(self, thumb: np.ndarray) -> float | None:
        """Mean absolute difference (0..1) from the last keyframe's thumbnail: 1 for a picture that changed shape
        (a spliced stream), None before any keyframe."""
        if self._last_thumb is None:
            return None
        if thumb.shape != self._last_thumb.shape:
            return 1.0
        return float(cv2.absdiff(thumb, self._last_thumb).mean()) / 255.0

    def changed(self, frame: Frame, grey: np.ndarray | None = None) -> float | None:
        """How much the picture changed since the last keyframe (0..1), without choosing anything; None where
        the sampler does not look at pictures."""
        if not self.config.scene_threshold or self._last_thumb is None:
            return None
        return self._since_keyframe(self._thumb(frame, grey))

    def take(self, frame: Frame, grey: np.ndarray | None = None) -> None:
        """`frame` is a keyframe whatever the rules say (one that replaces a still camera's waiting keyframe)."""
        thumb = self._thumb(frame, grey) if self.config.scene_threshold else None
        self.change = None if thumb is None else self._since_keyframe(thumb)
        self._last_index, self._last_pts, self._last_thumb = frame.index, frame.pts, thumb

    def is_keyframe(self, frame: Frame, grey: np.ndarray | None = None) -> bool:
        """`grey`: the frame's small grey image, if it was made already."""
        cfg = self.config
        first = self._last_index is None
        if not first and cfg.max_fps and (frame.pts - self._last_pts) < (1.0 / cfg.max_fps) - 1e-6:
            self.change = None
            return False  # capped: skip even the thumbnail
        thumb = self._thumb(frame, grey) if cfg.scene_threshold else None
        self.change = None if thumb is None else self._since_keyframe(thumb)
        chosen = first or bool(cfg.every_n_frames and frame.index - self._last_index >= cfg.every_n_frames)
        if not chosen and self.change is not None:  # a picture that changed shape is a new scene
            chosen = self.change > cfg.scene_threshold or thumb.shape != self._last_thumb.shape
        if chosen:
            self._last_index, self._last_pts, self._last_thumb = frame.index, frame.pts, thumb
        return chosen
