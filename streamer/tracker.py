"""The tracker: links a source's keyframe detections into tracks with the `trackers` package.

Keyframes are sparse and may come irregularly (scene changes), so the tracker runs in timestamp mode on the
frames' pts: its nominal frame rate is the sampler's keyframe rate and a lost track is dropped after
`lost_after_s` seconds of stream time, whatever the video's own frame rate is.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import supervision as sv
from trackers import BoTSORTTracker, ByteTrackTracker, OCSORTTracker, SORTTracker

from streamer.config import TrackerConfig
from streamer.records import FrameDetections

_BYTETRACK_HIGH = 0.6  # `trackers`' default split between ByteTrack's two association stages
_KINDS = {"bytetrack": ByteTrackTracker, "ocsort": OCSORTTracker, "botsort": BoTSORTTracker, "sort": SORTTracker}


def _arguments(config: TrackerConfig, keyframe_rate: float) -> dict[str, Any]:
    args: dict[str, Any] = {
        # `trackers` counts the buffer in 30 fps frames and turns it into seconds as buffer / 30.
        "lost_track_buffer": max(1, math.ceil(config.lost_after_s * 30)),
        "frame_rate": keyframe_rate,
        "minimum_consecutive_frames": config.min_hits,
    }
    if config.kind == "botsort":
        args.update(minimum_iou_threshold_first_assoc=config.min_iou, enable_cmc=False,
                    track_activation_threshold=config.activation_threshold)
    else:
        args["minimum_iou_threshold"] = config.min_iou
    if config.kind in ("bytetrack", "sort"):
        args["track_activation_threshold"] = config.activation_threshold
    if config.kind == "bytetrack":
        # ByteTrack starts tracks only from its first association stage, whose own threshold (0.6 by default)
        # would otherwise make any lower activation_threshold do nothing.
        args["high_conf_det_threshold"] = min(_BYTETRACK_HIGH, config.activation_threshold)
    return args


class Tracker:
    """One per source and scheduled task. `update` returns the keyframe's detections with `tracker_id` set
    (-1: not confirmed yet). Ids come from `ids`, shared by a source's trackers, so two tasks' tracks never share
    an id."""

    def __init__(self, config: TrackerConfig, keyframe_rate: float, ids: Iterator[int] | None = None) -> None:
        self._tracker = _KINDS[config.kind](**_arguments(config, keyframe_rate))
        self._ids = ids if ids is not None else itertools.count()
        self._global: dict[int, int] = {}

    def update(self, result: FrameDetections) -> sv.Detections:
        tracked = self._tracker.update(result.detections, timestamp=result.keyframe.frame.pts)
        if len(self._global) > 1024 and hasattr(self._tracker, "tracks"):  # forget ids of dropped tracks
            alive = {int(t.tracker_id) for t in self._tracker.tracks}
            self._global = {raw: g for raw, g in self._global.items() if raw in alive}
        if tracked.tracker_id is not None:
            tracked.tracker_id = np.array(
                [-1 if t < 0 else self._global.setdefault(int(t), next(self._ids)) for t in tracked.tracker_id],
                dtype=int,
            )
        return tracked
