"""The `streamer` command line. Bad input ends with one line on stderr and a non-zero exit, never a traceback."""

from __future__ import annotations

import argparse
import errno
import functools
import logging
import math
import os
import re
import signal
import sys
import threading
import traceback
from pathlib import Path

from streamer import __version__
from streamer.config import Config, load_config
from streamer.errors import Stopped, StreamerError
from streamer.model.worker import load_detector
from streamer.outputs.build import Outputs
from streamer.outputs.runfolder import check_outputs, new_run_folder
from streamer.outputs.switches import Switches
from streamer.pipeline.local import Driver, Pipeline, RunStats, SourceSpec
from streamer.pipeline.stats import SourcesFailed
from streamer.sources import display_name, safe_name, scrub

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streamer", description="Florence-2 on video: detect, track, annotate, log.")
    parser.add_argument("--version", action="version", version=f"streamer {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show tracebacks of unexpected errors and the log (a Ray cluster's news of restarts)")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the pipeline on video files or stream URLs")
    run.add_argument("sources", nargs="*", metavar="SOURCE",
                     help="video file or stream URL (rtsp://, http://...); NAME=URL names it; default: config sources")
    _model_flags(run)
    run.add_argument("--task", help="Florence-2 task, e.g. '<OD>' or OCR_WITH_REGION")
    run.add_argument("--prompt", help="text for prompted tasks (phrases, a region)")
    run.add_argument("--watch", metavar="PHRASE", action="append",
                     help="watch every source for this phrase: a phrase_seen event per track it is seen on "
                          "(repeatable; adds to the config's watch:)")
    run.add_argument("--out-video", type=Path, help="annotated MP4 path")
    run.add_argument("--events", type=Path, help="JSONL event log path")
    run.add_argument("--db", type=Path, help="SQLite event store (default: events.db beside the event log)")
    run.add_argument("--no-video", action="store_true", help="write only the event log")
    run.add_argument("--duration", type=_seconds, metavar="SECONDS", help="stop after this long, as SIGINT would")
    run.add_argument("--live", action=argparse.BooleanOptionalAction, default=None,
                     help="run every source as a camera (--live) or as a file (--no-live); default: guessed from "
                          "the media (a URL with an end is a file, RTSP and endless streams are cameras)")
    run.add_argument("--http", metavar="[HOST:]PORT",
                     help="serve /metrics, /healthz and the live view (PORT alone: on 127.0.0.1 only)")
    run.add_argument("--mqtt", metavar="URL", help="publish events to an MQTT broker, e.g. mqtt://127.0.0.1:1883")
    run.add_argument("--webhook", metavar="URL", action="append", help="POST each event to this URL (repeatable)")
    run.add_argument("--ray", metavar="ADDRESS", nargs="?", const="local",
                     help="run on a Ray cluster: 'auto', HOST:PORT or ray://HOST:PORT; alone: this machine's cluster, "
                          "else a Ray instance of the run's own")
    events = sub.add_parser("events", help="query a run's SQLite event store")
    events.add_argument("db", type=Path, help="a run folder, or its events.db")
    events.add_argument("--source", help="only events of this source (its name)")
    events.add_argument("--type", help="only events of this type, e.g. object_appeared or text_read")
    events.add_argument("--label", help="only events with this label, e.g. car")
    events.add_argument("--since", help="ISO-8601 time (local unless it has an offset)")
    events.add_argument("--until", help="ISO-8601 time, exclusive")
    events.add_argument("--search", metavar="WORDS",
                        help="events whose label, text or caption has every word, best match first")
    events.add_argument("--format", choices=["table", "json", "jsonl", "csv"], default="table",
                        help="a table for people (default); for programs a JSON array, JSON Lines or CSV")
    export = sub.add_parser("export", help="write a run's keyframes and boxes as a COCO or YOLO dataset, or its "
                                           "tracks on video for CVAT, Label Studio or MOT evaluators")
    export.add_argument("run", type=Path, help="run folder, or its events.db (mot: or a tracks file)")
    export.add_argument("--format", choices=["coco", "yolo", "mot", "cvat", "label-studio"], required=True,
                        help="coco, yolo: the kept keyframes; mot: tracks of every frame (CVAT's MOT 1.1); cvat: "
                             "CVAT for video 1.1 XML; label-studio: video tasks with track predictions")
    export.add_argument("--media-url", metavar="PREFIX",
                        help="label-studio: URL the tasks' videos are under (default: Label Studio's local files, "
                             "/data/local-files/?d=OUT_NAME/videos/)")
    export.add_argument("out", type=Path, help="folder to write (new or empty)")
    clip = sub.add_parser("clip", help="cut a clip of an event, or of any stretch, from a camera's recordings")
    clip.add_argument("db", type=Path, metavar="STORE", help="the event store the recordings are indexed in")
    clip.add_argument("out", type=Path, metavar="OUT", help="the clip to write (MP4, a new file)")
    clip.add_argument("--event", type=int, metavar="ID", help="the event's id (`streamer events` shows it): its "
                                                             "track from appearing to leaving")
    clip.add_argument("--source", help="with --from and --to: the camera")
    clip.add_argument("--from", dest="start", metavar="TIME", help="ISO-8601 time the clip starts (local unless it "
                                                                    "has an offset)")
    clip.add_argument("--to", dest="end", metavar="TIME", help="ISO-8601 time the clip ends")
    clip.add_argument("--pre", type=_seconds_or_zero, metavar="SECONDS",
                      help="footage before the event (default record.pre_s)")
    clip.add_argument("--post", type=_seconds_or_zero, metavar="SECONDS",
                      help="footage after the event (default record.post_s)")
    clip.add_argument("--annotate", action="store_true", help="draw the tracks on the clip (decodes and encodes "
                                                               "that stretch again)")
    clip.add_argument("--config", type=Path, help="YAML config (its record: section)")
    serve_ml = sub.add_parser("serve-ml", help="serve Florence-2 as a Label Studio ML backend: predictions for a "
                                               "project's image tasks")
    _model_flags(serve_ml)
    serve_ml.add_argument("--listen", metavar="[HOST:]PORT", default="9090",
                          help="where Label Studio reaches it (PORT alone: 127.0.0.1; default 9090; beyond this "
                               "machine only with http.auth)")
    serve_ml.add_argument("--media-root", type=Path, metavar="FOLDER",
                          help="read Label Studio's local files (/data/local-files/?d=PATH) from this folder, as "
                               "LOCAL_FILES_DOCUMENT_ROOT, instead of over HTTP")
    find = sub.add_parser("find", help="ground a phrase with Florence-2 on the keyframes and recordings a store kept")
    find.add_argument("db", type=Path, metavar="STORE", help="a run folder, or its events.db")
    find.add_argument("phrase", help="what to look for, e.g. \"person with a ladder\"")
    _model_flags(find)
    find.add_argument("--source", help="only this camera or file (its name)")
    find.add_argument("--from", dest="start", metavar="TIME", help="ISO-8601 time to search from (local unless it "
                                                                    "has an offset)")
    find.add_argument("--to", dest="end", metavar="TIME", help="ISO-8601 time to search to")
    find.add_argument("--limit", type=int, default=20, metavar="N", help="the N best hits (default 20)")
    find.add_argument("--every", type=_seconds, default=2.0, metavar="SECONDS",
                      help="recordings: at most one frame per this many seconds (default 2)")
    find.add_argument("--min-confidence", type=float, metavar="X", help="the floor of a hit's confidence "
                                                                        "(default model.min_confidence, or 0.3 where that is 0)")
    find.add_argument("--format", choices=["table", "json"], default="table",
                      help="a table for people (default) or JSON for programs")
    sub.add_parser("password", help="print the hash of a password for http.auth.password_hash (reads it from "
                                     "the terminal, or one line of standard input)")
    evaluate = sub.add_parser("evaluate", help="score a Florence-2 on a labelled dataset (mAP, P/R)")
    evaluate.add_argument("dataset", type=Path, help="a COCO or YOLO folder, or a CVAT XML / Label Studio JSON export "
                                                   "(the file, or its folder)")
    _model_flags(evaluate)
    evaluate.add_argument("--task", default="<OD>", choices=["<OD>"],
                          help="boxes are scored with <OD>; text, where the dataset has any, with <OCR_WITH_REGION>")
    evaluate.add_argument("--format", choices=["table", "json"], default="table",
                          help="a table for people (default) or JSON for programs")
    finetune = sub.add_parser("finetune", help="fine-tune Florence-2 on a labelled dataset")
    finetune.add_argument("dataset", type=Path, help="a COCO or YOLO folder, or a CVAT XML / Label Studio JSON export "
                                                   "(the file, or its folder)")
    _model_flags(finetune)
    finetune.add_argument("--out", type=Path, required=True, help="folder for the fine-tuned model (new, or a "
                                                                  "run to resume)")
    finetune.add_argument("--epochs", type=int, help="sets finetune.epochs")
    return parser


