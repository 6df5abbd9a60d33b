"""Media time of a camera: one increasing clock across pts-less frames, reconnects and streams that jump back.

A camera's own timestamps restart on every connection, are missing on RTSP's first frame, and go backwards when
a looped or spliced stream wraps. Events, trackers and the video need one clock that never goes back: this one
follows the stream's pts while they move forward, steps one frame on when there are none, and continues a new
connection after the old one plus the outage's wall-clock length. Pure arithmetic, no I/O, so it is tested as a
table of cases.

It is the one boundary for time: whatever the decoder says (None; NaN for the frames a flushed decoder returns,
which PyAV gives no time base; infinity; a pts that leaps hours ahead, as a camera whose clock was reset does),
every time it returns is finite and never goes back, so no NaN reaches an event, the store or a tracker.
"""

from __future__ import annotations

import math

_MAX_LEAP_S = 3600.0  # a stream's pts leaping further ahead than this is a broken clock, not an hour of silence


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


class MediaClock:
    """`step_s`: one frame interval. `last` is the media time of the last frame (None before the first).
    `max_leap_s`: a leap ahead past this is a broken clock (a camera's); None for a file, whose pts are where its
    frames are in it, however far apart."""

    def __init__(self, step_s: float, last: float | None = None, max_leap_s: float | None = _MAX_LEAP_S) -> None:
        self.step_s = step_s if math.isfinite(step_s) and step_s > 0 else 0.04
        self.last = _finite(last)
        self.max_leap_s = max_leap_s
        self._base = 0.0
        self._first_raw: float | None = None
        self._frames = 0  # in this session

    def start_session(self, gap_s: float = 0.0) -> None:
        """A new connection: its first frame comes one step after the last one, plus `gap_s` of outage."""
        self._base = (0.0 if self.last is None else self.last + self.step_s) + max(_finite(gap_s) or 0.0, 0.0)
        self._first_raw = None
        self._frames = 0

    def next(self, raw: float | None) -> float:
        """The media time of the next frame, whose stream pts (seconds) is `raw`, or None (or NaN) when it has none."""
        raw = _finite(raw)
        if raw is not None and self._first_raw is None:
            # The first timed frame continues one step after what came before (RTSP's first frame often has no
            # pts at all); later ones follow the stream's own clock from there.
            self._first_raw = raw
            if self._frames:
                self._base = self.last + self.step_s
        if raw is None or self._first_raw is None:
            pts = self._base if self._frames == 0 else self.last + self.step_s
        else:
            pts = self._base + (raw - self._first_raw)
            leapt = self.max_leap_s is not None and self.last is not None and pts - self.last > self.max_leap_s
            if self.last is not None and (pts <= self.last or leapt):
                # The stream's pts went back (a loop or splice) or leapt hours ahead (a clock reset): go on one
                # step after the last frame, and follow the stream's clock from this frame on.
                self._first_raw, self._base = raw, self.last + self.step_s
                pts = self._base
        self._frames += 1
        self.last = pts
        return pts
