"""The live view: an output of every source that keeps each one's latest frame and the latest events for the
pages, drawing and encoding a frame only when someone watches."""

from __future__ import annotations

import threading
from collections import deque

import cv2

from streamer.outputs.protocol import Output, Shown
from streamer.records import Logged
from streamer.sources import safe_name


class _Feed:
    """One source's live view as its watchers get it: the latest frame drawn and encoded once, whoever watches
    (fifty watchers cost one JPEG a frame), with an annotator of its own (the source's belongs to its thread)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.annotator = None
        self.count = 0
        self.jpeg: bytes | None = None


class LiveView(Output):
    """An output of every source: keeps each source's latest frame with its tracks (a camera's as it arrives) and
    the latest events. It only keeps references on the source's thread; drawing and encoding happen on the
    watchers' side (`jpeg`), never on the source's state, so a watcher can neither slow nor break a camera."""

    immediate = True
    replays = True

    def __init__(self, keep_events: int = 200) -> None:
        self._frames: dict[str, tuple[int, Shown | None]] = {}
        self._feeds: dict[str, _Feed] = {}
        self._events: deque[tuple[int, dict]] = deque(maxlen=keep_events)
        self._seq = 0
        self._lock = threading.Lock()

    def frame(self, shown: Shown) -> None:
        key = safe_name(shown.source)
        with self._lock:
            count = self._frames.get(key, (0, None))[0] + 1
            self._frames[key] = (count, shown)  # drawn only when someone watches

    def event(self, logged: Logged) -> None:
        with self._lock:
            self._seq += 1
            # the page gets no file names of the server: snapshots are served by the review page's URLs; `camera`:
            # the source's name on the pages (its row, its MJPEG path)
            self._events.append((self._seq, {**{k: v for k, v in logged.data.items() if k != "snapshot"},
                                             "camera": safe_name(logged.event.source)}))

    def drawn(self, key: str) -> tuple[int, bytes | None] | None:
        """(frames seen, the latest JPEG) of a source if that frame is encoded already; None if it is still to be
        drawn (`jpeg` draws it: CPU work, for a worker thread)."""
        with self._lock:
            count = self._frames.get(key, (0, None))[0]
            feed = self._feeds.get(key)
        if feed is None or feed.count != count:
            return None if count else (0, None)
        return feed.count, feed.jpeg

    def jpeg(self, key: str, quality: int = 80) -> tuple[int, bytes | None]:
        """(frames seen, the latest one drawn as a JPEG) of a source; (0, None) before its first frame."""
        with self._lock:
            count, shown = self._frames.get(key, (0, None))
            feed = self._feeds.setdefault(key, _Feed())
        with feed.lock:
            if shown is not None and feed.count != count:
                if feed.annotator is None:
                    feed.annotator = shown.annotator.sibling()
                ok, jpeg = cv2.imencode(".jpg", shown.drawn_with(feed.annotator), [cv2.IMWRITE_JPEG_QUALITY, quality])
                if ok:
                    feed.count, feed.jpeg = count, jpeg.tobytes()
            return feed.count, feed.jpeg

    def events_after(self, after: int) -> list[dict]:
        with self._lock:
            return [{"seq": seq, **e} for seq, e in self._events if seq > after]
