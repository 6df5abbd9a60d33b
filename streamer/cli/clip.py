"""`streamer clip`: an event's or a stretch's footage cut from a camera's recordings."""

from __future__ import annotations

import argparse
from pathlib import Path

from streamer.cli.common import seconds_or_zero
from streamer.config import load_config
from streamer.errors import StreamerError


def add(sub) -> None:
    command = sub.add_parser("clip", help="cut a clip of an event, or of any stretch, from a camera's recordings")
    command.add_argument("db", type=Path, metavar="STORE", help="the event store the recordings are indexed in")
    command.add_argument("out", type=Path, metavar="OUT", help="the clip to write (MP4, a new file)")
    command.add_argument("--event", type=int, metavar="ID", help="the event's id (`streamer events` shows it): its "
                                                                "track from appearing to leaving")
    command.add_argument("--source", help="with --from and --to: the camera")
    command.add_argument("--from", dest="start", metavar="TIME", help="ISO-8601 time the clip starts (local unless it "
                                                                       "has an offset)")
    command.add_argument("--to", dest="end", metavar="TIME", help="ISO-8601 time the clip ends")
    command.add_argument("--pre", type=seconds_or_zero, metavar="SECONDS",
                         help="footage before the event (default record.pre_s)")
    command.add_argument("--post", type=seconds_or_zero, metavar="SECONDS",
                         help="footage after the event (default record.post_s)")
    command.add_argument("--annotate", action="store_true", help="draw the tracks on the clip (decodes and encodes "
                                                                  "that stretch again)")
    command.add_argument("--config", type=Path, help="YAML config (its record: section)")


def run(args: argparse.Namespace) -> int:
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
