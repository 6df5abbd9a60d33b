"""One source's run, after its reader: sampling, scheduling, tracking and events, handed to its outputs.

frame -> (keyframe -> model -> detections -> tracks -> events) -> outputs (`outputs.Outputs`). A `SourceRun` is
built with its opened reader, the keyframe model, the store and the process's shared outputs (and, for a run that
takes over from a dead one, a `Takeover`), and does one thing: `run(stop)`. The local pipeline and a Ray source
actor both drive it that way.

Files are processed deterministically and completely (`file_loop`): frames wait in a bounded line until the
keyframe after them is tracked too, so each frame's boxes are interpolated between the keyframes around it
(`motion`), while the model works on later keyframes in parallel; nothing is dropped (back-pressure).

Cameras must never build latency (`camera_loop`): a camera has at most one keyframe with the model at a time and
the reader drops stale frames. The live view gets every frame at once, with its tracks where they are predicted
on it; the other outputs get a camera's frames once the keyframe they follow is answered (at most
`live.hold_frames` behind it), so the video and the tracks file show what the model saw on it. Both loops run the
same `steps`; this module holds their state and tells the story from the opened reader to the closed outputs.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path


from streamer.config import Config
from streamer.errors import StreamerError
from streamer.metrics import Metrics
from streamer.model.worker import KeyframeModel
from streamer.outputs.annotate import Annotator
from streamer.outputs.build import Outputs, source_outputs
from streamer.outputs.protocol import Output
from streamer.outputs.snapshots import Snapshots
from streamer.outputs.store import EventStore
from streamer.outputs.switches import Switches
from streamer.pipeline.camera_loop import CameraLoop
from streamer.pipeline.file_loop import FileLoop
from streamer.pipeline.reader import Reader
from streamer.pipeline.sampler import Sampler
from streamer.pipeline.schedule import Schedule
from streamer.pipeline.stats import RunStats
from streamer.pipeline.steps import Jobs
from streamer.pipeline.task_tracking import SourceTracking
from streamer.recording.recorder import Recorder, Segment
from streamer.records import Event, Frame
from streamer.sources import is_url, scrub

_RECENT_LATENCIES = 4096


@dataclass
class SourceSpec:
    """One source to run and where its outputs go."""

    url: str
    events_path: Path
    video_path: Path | None = None
    name: str | None = None
    live: bool | None = None  # None: guessed (see `sources.guess_live`)
    db_path: Path | None = None  # SQLite event store; sources naming the same file share it
    tracks_path: Path | None = None  # the tracks of every frame (JSONL, `sinks.TracksSink`)


@dataclass(frozen=True)
class Takeover:
    """How a run takes over from one whose process died (a restarted Ray source actor): `append` continues
    the log (a camera), `replay` is the number of events already delivered by the dead run that this one will
    make again and only log (a file redone from its start), and track ids start at `first_track_id`."""

    append: bool = False
    replay: int = 0
    first_track_id: int = 0
    counted: RunStats | None = None  # what the dead run had counted, for a summary of the whole source
    closing: tuple[Event, ...] = ()  # `object_left` of the tracks the dead run left open (a camera's)


class SourceRun(FileLoop, CameraLoop):
    """One source from its opened reader to its outputs; see the module's docstring."""

    def __init__(self, spec: SourceSpec, config: Config, reader: Reader, model: KeyframeModel,
                 shared: Sequence[Output] = (), store: EventStore | None = None, takeover: Takeover | None = None,
                 metrics: Metrics | None = None, on_progress: Callable[[RunStats], None] | None = None,
                 switches: Switches | None = None) -> None:
        """`reader`: opened (`reader.open_reader`); `shared`: outputs of the process that serve every source
        (MQTT, webhooks, the live view; closed by whoever made them); `store`: shared with other sources;
        `metrics`: the process's histograms, if anyone serves them; `on_progress`: called with the stats after
        every frame, on this run's thread (read them there; keep a `.copy()`); `switches`: detection, recording
        and snapshots turned off and on while it runs."""
        self.spec = spec
        self.config = config
        self.reader = reader
        self.model = model
        self.shared = list(shared)
        self.store = store
        self.takeover = takeover or Takeover()
        self.metrics = metrics
        self.on_progress = on_progress
        self.switches = switches
        self._detecting = True  # the detect switch at the last frame
        self._still_sent = False  # the last keyframe sent was still (`Keyframe.still`)
        self._stats = RunStats(source=reader.name, live=reader.live, info=reader.info, events_path=spec.events_path,
                               tracks_path=spec.tracks_path, db_path=spec.db_path if store is not None else None,
                               video_path=spec.video_path)
        if self.takeover.counted is not None:
            before = self.takeover.counted
            self._stats.frames, self._stats.keyframes, self._stats.detections = (before.frames, before.keyframes,
                                                                                  before.detections)
            self._stats.events, self._stats.event_counts = before.events, dict(before.event_counts)
        self.run_id = uuid.uuid4().hex[:8] + "-"  # in the names of the files this run writes beside others'
        self.max_track_id = self.takeover.first_track_id - 1  # the highest track id in an event so far
        self._ids = itertools.count(self.takeover.first_track_id)  # the source's track ids, whatever tracks them
        self.last_frame: Frame | None = None
        self.latencies: deque[tuple[float, float]] = deque(maxlen=_RECENT_LATENCIES)  # (wall time, ms)
        self.sampler = Sampler(config.sampler)
        self.schedule = Schedule(config.tasks())
        self.annotator = Annotator()
        self.snapshots = Snapshots(spec.events_path.parent, self.run_id) if config.events.snapshots else None
        self.tracking: SourceTracking | None = None  # once the first frame tells the stream's rate and size
        self.outputs: Outputs | None = None
        self._held: list[Frame] = []  # frames waiting for the keyframe after (a file) or before (a camera) them
        self._inflight: tuple[Frame, Jobs] | None = None  # a camera's keyframe with the model
        self._faulted = False  # a camera's fault asked for a reconnect: its frames until then are let go
        self._last_fault = float("-inf")
        self._sent: set[int] = set()  # indices of held frames that went to the model

    def stats(self) -> RunStats:
        """A copy of the stats with the reader's own counters, which move even while no frame arrives."""
        stats = self._stats.copy()
        stats.dropped, stats.reconnects = self.reader.dropped, self.reader.reconnects
        recorder = self.reader.recorder
        if recorder is not None:
            stats.segments, stats.segments_deleted = recorder.segments, recorder.retention.deleted
        if stats.live and stats.state == "running":
            stats.state = self.reader.state
        return stats

    def run(self, stop: threading.Event) -> RunStats:
        """Run the source to its end or `stop`. The outputs are closed on every way out; an error ends up in the
        returned stats (`error`), so one source's failure stops no other."""
        stats = self._stats
        stats.started = time.monotonic()
        stats.state = "running"
        try:
            if self.reader.live and self.config.record.enabled and self.store is not None:
                self.reader.recorder = Recorder(self.store, self.reader.name, self.config.record, self.run_id,
                                                wanted=lambda: self._on("record"))
                stats.tracks_path = None  # beside each segment
            try:
                self.outputs = source_outputs(self.spec, self.config, lambda: self.reader.info, self.store,
                                              self.takeover.append, self.shared, self.takeover.replay,
                                              self.reader.live, self.run_id, self.reader.recorder)
            except BaseException:
                if self.reader.recorder is not None:
                    self.reader.recorder.close()  # its reader never started, so never closes it
                raise
            self._deliver(list(self.takeover.closing))
            self.reader.start()
            if self.reader.live:
                self._run_live(stop)
            else:
                self._run_file(stop)
        except Exception as exc:
            stats.error = self._as_error(exc)
        finally:
            self.reader.stop()
            stats.stopped_early = stop.is_set()
            stats.seconds = time.monotonic() - stats.started
            try:
                self._close()
            except Exception as exc:
                stats.error = stats.error or self._as_error(exc)
            stats.dropped, stats.reconnects = self.reader.dropped, self.reader.reconnects
            stats.state = "ended"
        return self.stats()

    def _as_error(self, exc: Exception) -> StreamerError:
        """Bad input as it is; a bug as one line naming the source (a bug in one source must not take the
        others down silently), its cause kept for --debug's traceback."""
        if isinstance(exc, StreamerError):
            return exc
        error = StreamerError(f"{self._stats.source}: {type(exc).__name__}: {scrub(str(exc), [self.spec.url])}")
        error.__cause__ = exc
        return error

    def _close(self) -> None:
        """Frames still held are written, open tracks end with the stream; then every output is closed, whatever
        fails first."""
        if self.outputs is None:
            return
        try:
            self._release_held()
            if self.tracking is not None:
                self._deliver(self.tracking.finish(self.last_frame))
            self._index_original()
        finally:
            self.outputs.close()

    def _index_original(self) -> None:
        """A file on disk is its own recording: indexed (a link, never a copy, never deleted by retention), so
        its events' clips are cut from it as a camera's are from its segments."""
        path = Path(self.spec.url)
        if (self.reader.live or self.store is None or not self.config.record.enabled or self.last_frame is None
                or is_url(self.spec.url) or not path.is_file()):
            return
        frame_s = 1.0 / float(self._stats.info.fps) if self._stats.info and self._stats.info.fps else 0.0
        self.store.add_segment(Segment(
            self._stats.source, str(path.resolve()), time.time() - self._stats.seconds, time.time(), 0.0,
            self.last_frame.pts + frame_s, 0, self.last_frame.index, path.stat().st_size, original=True,
            run=self.run_id, tracks=str(self.spec.tracks_path.resolve()) if self.spec.tracks_path else None))
