"""The outputs layer: where a source's events and frames leave the pipeline, all through one small protocol.

A run hands out two things, in stream order: events (`Logged`: the record and its one line of JSON, made once,
the same bytes for every output) and frames with their tracks (`Shown`: the camera's pixels, untouched, and a
drawn copy made once, only if an output asks for it). Every output (the event log, the tracks file, the
annotated video, the event store, MQTT and webhooks, the live view) is an `Output`; adding one is a class and a
line in `source_outputs` or `process_outputs`, which the local pipeline and a Ray source actor both call.
`Outputs` hands each event and frame to every output and closes them all, whatever fails first.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from streamer.annotate import Annotator
from streamer.config import Config
from streamer.records import Event, Frame, FrameTracks, Logged, StreamInfo


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


class Outputs:
    """Every output of one source. `own` are closed here; `shared` (one process's live view, MQTT and webhooks
    serving every source) are closed by whoever made them. `replay`: how many events a dead run delivered
    already, which only outputs that `replays` take again; `live`: a camera, whose immediate outputs take
    `preview` frames instead of final ones."""

    def __init__(self, own: Sequence[Output], shared: Sequence[Output] = (), replay: int = 0, live: bool = False,
                 folder: Path | None = None):
        """`folder`: the event log's, which events' paths (snapshots) are relative to."""
        self.folder = folder
        self.own = list(own)
        self.all = self.own + list(shared)
        self.replay = replay
        self.live = live
        self.previewing = live and any(output.immediate for output in self.all)  # a camera shown at once

    @property
    def replaying(self) -> bool:
        return self.replay > 0

    def event(self, event: Event) -> bool:
        """The event to every output; False when it was only logged again (a takeover's replay)."""
        logged = Logged.of(event, self.folder)
        replayed = self.replaying
        for output in self.all:
            if output.replays or not replayed:
                output.event(logged)
        if replayed:
            self.replay -= 1
        return not replayed

    def frame(self, shown: Shown) -> None:
        """A frame whose tracks are final."""
        replayed = self.replaying
        for output in self.all:
            if (output.replays or not replayed) and not (output.immediate and self.live):
                output.frame(shown)

    def preview(self, shown: Shown) -> None:
        """A camera's frame as it arrives, for the outputs that show it at once."""
        for output in self.all:
            if output.immediate:
                output.frame(shown)

    def close(self) -> None:
        """Close every output this source owns, each whatever the others do; the first failure is raised."""
        with contextlib.ExitStack() as stack:
            for output in self.own:
                stack.callback(output.close)


def source_outputs(spec, config: Config, stream: Callable[[], StreamInfo], store=None, append: bool = False,
                   shared: Sequence[Output] = (), replay: int = 0, live: bool = False, run_id: str = "",
                   recorder=None) -> Outputs:
    """One source's outputs as its spec (a `SourceSpec`) and the config ask: the event log, the tracks file, the
    annotated video and the event store; `stream` tells the video the stream's rate and size when its first frame
    comes; `append`: continue the log and tracks of a run whose process died; `run_id`: in the name of every file
    the run writes beside other runs' (saved keyframes); `recorder`: a recorded camera's, whose tracks go beside
    each of its segments instead of into one file that grows for as long as the camera runs."""
    from streamer.sinks import AnnotatedVideo, EventLog, SegmentTracks, TracksFile
    from streamer.store import StoreOutput

    own: list[Output] = []
    try:
        keep = config.record.events_retain_days if recorder is not None else None  # a camera run for months
        own.append(EventLog(spec.events_path, append=append, keep_days=keep))
        if spec.tracks_path is not None:
            own.append(SegmentTracks(recorder) if recorder is not None else TracksFile(spec.tracks_path, append=append))
        if spec.video_path is not None:
            out = config.output
            own.append(AnnotatedVideo(spec.video_path, stream, out.codec, out.preset, out.crf))
        if store is not None:
            own.append(StoreOutput(store, Path(spec.events_path).parent, config.output.save_keyframes, run_id))
    except BaseException:
        Outputs(own).close()
        raise
    return Outputs(own, shared, replay, live, Path(spec.events_path).parent)


def process_outputs(config: Config, outbox_dir: Path, client_tag: str | None = None,
                    sources: Sequence[str] = (), switches=None) -> list[Output]:
    """The outputs one process serves for all its sources (named in `sources`): MQTT and webhooks (each with its
    outbox in `outbox_dir`; `client_tag` keeps MQTT client ids apart between processes). `switches`
    (`switches.Switches`): turned from Home Assistant through MQTT."""
    from streamer.delivery import event_sinks

    return list(event_sinks(config, outbox_dir, client_tag, list(sources), switches))
