"""The pipeline in one process: every source's reader and `SourceRun` on threads of their own, one model worker.

reader thread -> sampler -> shared worker thread -> trackers -> events -> sinks, per source (`source_run`). One
worker serves every source, batching their keyframes; each source runs on its own thread, so a frozen camera
stalls nobody else. A stop request (SIGINT/SIGTERM, --duration) ends reading, finishes what is in hand, and
closes the outputs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from streamer.config import Config
from streamer.errors import Stopped
from streamer.metrics import Metrics
from streamer.model.worker import Detector, Worker
from streamer.outputs.protocol import Output
from streamer.outputs.store import EventStore
from streamer.outputs.switches import Switches
from streamer.pipeline.reader import Reader, open_reader
from streamer.pipeline.camera_loop import DRAIN_S
from streamer.pipeline.source_run import SourceRun, SourceSpec
from streamer.pipeline.stats import PostedStats, RunStats, StatsView, outcome
from streamer.sources import display_name

__all__ = ["Driver", "Pipeline", "RunStats", "SourceSpec"]


class Driver(Protocol):
    """What the command line drives: `Pipeline` in one process, `streamer.cluster.RayPipeline` on Ray."""

    runs: list[StatsView]
    model_loaded: bool

    def run_many(self, specs: list[SourceSpec], on_progress=None, duration_s: float | None = None) -> list[RunStats]:
        """Run every source to its end, a stop or the duration; raise the first source's error."""

    def stop(self) -> None:
        """Ask the run to wind down; safe from a signal handler."""

    def status_lines(self) -> list[str]:
        """Lines about the machinery beyond the sources (Ray's workers), for status lines and the summary."""


class Pipeline:
    def __init__(self, config: Config, make_detector: Callable[[], Detector], shared: Sequence[Output] = (),
                 switches: Switches | None = None) -> None:
        """`make_detector` is called once the sources have opened, so bad input fails before a slow model load.
        `shared` outputs get every event and frame of every source (MQTT, webhooks, the live view); whoever made
        them closes them. `switches`: each source's detection, recording and snapshots, turned while it runs."""
        self.config = config
        self.make_detector = make_detector
        self.shared = list(shared)
        self.switches = switches
        self.metrics = Metrics()
        self._stop = threading.Event()
        self.runs: list[StatsView] = []  # every source from the start; a SourceRun once it runs
        self.worker: Worker | None = None
        self.model_loaded = False

    def stop(self) -> None:
        """Ask a running pipeline to wind down; safe from a signal handler or a timer."""
        self._stop.set()

    def status_lines(self) -> list[str]:
        return []

    def run(self, source: str, video_path: Path | None, events_path: Path, on_progress=None,
            tracks_path: Path | None = None) -> RunStats:
        """One source; raises its error, if any, after its outputs are closed."""
        [stats] = self.run_many([SourceSpec(source, events_path, video_path, tracks_path=tracks_path)], on_progress)
        return stats

    def run_many(self, specs: list[SourceSpec], on_progress=None, duration_s: float | None = None) -> list[RunStats]:
        """Run every source to its end, a stop, or `duration_s` seconds after the sources started (the model
        load not counted). A source's failure does not stop the others; the first one is raised once all
        outputs are closed."""
        self.runs = [PostedStats(RunStats(source=spec.name or display_name(spec.url))) for spec in specs]
        started = time.monotonic()
        # 1. Open every source, then load the model: bad input fails before a slow load, and before any output.
        readers = _open_all(specs, self.config)
        try:
            detector = self.make_detector()
        except BaseException:
            for reader in readers:
                reader.stop()
            raise
        load_seconds = time.monotonic() - started
        if self._stop.is_set():  # asked to stop while the model loaded: end before any output is opened
            for reader in readers:
                reader.stop()
            raise Stopped()
        model = self.config.model
        self.worker = worker = Worker(detector, max_batch=model.batch_size, max_wait_ms=model.max_wait_ms,
                                      metrics=self.metrics, still_wait_s=self.config.pipeline.still_wait_s)
        self.model_loaded = True
        # 2. One run per source, sharing the worker and any store several of them name.
        stores: dict[Path, EventStore] = {}
        runs: list[SourceRun] = []
        try:
            for spec, reader in zip(specs, readers):
                key = None if spec.db_path is None else Path(spec.db_path).resolve()
                if key is not None and key not in stores:
                    stores[key] = EventStore(spec.db_path)
                runs.append(SourceRun(spec, self.config, reader, worker, self.shared, stores.get(key),
                                      metrics=self.metrics, on_progress=on_progress, switches=self.switches))
        except BaseException:
            for reader in readers:
                reader.stop()
            raise
        self.runs = runs
        results: list[RunStats | None] = [None] * len(runs)
        # 3. Each source on its own thread; this one stays free for signal handlers and the deadline.
        threads = []
        try:
            worker.start()
            for i, run in enumerate(runs):
                thread = threading.Thread(target=_run_into, args=(run, self._stop, results, i),
                                          name=f"source:{run.reader.name}", daemon=True)
                thread.start()
                threads.append(thread)
            deadline = time.monotonic() + duration_s if duration_s else None
            for thread in threads:
                while thread.is_alive():
                    thread.join(timeout=0.2)
                    if deadline is not None and time.monotonic() >= deadline:
                        self.stop()
        finally:
            self._stop.set()
            for thread in threads:
                thread.join(timeout=DRAIN_S + 5)
            worker.stop()
        return outcome([stats if stats is not None else run.stats() for stats, run in zip(results, runs)], load_seconds)


def _run_into(run: SourceRun, stop: threading.Event, results: list, i: int) -> None:
    results[i] = run.run(stop)


def _open_all(specs: list[SourceSpec], config: Config) -> list[Reader]:
    """Open every source at once: an RTSP open probes for about a second, and sixteen cameras should not wait
    sixteen seconds. The first error, in the order the sources were given, is raised (the others are closed)."""
    readers: list[Reader | None] = [None] * len(specs)
    errors: list[BaseException | None] = [None] * len(specs)

    def open_one(i: int) -> None:
        spec = specs[i]
        try:
            readers[i] = open_reader(spec.url, spec.name, spec.live, config.pipeline.frame_queue, config.live)
        except BaseException as exc:  # re-raised below, in the caller's thread
            errors[i] = exc

    threads = [threading.Thread(target=open_one, args=(i,), daemon=True) for i in range(len(specs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for error in errors:
        if error is not None:
            for reader in readers:
                if reader is not None:
                    reader.stop()
            raise error
    return readers
