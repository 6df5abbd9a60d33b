"""`streamer run`: the pipeline on files and streams, with its console and summaries."""

from __future__ import annotations

import argparse
import functools
import re
import signal
import sys
import threading
from pathlib import Path

from streamer.cli.common import EXIT_INTERRUPTED, model_flags, model_overrides, named, note, seconds
from streamer.config import Config, load_config
from streamer.errors import StreamerError
from streamer.model.worker import load_detector
from streamer.outputs.build import Outputs
from streamer.outputs.runfolder import check_outputs, new_run_folder
from streamer.outputs.switches import Switches
from streamer.pipeline.local import Driver, Pipeline, RunStats, SourceSpec
from streamer.pipeline.stats import SourcesFailed
from streamer.sources import display_name, safe_name


def add(sub) -> None:
    command = sub.add_parser("run", help="run the pipeline on video files or stream URLs")
    command.add_argument("sources", nargs="*", metavar="SOURCE",
                         help="video file or stream URL (rtsp://, http://...); NAME=URL names it; default: config "
                              "sources")
    model_flags(command)
    command.add_argument("--task", help="Florence-2 task, e.g. '<OD>' or OCR_WITH_REGION")
    command.add_argument("--prompt", help="text for prompted tasks (phrases, a region)")
    command.add_argument("--watch", metavar="PHRASE", action="append",
                         help="watch every source for this phrase: a phrase_seen event per track it is seen on "
                              "(repeatable; adds to the config's watch:)")
    command.add_argument("--out-video", type=Path, help="annotated MP4 path")
    command.add_argument("--events", type=Path, help="JSONL event log path")
    command.add_argument("--db", type=Path, help="SQLite event store (default: events.db beside the event log)")
    command.add_argument("--no-video", action="store_true", help="write only the event log")
    command.add_argument("--duration", type=seconds, metavar="SECONDS", help="stop after this long, as SIGINT would")
    command.add_argument("--live", action=argparse.BooleanOptionalAction, default=None,
                         help="run every source as a camera (--live) or as a file (--no-live); default: guessed from "
                              "the media (a URL with an end is a file, RTSP and endless streams are cameras)")
    command.add_argument("--http", metavar="[HOST:]PORT",
                         help="serve /metrics, /healthz and the live view (PORT alone: on 127.0.0.1 only)")
    command.add_argument("--mqtt", metavar="URL", help="publish events to an MQTT broker, e.g. mqtt://127.0.0.1:1883")
    command.add_argument("--webhook", metavar="URL", action="append", help="POST each event to this URL (repeatable)")
    command.add_argument("--ray", metavar="ADDRESS", nargs="?", const="local",
                         help="run on a Ray cluster: 'auto', HOST:PORT or ray://HOST:PORT; alone: this machine's "
                              "cluster, else a Ray instance of the run's own")


def ray_address(args: argparse.Namespace) -> None:
    """`--ray clip.mp4` means a local Ray instance and a source: argparse gives an optional value the next word."""
    value = args.ray
    if value is None or value in ("local", "auto") or re.fullmatch(r"(ray://)?[\w.\-\[\]:]+:\d+", value):
        return
    if "://" in value or Path(value).suffix or Path(value).exists() or "=" in value:
        args.sources.insert(0, value)
        args.ray = "local"
        return
    raise StreamerError(f"--ray {value}: not a Ray address (auto, HOST:PORT or ray://HOST:PORT; alone: local)")


