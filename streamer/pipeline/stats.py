"""What a source's run did so far, for progress bars, status lines, /metrics and the summary.

The source's own thread is the only writer of its `RunStats`; everyone else (console, HTTP server, Ray driver)
reads copies through a `StatsView`, so nobody sees a half-updated record or writes one by accident.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from streamer.errors import StreamerError
from streamer.records import StreamInfo


@dataclass
class RunStats:
    source: str
    live: bool = False
    info: StreamInfo | None = None
    state: str = "starting"  # starting, running, ended; for a camera while running: up, down, connecting
    frames: int = 0
    keyframes: int = 0
    still_keyframes: int = 0  # a camera's keyframes sent while nothing moved and no track was held
    detections: int = 0
    dropped: int = 0
    reconnects: int = 0
    faults: int = 0  # a camera's faults past its reader (an exception on its path), each followed by a reconnect
    latency_ms: float | None = None  # frame read -> its keyframe's tracks and events, latest
    events: int = 0
    event_counts: dict[str, int] = field(default_factory=dict)
    questions_asked: int = 0  # per-object questions (questions.py)
    questions_answered: int = 0
    questions_dropped: int = 0
    segments: int = 0  # recorded segments closed and indexed (cameras)
    segments_deleted: int = 0  # recorded segments deleted by retention and the storage guard
    started: float = field(default_factory=time.monotonic)
    seconds: float = 0.0  # processing time, after the model has loaded
    load_seconds: float = 0.0
    video_path: Path | None = None
    events_path: Path | None = None
    tracks_path: Path | None = None
    db_path: Path | None = None
    stopped_early: bool = False
    error: StreamerError | None = None

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    @property
    def fps_so_far(self) -> float:
        """Frames per second since the source started, while it runs; over the whole run once it ended."""
        if self.state == "ended":
            return self.fps
        return self.frames / max(1e-9, time.monotonic() - self.started)

    @property
    def up(self) -> bool:
        """A camera delivering frames, or a file being read (or read to its end) without an error."""
        if self.live:
            return self.state == "up"
        return self.state in ("running", "ended") and self.error is None

    def copy(self) -> "RunStats":
        return dataclasses.replace(self, event_counts=dict(self.event_counts))


class SourcesFailed(StreamerError):
    """Some sources failed: the first one's error (naming the others), with every source's stats, so the
    sources that finished whole are reported all the same."""

    def __init__(self, results: list[RunStats]) -> None:
        failed = [stats for stats in results if stats.error is not None]
        others = "" if len(failed) == 1 else (f" (and {len(failed) - 1} more source{'s' * (len(failed) > 2)} "
                                              f"failed: {', '.join(s.source for s in failed[1:])})")
        super().__init__(f"{failed[0].error}{others}")
        self.results = results


def outcome(results: list[RunStats], load_seconds: float) -> list[RunStats]:
    """What a driver returns once every source has ended: each run's stats with the model's load time, or, when
    a source failed, `SourcesFailed` with them all, raised after all outputs are closed."""
    for stats in results:
        stats.load_seconds = load_seconds
    if any(stats.error is not None for stats in results):
        if len(results) == 1:
            raise results[0].error
        raise SourcesFailed(results)
    return results


class StatsView(Protocol):
    """Anything the console, the server and the summary read a source's progress from."""

    def stats(self) -> RunStats:
        """A copy of the latest stats."""


@dataclass
class PostedStats:
    """Stats that change only when replaced whole: a source before its run starts, or a run elsewhere as it
    last posted them (Ray)."""

    current: RunStats

    def stats(self) -> RunStats:
        return self.current
