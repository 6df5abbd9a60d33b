"""The outputs layer: where a source's events and frames leave the pipeline, all through one small protocol
(`streamer.outputs.protocol`: `Output` and `Shown`).

Every output (the event log, the tracks file, the annotated video, the event store, MQTT and webhooks, the live
view) is an `Output`; adding one is a class and a line in `source_outputs` or `process_outputs`, which the local
pipeline and a Ray source actor both call. `Outputs` hands each event and frame to every output and closes them
all, whatever fails first. This module stands above the outputs it builds: none of them imports it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path

from streamer.config import Config
from streamer.outputs.delivery import event_sinks
from streamer.outputs.protocol import Output, Shown
from streamer.outputs.sinks import AnnotatedVideo, EventLog, SegmentTracks, TracksFile
from streamer.outputs.store import StoreOutput
from streamer.records import Event, Logged, StreamInfo


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
    return list(event_sinks(config, outbox_dir, client_tag, list(sources), switches))