def run(args: argparse.Namespace) -> int:
    """`streamer run`: every source checked and every output named before the model loads."""
    config = load_config(args.config, _overrides(args))
    if args.watch:
        from pydantic import ValidationError

        from streamer.config import WatchEntry

        try:
            config.watch = [*config.watch, *(WatchEntry(phrase=phrase) for phrase in args.watch)]
        except ValidationError:
            raise StreamerError("--watch: a phrase to look for, of 200 characters at most") from None
    specs = _specs(config, args.sources, args.live)
    if config.cluster.address:
        if config.http.listen:
            raise StreamerError("--http serves one process's sources; with --ray, each source runs in its own actor")
        from streamer.cluster import RayPipeline

        pipeline, closers = RayPipeline(config, notify=note), []
    else:
        switches = Switches(config)
        shared, view = _shared(config, specs, switches)
        pipeline, closers = Pipeline(config, functools.partial(load_detector, config.model), shared, switches), [
            Outputs(shared).close]
    if config.http.listen:
        from streamer.web.server import StatusServer

        server = StatusServer(config.http.listen, pipeline, view, config.http.mjpeg_fps, config.http.auth,
                              config.http.metrics_public).start()
        closers.insert(0, server.close)
        print(f"streamer: live view and metrics at {server.address}/" + (" (sign in with http.auth)" if
              config.http.auth else ""), file=sys.stderr, flush=True)
    interrupted = threading.Event()

    def on_signal(*_):
        if interrupted.is_set():  # a second Ctrl-C: the stop is under way, and it closes the outputs first
            note("stopping: closing the outputs")
            return
        interrupted.set()
        pipeline.stop()
        if not pipeline.model_loaded and isinstance(pipeline, Pipeline):
            raise KeyboardInterrupt  # the load runs on this thread: stop it now, before any output is opened

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:  # the run's handler stays until the summaries are out: a late Ctrl-C cuts none of them short
        console = _Console(config.live.status_interval_s)
        failed = None
        try:
            console.start(pipeline)
            all_stats = pipeline.run_many(specs, on_progress=console.progress, duration_s=args.duration)
        except SourcesFailed as failure:  # the sources that finished whole are reported all the same
            failed, all_stats = failure, failure.results
        finally:
            console.stop()
            for close in closers:
                close()
        for stats in all_stats:
            if not interrupted.is_set():
                stats.stopped_early = False  # --duration is the planned end of a run
            print(_summary(stats))
        for line in pipeline.status_lines():
            print(f"ray: {line}")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if failed is not None:
        raise failed
    return EXIT_INTERRUPTED if interrupted.is_set() else 0


def _overrides(args: argparse.Namespace) -> dict:
    out = {"model.task": args.task, "model.prompt": args.prompt, "output.video": args.out_video,
           "output.events": args.events, "output.db": args.db, **model_overrides(args)}
    if args.task:
        out["schedule"] = []  # --task replaces a config file's schedule
    if args.http:
        out["http.listen"] = args.http
    if args.mqtt:
        out["mqtt.url"] = args.mqtt
    if args.webhook:
        out["webhooks.urls"] = args.webhook
    if args.ray:
        out["cluster.address"] = args.ray
    if args.no_video:
        out["output.write_video"] = False
    return out


def _specs(config: Config, sources: list[str], live: bool | None = None) -> list[SourceSpec]:
    """`live`: --live/--no-live, which wins over a config source's own `live`."""
    entries = [(*named(s), live) for s in sources] or [
        (c.name, c.url, c.live if live is None else live) for c in config.sources]
    if not entries:
        raise StreamerError("no source given: pass a file or URL, or list sources in the config")
    out = config.output
    if len(entries) > 1 and (out.video is not None or out.events is not None):
        raise StreamerError("--out-video/--events name one file; with several sources outputs go to run folders")
    names = [name for name, _, _ in entries if name]
    twice = next((name for name in names if names.count(name) > 1), None)
    if twice is not None:
        raise StreamerError(f"the source name '{twice}' is given twice: each source needs a name of its own")
    specs, folders = [], set()
    for name, url, live in entries:
        folder = None
        if out.events is None or (out.write_video and out.video is None):
            folder = new_run_folder(out.dir, url, name, folders)
            folders.add(folder)
        events = out.events or folder / "events.jsonl"
        video = (out.video or folder / "annotated.mp4") if out.write_video else None
        db = (out.db or events.with_suffix(".db")) if out.write_db else None
        tracks = None
        if out.write_tracks:
            tracks = out.tracks or (folder / "tracks.jsonl" if out.events is None else
                                    events.with_name(events.stem + ".tracks.jsonl"))
        specs.append(SourceSpec(url, events, video, name, live, db, tracks))
    check_outputs([s.url for s in specs], [(kind, path) for s in specs for kind, path in
                                           (("event log", s.events_path), ("video", s.video_path),
                                            ("event store", s.db_path), ("tracks file", s.tracks_path))
                                           if path is not None])
    return specs


