"""`streamer find`: a phrase grounded on the keyframes and recordings a store kept."""

from __future__ import annotations

import argparse
from pathlib import Path

from streamer.cli.common import model_flags, model_overrides, seconds
from streamer.config import load_config
from streamer.errors import StreamerError
from streamer.model.worker import load_detector


def add(sub) -> None:
    command = sub.add_parser("find", help="ground a phrase with Florence-2 on the keyframes and recordings a store "
                                          "kept")
    command.add_argument("db", type=Path, metavar="STORE", help="a run folder, or its events.db")
    command.add_argument("phrase", help="what to look for, e.g. \"person with a ladder\"")
    model_flags(command)
    command.add_argument("--source", help="only this camera or file (its name)")
    command.add_argument("--from", dest="start", metavar="TIME", help="ISO-8601 time to search from (local unless it "
                                                                       "has an offset)")
    command.add_argument("--to", dest="end", metavar="TIME", help="ISO-8601 time to search to")
    command.add_argument("--limit", type=int, default=20, metavar="N", help="the N best hits (default 20)")
    command.add_argument("--every", type=seconds, default=2.0, metavar="SECONDS",
                         help="recordings: at most one frame per this many seconds (default 2)")
    command.add_argument("--min-confidence", type=float, metavar="X",
                         help="the floor of a hit's confidence (default model.min_confidence, or 0.3 where that is 0)")
    command.add_argument("--format", choices=["table", "json"], default="table",
                         help="a table for people (default) or JSON for programs")


def run(args: argparse.Namespace) -> int:
    """`streamer find`: the range and the store checked before the model loads (and it loads only for frames
    whose answer is not cached); hits as they come on stderr, the best of them at the end on stdout."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from streamer.outputs.runfolder import find_store
    from streamer.outputs.store import epoch, reading
    from streamer.recording.find import find, render

    config = load_config(args.config, model_overrides(args))
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
