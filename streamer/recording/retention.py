"""Retention: which recorded segments a store keeps, so footage never outgrows the disk.

Run after every segment a recorder closes. In order: footage older than `record.retain_days` goes unless it is
around an event (from `pre_s` before to `post_s` after) younger than `record.events_retain_days`; footage older
than that goes whatever it shows; then the oldest goes, footage around events last, while all of a store's
footage is over `record.retain_gb`; and whenever the disk under the recordings has less than
`record.min_free_gb` free, the oldest goes first (the storage guard), so recording never stops on a full disk.
A camera may have its own `retain_days` and `retain_gb` (`record.sources`), applied as well as the store's.
A segment's file and its index row go together, so nothing points at a deleted file; every deletion is counted.
"""

from __future__ import annotations

import bisect
import logging
import shutil
import time
from pathlib import Path

from streamer.config import RecordConfig
from streamer.outputs.sinks import tracks_beside

log = logging.getLogger("streamer.recording.retention")

# Events that are about what the camera saw; a camera going down or a worker restarting keeps no footage.
_NOT_SEEN = ("source_down", "source_up", "worker_restarted", "worker_lost")


class Retention:
    def __init__(self, store, config: RecordConfig) -> None:
        self.store = store
        self.config = config
        self.deleted = 0  # segments deleted by age or size
        self.guarded = 0  # of those, deleted because the disk was nearly full

    def enforce(self, now: float | None = None) -> int:
        """Apply every rule, each camera's own (`record.sources`) and the store's; the number of segments
        deleted. Only what may go is read: the segments past their days, and the oldest ones while over a cap."""
        now = time.time() if now is None else now
        cfg = self.config
        around = _Intervals(self._around_events(now))
        days = {name: own.retain_days for name, own in cfg.sources.items() if own.retain_days}
        gone = {}
        for segment in self.store.segments(ended_before=now - min([cfg.retain_days, *days.values()]) * 86400):
            age = now - segment.end_wall
            if age > cfg.events_retain_days * 86400 or (
                    age > days.get(segment.source, cfg.retain_days) * 86400
                    and not around.overlaps(segment.start_wall, segment.end_wall)):
                gone[segment.id] = segment
        self._delete(list(gone.values()))
        caps = [(name, own.retain_gb) for name, own in cfg.sources.items() if own.retain_gb] + [(None, cfg.retain_gb)]
        for source, cap in caps:
            over = self.store.recorded_bytes(source) - cap * 1e9
            for plain in (True, False):  # footage around events last
                for segment in self._oldest(source) if over > 0 else ():
                    if over <= 0:
                        break
                    if plain == around.overlaps(segment.start_wall, segment.end_wall):
                        continue
                    self._delete([segment])
                    gone[segment.id] = segment
                    over -= segment.bytes
        return len(gone) + self.guard()

    def _oldest(self, source: str | None = None, batch: int = 500):
        """The recorded segments (of `source`; all: None), oldest first, read a batch at a time."""
        last = None
        while True:
            segments = self.store.segments(limit=batch, after=last, source=source)
            yield from segments
            if len(segments) < batch:
                return
            last = segments[-1]

    def guard(self) -> int:
        """The storage guard: the oldest footage goes while the disk has less than `min_free_gb` free."""
        want = self.config.min_free_gb * 1e9
        folder = Path(self.store.path).parent
        n = 0
        while _free(folder) < want:
            oldest = self.store.segments(limit=1)
            if not oldest:
                break
            self._delete(oldest)
            self.guarded += 1
            n += 1
        return n

    def _around_events(self, now: float) -> list[tuple[float, float]]:
        since = now - self.config.events_retain_days * 86400
        return [(t - self.config.pre_s, t + self.config.post_s) for t in self.store.event_times(since, _NOT_SEEN)]

    def _delete(self, segments) -> None:
        if not segments:
            return
        base = Path(self.store.path).parent
        for segment in segments:
            try:
                if _own(base, segment.path):
                    (base / segment.path).unlink(missing_ok=True)
                    tracks_beside(base / segment.path).unlink(missing_ok=True)
                else:
                    log.warning("the recording %s is not in the store's own recordings (a link, or a path out of "
                                "them): its index entry goes, the file is left alone", segment.path)
            except OSError as exc:
                log.warning("cannot delete the recording %s: %s", base / segment.path, exc)
                continue
            self.store.delete_segment(segment.id)
            self.deleted += 1


class _Intervals:
    """Time intervals, merged and sorted, asked whether they overlap another: O(log n) each."""

    def __init__(self, intervals: list[tuple[float, float]]) -> None:
        merged: list[list[float]] = []
        for start, end in sorted(intervals):
            if merged and start <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], end)
            else:
                merged.append([start, end])
        self.starts = [m[0] for m in merged]
        self.ends = [m[1] for m in merged]

    def overlaps(self, start: float, end: float) -> bool:
        i = bisect.bisect_right(self.starts, end) - 1  # the last interval starting before `end`
        return i >= 0 and self.ends[i] >= start


def _own(base: Path, path: str) -> bool:
    """Whether a segment's file lies in the store's own `recordings/` tree, reached through no link: a folder of
    it replaced by a link to elsewhere (or a path in the index that leads out) never makes retention delete
    outside. The file itself may be a link: unlinking removes the link, not what it points to."""
    rel = Path(path)
    if rel.is_absolute() or ".." in rel.parts or rel.parts[:1] != ("recordings",):
        return False
    folder = base
    for part in rel.parts[:-1]:
        folder = folder / part
        if folder.is_symlink():
            return False
    return True


def _free(folder: Path) -> float:
    while not folder.exists():
        folder = folder.parent
    return shutil.disk_usage(folder).free
