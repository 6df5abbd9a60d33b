"""The task schedule: which tasks run on a keyframe, and where in the frame.

Each entry of `Config.schedule` runs on every `every_n_keyframes`-th keyframe of a source, at most once per
`every_s` seconds of video, and optionally only inside a zone (cropped before the model; boxes are mapped back
to frame pixels by the worker).
"""

from __future__ import annotations

from streamer.config import TaskEntry
from streamer.pipeline.zones import to_pixels
from streamer.records import Frame, Keyframe


def zone_pixels(zone: tuple[float, float, float, float] | None, width: int, height: int):
    """A zone in frame pixels, clamped to the frame; relative zones (all values <= 1) are scaled."""
    if zone is None:
        return None
    (x1, y1), (x2, y2) = to_pixels([zone[:2], zone[2:]], width, height)
    box = (max(0, int(x1)), max(0, int(y1)), min(width, int(round(x2))), min(height, int(round(y2))))
    if box[2] - box[0] < 2 or box[3] - box[1] < 2:
        return None
    return box


class Schedule:
    """One per source: turns a keyframe into the `Keyframe` jobs of the entries due on it."""

    def __init__(self, entries: list[TaskEntry]) -> None:
        self.entries = entries
        self._count = 0
        self._last_run: list[float | None] = [None] * len(entries)

    def jobs(self, frame: Frame, still: bool = False) -> list[tuple[int, Keyframe]]:
        """(entry index, job) for each entry due on this keyframe; `still`: see `Keyframe.still`."""
        height, width = frame.image.shape[:2]
        due = []
        for i, entry in enumerate(self.entries):
            if self._count % entry.every_n_keyframes:
                continue
            last = self._last_run[i]
            if entry.every_s is not None and last is not None and frame.pts - last < entry.every_s - 1e-6:
                continue
            self._last_run[i] = frame.pts
            due.append((i, Keyframe(frame, entry.task, entry.prompt, zone_pixels(entry.zone, width, height),
                                    still=still)))
        self._count += 1
        return due