def _model_flags(parser: argparse.ArgumentParser) -> None:
    """The flags of every command that loads the model, the same everywhere."""
    parser.add_argument("--config", type=Path, help="YAML config (see configs/default.yaml)")
    parser.add_argument("--model", help="hub id or local Florence-2 folder (sets model.id or model.path)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda", "CPU", "GPU", "NPU", "AUTO"],
                        help="where the model runs (sets model.device; CPU, GPU, NPU, AUTO are OpenVINO's)")
    parser.add_argument("--backend", choices=["torch", "openvino"],
                        help="what runs the model (sets model.backend; openvino: the vision tower on OpenVINO)")


def _model_overrides(args: argparse.Namespace) -> dict:
    out = {"model.device": args.device, "model.backend": args.backend}
    if args.model:
        out["model.path" if _looks_like_folder(args.model) else "model.id"] = args.model
    return out


def _seconds_in(fits, wanted: str):
    """An argparse type: a finite number of seconds that `fits`, else one line saying what was `wanted`."""
    def parse(value: str) -> float:
        try:
            seconds = float(value)
        except ValueError:
            seconds = math.nan
        if not math.isfinite(seconds) or not fits(seconds):
            raise argparse.ArgumentTypeError(f"expected a number of seconds {wanted}, got '{value}'")
        return seconds
    return parse


