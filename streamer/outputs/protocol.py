"""The output protocol, on its own so that every output can take it without importing the others: an `Output`
takes events (`Logged`: the record and its one line of JSON, made once, the same bytes for every output) and
frames with their tracks (`Shown`: the camera's pixels, untouched, and a drawn copy made once, only if an output
asks for it), in stream order, and is closed once. `streamer.outputs.build` builds a run's outputs and hands each
event and frame to all of them.
"""

from __future__ import annotations

import numpy as np

from streamer.outputs.annotate import Annotator
from streamer.records import Frame, FrameTracks, Logged


class Output:
    """One output. `replays`: it also takes what a run taking over from a dead one redoes (a file redone from its
    start writes its log, tracks and video again, but the store and the senders got those events already).
    `immediate`: it takes a camera's frames as they arrive, with the tracks predicted on them (the live view);
    the others take every frame once its keyframe is answered and its tracks are final."""

    replays = False
    immediate = False

    def event(self, logged: Logged) -> None:
        """Take one event; must not block the source for long (queue it if delivery can wait)."""

    def frame(self, shown: "Shown") -> None:
        """Take one frame with its tracks, in frame order."""

    def close(self) -> None:
        """Flush and close; called once, after the last event and frame."""


class Shown:
    """A frame as outputs get it: the decoded frame (read-only), its tracks (one `FrameTracks` per task), whether
    it went to the model, and `annotated`, the tracks drawn on a copy, made on first use and shared."""

    __slots__ = ("frame", "tracks", "keyframe", "_annotator", "_drawn")

    def __init__(self, frame: Frame, tracks: list[FrameTracks], annotator: Annotator, keyframe: bool = False) -> None:
        self.frame, self.tracks, self.keyframe = frame, tracks, keyframe
        self._annotator = annotator
        self._drawn: np.ndarray | None = None

    @property
    def source(self) -> str:
        return self.frame.source

    @property
    def annotator(self) -> Annotator:
        """The source's annotator: for `sibling`, never to draw with off the source's thread."""
        return self._annotator

    @property
    def annotated(self) -> np.ndarray:
        """Drawn with the source's annotator: only on the source's own thread (outputs' `frame`), in frame order."""
        if self._drawn is None:
            self._drawn = self.drawn_with(self._annotator)
            self._drawn.setflags(write=False)
        return self._drawn

    def drawn_with(self, annotator: Annotator) -> np.ndarray:
        """The tracks drawn on a copy with `annotator`: another thread's own (`Annotator.sibling`), which takes
        the source's zones and lines but never touches the source's annotator."""
        if annotator is not self._annotator:
            annotator.follow(self._annotator)
        layers = [annotator.layer(t.detections) for t in self.tracks if len(t.detections)]
        return annotator.draw(self.frame.image, layers)
