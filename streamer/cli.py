"""The `streamer` command line. Bad input ends with one line on stderr and a non-zero exit, never a traceback."""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import re
import signal
import sys
import time
from pathlib import Path

from streamer import __version__
from streamer.config import Config, load_config
from streamer.errors import StreamerError
from streamer.pipeline import Pipeline, RunStats
from streamer.reader import display_name, is_url

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streamer", description="Florence-2 on video: detect, track, annotate, log.")
    parser.add_argument("--version", action="version", version=f"streamer {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of unexpected errors")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the pipeline on a video file or stream URL")
    run.add_argument("source", help="video file path or stream URL")
    run.add_argument("--config", type=Path, help="YAML config (see configs/default.yaml)")
    run.add_argument("--model", help="hub id or local Florence-2 folder (sets model.id or model.path)")
    run.add_argument("--task", help="Florence-2 task, e.g. '<OD>' or OCR_WITH_REGION")
    run.add_argument("--prompt", help="text for prompted tasks (phrases, a region)")
    run.add_argument("--device", choices=["auto", "cpu", "cuda"])
    run.add_argument("--out-video", type=Path, help="annotated MP4 path")
    run.add_argument("--events", type=Path, help="JSONL event log path")
    run.add_argument("--no-video", action="store_true", help="write only the event log")
    return parser


def _looks_like_folder(value: str) -> bool:
    return Path(value).expanduser().exists() or value.startswith((".", "/", "~")) or os.sep * 2 in value


def _overrides(args: argparse.Namespace) -> dict:
    out = {"model.task": args.task, "model.prompt": args.prompt, "model.device": args.device,
           "output.video": args.out_video, "output.events": args.events}
    if args.model:
        out["model.path" if _looks_like_folder(args.model) else "model.id"] = args.model
    if args.task:
        out["schedule"] = []  # --task replaces a config file's schedule
    if args.no_video:
        out["output.write_video"] = False
    return out


def run_folder(base: Path, source: str) -> Path:
    """A new folder under `base` named after the source and the time, never an existing one."""
    name = Path(source).stem if not is_url(source) else display_name(source).split("://", 1)[-1]
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "source"
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    folder = base / f"{name}-{stamp}"
    n = 1
    while folder.exists():
        n += 1
        folder = base / f"{name}-{stamp}-{n}"
    return folder


def _outputs(config: Config, source: str) -> tuple[Path | None, Path]:
    out = config.output
    folder = None
    if out.events is None or (out.write_video and out.video is None):
        folder = run_folder(out.dir, source)
    events = out.events or folder / "events.jsonl"
    video = (out.video or folder / "annotated.mp4") if out.write_video else None
    return video, events


class _Progress:
    """A rich progress bar on stderr while a file is processed."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        console = Console(stderr=True)
        self._bar = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("{task.fields[status]}"), console=console, disable=not console.is_terminal, transient=False,
        )
        self._task = self._bar.add_task("frames", total=None, status="")

    def __enter__(self) -> "_Progress":
        self._bar.start()
        return self

    def __exit__(self, *exc) -> None:
        self._bar.stop()

    def __call__(self, stats: RunStats) -> None:
        total = stats.info.total_frames
        if stats.frames % 5 and stats.frames != total:
            return
        elapsed = max(1e-9, time.monotonic() - stats.started)
        status = f"{stats.frames / elapsed:5.1f} fps  keyframes {stats.keyframes}  detections {stats.detections}"
        self._bar.update(self._task, total=total, completed=stats.frames, status=status)


def _summary(stats: RunStats) -> str:
    info = stats.info
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(stats.event_counts.items()))
    lines = [
        f"streamer: {stats.source}" + (" (stopped early)" if stats.stopped_early else ""),
        f"  frames {stats.frames} of {info.width}x{info.height} @ {float(info.fps):.2f} fps, keyframes {stats.keyframes},"
        f" detections {stats.detections}",
        f"  events {stats.events}" + (f" ({kinds})" if kinds else ""),
    ]
    if stats.video_path is not None:
        lines.append(f"  annotated video: {stats.video_path}")
    lines.append(f"  event log:       {stats.events_path}")
    lines.append(f"  model loaded in {stats.load_seconds:.1f} s; frames processed in {stats.seconds:.1f} s ({stats.fps:.1f} fps)")
    return "\n".join(lines)


def _run(args: argparse.Namespace) -> int:
    config = load_config(args.config, _overrides(args))
    video_path, events_path = _outputs(config, args.source)

    def make_detector():
        from streamer.florence import Florence2Detector

        return Florence2Detector(config.model)

    pipeline = Pipeline(config, make_detector)
    previous = {sig: signal.signal(sig, lambda *_: pipeline.stop()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with _Progress() as progress:
            stats = pipeline.run(args.source, video_path, events_path, on_progress=progress)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print(_summary(stats))
    return EXIT_INTERRUPTED if stats.stopped_early else 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "run":
            return _run(args)
    except StreamerError as exc:
        print(f"streamer: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("streamer: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # a bug, not bad input: one line unless asked for more
        if args.debug:
            raise
        print(f"streamer: internal error: {type(exc).__name__}: {exc} (run with --debug for details)", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