_seconds = _seconds_in(lambda s: s > 0, "above 0")
_seconds_or_zero = _seconds_in(lambda s: 0 <= s <= 3600, "from 0 to 3600")


def _clip(args: argparse.Namespace) -> int:
    """`streamer clip`: one of --event, or --source with --from and --to."""
    from streamer.outputs.store import epoch
    from streamer.recording.clip import Span, cut, event_range

    record = load_config(args.config).record
    pre = record.pre_s if args.pre is None else args.pre
    post = record.post_s if args.post is None else args.post
    if args.event is not None:
        if args.source or args.start or args.end:
            raise StreamerError("clip: give --event, or --source with --from and --to, not both")
        span = event_range(args.db, args.event, pre, post)
    elif args.source and args.start and args.end:
        span = Span(args.source, epoch(args.start, "--from"), epoch(args.end, "--to"))
    else:
        raise StreamerError("clip: give --event ID, or --source S with --from TIME and --to TIME")
    made = cut(args.db, span, args.out, annotate=args.annotate)
    print(f"streamer: wrote {made.seconds:.1f} s of {made.source} ({made.frames} frames) to {args.out}")
    return 0


def _serve_ml(args: argparse.Namespace) -> int:
    """`streamer serve-ml`: everything checked and the port bound before the model loads; runs until Ctrl-C or
    SIGTERM."""
    from streamer.annotation.label_studio import Backend, MlServer

    config = load_config(args.config, {**_model_overrides(args), "http.listen": args.listen})
    if args.media_root is not None and not args.media_root.is_dir():
        raise StreamerError(f"--media-root {args.media_root}: not a folder")
    server = MlServer(config.http.listen, config.http.auth)
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        detector = load_detector(config.model)
        name = Path(config.model.path).name if config.model.path else config.model.id  # no server path sent out
        server.start(Backend(detector, name, args.media_root, config.model.batch_size))
        print(f"streamer: Label Studio ML backend at {server.address} ({name}); add it in a project's Settings > "
              "Model", file=sys.stderr, flush=True)
        stop.wait()
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def _find(args: argparse.Namespace) -> int:
    """`streamer find`: the range and the store checked before the model loads (and it loads only for frames
    whose answer is not cached); hits as they come on stderr, the best of them at the end on stdout."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from streamer.outputs.runfolder import find_store
    from streamer.outputs.store import epoch, reading
    from streamer.recording.find import find, render

    config = load_config(args.config, _model_overrides(args))
    if args.limit < 1:
        raise StreamerError("--limit: at least 1")
    if args.min_confidence is not None and not 0 <= args.min_confidence <= 1:
        raise StreamerError("--min-confidence: a number from 0 to 1")
    store = find_store(args.db)
    with reading(store):  # a streamer store, or one line
        pass
    start = epoch(args.start, "--from") if args.start else None
    end = epoch(args.end, "--to") if args.end else None
    name = str(config.model.path or config.model.id)
    bar = Progress(TextColumn("finding"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   console=Console(stderr=True), transient=True)
    task = bar.add_task("find", total=None)

    def on_progress(done: int, total: int) -> None:
        if not bar.live.is_started:
            bar.start()  # from the first answer on: a refusal before it is one line, no bar
        bar.update(task, completed=done, total=total)

    def on_hit(hit) -> None:
        if args.format == "table":
            bar.console.print(f"  {hit.wall_time or '-'}  {hit.source}  conf {hit.confidence:.2f}  "
                              f"{hit.image or hit.footage}", highlight=False, markup=False)

    floor = (config.model.min_confidence or 0.3) if args.min_confidence is None else args.min_confidence
    try:
        hits = find(store, args.phrase, lambda: load_detector(config.model), name, source=args.source, start=start,
                    end=end, every_s=args.every, batch=config.model.batch_size, min_confidence=floor,
                    on_progress=on_progress, on_hit=on_hit)
    finally:
        if bar.live.is_started:
            bar.stop()
    print(render(hits[: args.limit], args.format))
    return 0


def _password() -> int:
    import getpass

    from streamer.auth import hash_password

    password = getpass.getpass("password: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\n")
    if len(password) < 8:
        raise StreamerError("a password needs 8 characters or more")
    print(hash_password(password))
    return 0


def _looks_like_folder(value: str) -> bool:
    return Path(value).expanduser().exists() or value.startswith((".", "/", "~")) or os.sep * 2 in value


def _overrides(args: argparse.Namespace) -> dict:
    out = {"model.task": args.task, "model.prompt": args.prompt, "output.video": args.out_video,
           "output.events": args.events, "output.db": args.db, **_model_overrides(args)}
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


def _named(value: str) -> tuple[str | None, str]:
    """`cam1=rtsp://...` -> ("cam1", "rtsp://..."); a plain path or URL has no name."""
    name, sep, url = value.partition("=")
    if sep and re.fullmatch(r"[A-Za-z0-9._-]+", name) and ("://" in url or Path(url).suffix):
        return name, url
    return None, value


def _specs(config: Config, sources: list[str], live: bool | None = None) -> list[SourceSpec]:
    """`live`: --live/--no-live, which wins over a config source's own `live`."""
    entries = [(*_named(s), live) for s in sources] or [
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
        from streamer.web.server import LiveView

        view = LiveView()
        shared.insert(0, view)
    return shared, view


def _ray_address(args: argparse.Namespace) -> None:
    """`--ray clip.mp4` means a local Ray instance and a source: argparse gives an optional value the next word."""
    value = args.ray
    if value is None or value in ("local", "auto") or re.fullmatch(r"(ray://)?[\w.\-\[\]:]+:\d+", value):
        return
    if "://" in value or Path(value).suffix or Path(value).exists() or "=" in value:
        args.sources.insert(0, value)
        args.ray = "local"
        return
    raise StreamerError(f"--ray {value}: not a Ray address (auto, HOST:PORT or ray://HOST:PORT; alone: local)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line as the commands take it (`run --ray clip.mp4` has a source, not an address)."""
    args = parser().parse_args(argv)
    if args.command == "run":
        _ray_address(args)
    return args


def _run(args: argparse.Namespace) -> int:
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

        pipeline, closers = RayPipeline(config, notify=_note), []
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
            _note("stopping: closing the outputs")
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


def _model_command(args: argparse.Namespace) -> int:
    """`streamer evaluate` and `streamer finetune`: every input checked before the model loads."""
    overrides = _model_overrides(args)
    if getattr(args, "epochs", None) is not None:
        overrides["finetune.epochs"] = args.epochs
    config = load_config(args.config, overrides)
    if args.command == "evaluate":
        from streamer.annotation.dataset import load_dataset
        from streamer.annotation.evaluate import evaluate, render

        dataset = load_dataset(args.dataset)
        print(render(evaluate(load_detector(config.model), dataset, config.model.batch_size), args.format))
        return 0
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from streamer.annotation.evaluate import side_by_side
    from streamer.interrupts import held_back

    with held_back():  # torch imports with it
        from streamer.annotation.finetune import finetune

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[loss]}"),
                  transient=True) as bar:
        task = bar.add_task("fine-tuning", total=None, loss="")

        def on_step(epoch: int, step: int, steps: int, loss: float) -> None:
            bar.update(task, description=f"epoch {epoch + 1}/{config.finetune.epochs}", completed=step, total=steps,
                       loss=f"loss {loss:.4f}")

        try:
            before, after, held_out = finetune(config, args.dataset, args.out, on_step)
        except Stopped as stop:
            _note(str(stop))
            return EXIT_INTERRUPTED
    print(f"streamer: fine-tuned model saved to {args.out}\n{side_by_side(before, after, held_out)}")
    return 0