class _Console:
    """A progress bar per file source and a periodic status line per live source, on stderr."""

    def __init__(self, interval_s: float) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = Console(stderr=True, soft_wrap=True)  # a status line stays one line in a log file
        self._bar = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("{task.fields[status]}"), console=self.console, disable=not self.console.is_terminal,
        )
        self._tasks: dict[str, int] = {}
        self._interval = interval_s
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, pipeline: Driver) -> None:
        self._bar.start()
        self._pipeline = pipeline
        self._thread = threading.Thread(target=self._status_loop, name="status", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        self._bar.stop()

    def progress(self, stats: RunStats) -> None:
        if stats.live:
            return
        total = stats.info.total_frames if stats.info else None
        if stats.frames % 5 and stats.frames != total:
            return
        task = self._tasks.get(stats.source)
        if task is None:
            task = self._tasks[stats.source] = self._bar.add_task(stats.source, total=total, status="")
        status = f"{stats.fps_so_far:5.1f} fps  keyframes {stats.keyframes}  detections {stats.detections}"
        self._bar.update(task, total=total, completed=stats.frames, status=status)

    def _status_loop(self) -> None:
        last: dict[str, int] = {}
        while not self._done.wait(self._interval):
            for run in self._pipeline.runs:
                st = run.stats()
                if not st.live:
                    continue
                fps_in = max(0, st.frames - last.get(st.source, 0)) / self._interval
                last[st.source] = st.frames
                latency = f"{st.latency_ms:.0f} ms" if st.latency_ms is not None else "-"
                self.console.print(
                    f"[{st.source}] {st.state:8} {fps_in:5.1f} fps in  keyframes {st.keyframes}  drops {st.dropped}"
                    f"  reconnects {st.reconnects}" + (f"  faults {st.faults}" if st.faults else "")
                    + f"  latency {latency}" + _questions(st) + _recorded(st), highlight=False,
                    markup=False,
                )
            if any(run.stats().live for run in self._pipeline.runs):
                for line in self._pipeline.status_lines():
                    self.console.print(line, highlight=False, markup=False)


def _questions(stats: RunStats) -> str:
    if not stats.questions_asked:
        return ""
    return (f"  questions {stats.questions_asked} asked, {stats.questions_answered} answered, "
            f"{stats.questions_dropped} dropped")


def _recorded(stats: RunStats) -> str:
    if not stats.segments:
        return ""
    return f"  recorded {stats.segments} segments, {stats.segments_deleted} deleted"


def _summary(stats: RunStats) -> str:
    info = stats.info
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(stats.event_counts.items()))
    shape = f"{info.width}x{info.height} @ {float(info.fps):.2f} fps" if info else "no frames"
    lines = [
        f"streamer: {stats.source} ({'camera' if stats.live else 'file'}"
        + (", failed)" if stats.error is not None else ", stopped early)" if stats.stopped_early else ")"),
        f"  frames {stats.frames} of {shape}, keyframes {stats.keyframes}, detections {stats.detections}"
        + (f", dropped {stats.dropped}, reconnects {stats.reconnects}" if stats.live else "")
        + (f", faults {stats.faults}" if stats.faults else "")
        + _recorded(stats).replace("  ", ", ", 1),
        f"  events {stats.events}" + (f" ({kinds})" if kinds else "") + _questions(stats).replace("  ", ", ", 1),
    ]
    if stats.video_path is not None:
        lines.append(f"  annotated video: {stats.video_path}")
    lines.append(f"  event log:       {stats.events_path}")
    if stats.tracks_path is not None:
        lines.append(f"  tracks:          {stats.tracks_path}")
    if stats.db_path is not None:
        lines.append(f"  event store:     {stats.db_path}")
    if stats.segments and stats.db_path is not None:
        lines.append(f"  recordings:      {Path(stats.db_path).parent / 'recordings' / safe_name(stats.source)}"
                     " (each segment with its tracks)")
    lines.append(f"  model loaded in {stats.load_seconds:.1f} s; frames processed in {stats.seconds:.1f} s ({stats.fps:.1f} fps)")
    return "\n".join(lines)


def _shared(config: Config, specs: list[SourceSpec], switches: Switches) -> tuple[list, object]:
    """The outputs this process serves for every source (closed by the caller, flushing what waits), and the
    live view among them (None without --http)."""
    from streamer.outputs.build import process_outputs

    names = [spec.name or display_name(spec.url) for spec in specs]
    shared, view = process_outputs(config, config.output.dir / "outbox", sources=names, switches=switches), None
    if config.http.listen:
        from streamer.web.live import LiveView

        view = LiveView()
        shared.insert(0, view)
    return shared, view
