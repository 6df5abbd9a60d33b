"""Files the pages fetch: recordings, clips, snapshots and keyframes, with the Range requests a browser's <video>
seeks with, and the clips cut for the pages, kept a while."""

from __future__ import annotations

import re
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from pathlib import Path

from starlette.responses import FileResponse, RangeNotSatisfiable

from streamer.errors import StreamerError


def byte_range(header: str | None, size: int) -> tuple[int, int] | str | None:
    """The one byte range a Range header asks of `size` bytes (first, last), "unsatisfiable" (416), or None: no
    Range, or one this server ignores and answers with the whole file, as RFC 9110 lets it (another unit,
    several ranges, an inverted or malformed one). Numbers of any length are read without `int` on them whole."""
    match = re.fullmatch(r"\s*bytes\s*=\s*([0-9]*)\s*-\s*([0-9]*)\s*", header or "")
    if match is None or not (match.group(1) or match.group(2)):
        return None

    def number(digits: str) -> int:  # past 18 digits: more than any file holds
        return int(digits) if len(digits) <= 18 else 1 << 62

    if match.group(1):
        first = number(match.group(1))
        last = min(number(match.group(2)), size - 1) if match.group(2) else size - 1
        if match.group(2) and number(match.group(2)) < first:
            return None  # inverted: not a valid range, so ignored
        return (first, last) if first <= last else "unsatisfiable"
    suffix = number(match.group(2))
    return (max(0, size - suffix), size - 1) if suffix and size else "unsatisfiable"


class MediaFile(FileResponse):
    """Starlette's file response (Range, If-Range, ETag, sent in chunks off the event loop) with the Range header
    read as `byte_range` reads it: one range served, whatever else a server may ignore answered whole (Starlette
    answers a malformed one 400 and several as multipart, which no <video> asks for)."""

    @classmethod
    def _parse_range_header(cls, http_range: str, file_size: int) -> list[tuple[int, int]]:
        asked = byte_range(http_range, file_size)
        if asked == "unsatisfiable":
            raise RangeNotSatisfiable(file_size)
        return [] if asked is None else [(asked[0], asked[1] + 1)]


class Clips:
    """Clips cut for the pages, kept in a folder of the server's own (a few, newest kept) so seeking in one, a
    Range request each, does not cut it again; the folder goes when the server closes."""

    def __init__(self, keep: int = 8) -> None:
        self.keep = keep
        self._folder: Path | None = None
        self._made: OrderedDict[tuple, tuple[Path, object]] = OrderedDict()  # key -> (file, its `clip.Cut`)
        self._lock = threading.Lock()

    def cut(self, db, span):
        """(the clip's file, its `clip.Cut`), cut now or kept from before."""
        from streamer.outputs.store import recordings
        from streamer.recording.clip import cut

        held = () if span.run is not None else tuple(s.id for s in recordings(db, span.source, span.start, span.end))
        key = (str(db), span, held)
        with self._lock:
            if key in self._made and self._made[key][0].exists():
                self._made.move_to_end(key)
                return self._made[key]
            if self._folder is None:
                self._folder = Path(tempfile.mkdtemp(prefix="streamer-clips-"))
            path = self._folder / f"{len(self._made)}-{time.monotonic_ns()}.mp4"
            try:
                made = cut(db, span, path)
            except StreamerError as exc:
                if "cannot write" in str(exc):
                    raise StreamerError("cannot cut the clip here: the server's disk is full or read-only") from None
                raise
            self._made[key] = path, made
            while len(self._made) > self.keep:
                _, (old, _) = self._made.popitem(last=False)
                old.unlink(missing_ok=True)
            return path, made

    def close(self) -> None:
        with self._lock:
            if self._folder is not None:
                shutil.rmtree(self._folder, ignore_errors=True)
                self._folder = None