def _note(line: str) -> None:
    print(f"streamer: {line}", file=sys.stderr, flush=True)


def _scrub(text: str, args: argparse.Namespace) -> str:
    """No secret of a URL given on the command line (sources, --mqtt, --webhook) in an error line, whoever wrote
    the message."""
    given = [*getattr(args, "sources", []), getattr(args, "mqtt", None), *(getattr(args, "webhook", None) or [])]
    return scrub(text, [_named(value)[1] for value in given if value])


def _refused_path(exc: BaseException) -> str | None:
    """The line for a file the operating system refuses, wherever it was named; None for anything else."""
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror or exc}"
    if isinstance(exc, RuntimeError) and str(exc).startswith("Symlink loop"):  # pathlib's resolve()
        return f"{str(exc).removeprefix('Symlink loop from ').strip(chr(39))}: a loop of symbolic links"
    return None


def _one_line(text: str) -> str:
    """An error stays one line whatever it quotes (a file name may hold a newline)."""
    return text.replace("\r", "\\r").replace("\n", "\\n")


def main(argv: list[str] | None = None) -> int:
    """The command's exit status; its output flushed here, so a standard output that cannot take it (a full
    disk, a closed pipe) is said now, not lost at exit."""
    args = parse_args(argv)
    if args.debug:  # the log of what streamer saw happen, such as a Ray cluster's news of restarts, on stderr
        logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)
    real, sys.stdout = sys.stdout, _Stdout(sys.stdout)
    try:
        code = _command(args)
        sys.stdout.flush()
        return code
    except _StdoutFailed as failed:
        return _stdout_failed(failed.error)
    finally:
        sys.stdout = real


