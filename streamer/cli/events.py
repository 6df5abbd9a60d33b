"""`streamer events`: a run's event store queried, as a table or for programs."""

from __future__ import annotations

import argparse
from pathlib import Path


def add(sub) -> None:
    command = sub.add_parser("events", help="query a run's SQLite event store")
    command.add_argument("db", type=Path, help="a run folder, or its events.db")
    command.add_argument("--source", help="only events of this source (its name)")
    command.add_argument("--type", help="only events of this type, e.g. object_appeared or text_read")
    command.add_argument("--label", help="only events with this label, e.g. car")
    command.add_argument("--since", help="ISO-8601 time (local unless it has an offset)")
    command.add_argument("--until", help="ISO-8601 time, exclusive")
    command.add_argument("--search", metavar="WORDS",
                         help="events whose label, text or caption has every word, best match first")
    command.add_argument("--format", choices=["table", "json", "jsonl", "csv"], default="table",
                         help="a table for people (default); for programs a JSON array, JSON Lines or CSV")


def run(args: argparse.Namespace) -> int:
    from streamer.outputs.store import COLUMNS, query, render

    found = query(args.db, source=args.source, type=args.type, label=args.label, since=args.since,
                  until=args.until, search=args.search, with_id=True)
    print(render(found, args.format, COLUMNS + ["snapshot"] if args.search else COLUMNS))
    return 0