class _StdoutFailed(Exception):
    """Standard output refused a write; not an OSError, so no handler takes it for a file of the command's."""

    def __init__(self, error: OSError) -> None:
        self.error = error


class _Stdout:
    """sys.stdout, its write errors told apart from every other OSError."""

    def __init__(self, stream) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except OSError as exc:
            raise _StdoutFailed(exc) from None

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError as exc:
            raise _StdoutFailed(exc) from None

    def __getattr__(self, name):
        return getattr(self._stream, name)


def _stdout_failed(exc: OSError) -> int:
    """A reader that went away (`| head`) ends the command quietly, as SIGPIPE would; anything else is one line."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.__stdout__.fileno())  # nothing more to flush at exit
    except (OSError, ValueError, AttributeError):
        pass
    if exc.errno == errno.EPIPE:
        return 128 + signal.SIGPIPE
    print(f"streamer: error: cannot write to standard output: {exc.strerror or exc}", file=sys.stderr)
    return EXIT_ERROR


def _command(args: argparse.Namespace) -> int:
    try:
        if args.command == "run":
            return _run(args)
        if args.command == "events":
            from streamer.outputs.store import COLUMNS, query, render

            found = query(args.db, source=args.source, type=args.type, label=args.label, since=args.since,
                          until=args.until, search=args.search, with_id=True)
            print(render(found, args.format, COLUMNS + ["snapshot"] if args.search else COLUMNS))
            return 0
        if args.command == "clip":
            return _clip(args)
        if args.command == "password":
            return _password()
        if args.command == "serve-ml":
            return _serve_ml(args)
        if args.command == "find":
            return _find(args)
        if args.command in ("evaluate", "finetune"):
            return _model_command(args)
        if args.command == "export":
            from streamer.annotation.export import export

            images, boxes = export(args.run, args.format, args.out, args.media_url)
            what = {"mot": "sources", "cvat": "videos", "label-studio": "videos"}.get(args.format, "keyframes")
            print(f"streamer: wrote {images} {what} with {boxes} boxes as {args.format} to {args.out}")
            return 0
    except StreamerError as exc:
        if args.debug and exc.__cause__ is not None:
            traceback.print_exception(exc.__cause__)
        print(f"streamer: error: {_one_line(_scrub(str(exc), args))}", file=sys.stderr)
        return EXIT_ERROR
    except (KeyboardInterrupt, Stopped):
        print("streamer: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except _StdoutFailed:
        raise
    except Exception as exc:  # a path the system refuses (a name too long, a loop of links), or a bug
        said = _refused_path(exc)
        if args.debug:
            raise
        if said is not None:
            print(f"streamer: error: {_one_line(_scrub(said, args))}", file=sys.stderr)
        else:  # a bug, not bad input: one line unless asked for more
            print(f"streamer: internal error: {type(exc).__name__}: {_one_line(_scrub(str(exc), args))} (run with "
                  "--debug for details)", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
