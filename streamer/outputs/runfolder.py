"""A run folder: where a run's outputs go, and how the run's files refer to one another.

A run folder holds `events.jsonl`, `annotated.mp4`, `events.db` and, when asked for, `keyframes/` and
`snapshots/`. Every path one output records to another (a keyframe image in the store, an event's `snapshot`)
is relative to the folder of the output that records it, so a run folder can be moved, zipped or opened on
another machine and still reads the same. Readers resolve those paths against the folder they found the store
(or log) in, never against the working directory.
"""

from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path, PurePosixPath

from streamer.errors import StreamerError
from streamer.sources import display_name, is_url, safe_name


def new_run_folder(base: Path, source: str, name: str | None = None, taken: set[Path] = frozenset()) -> Path:
    """A new folder under `base` named after the source (never its credentials) and the time; not one of
    `taken`, the folders chosen for the other sources of this run (two `clip.mp4` from different folders)."""
    name = safe_name(name or display_name(source))  # the name every file of the run carries
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    folder = base / f"{name}-{stamp}"
    n = 1
    while folder.exists() or folder in taken:
        n += 1
        folder = base / f"{name}-{stamp}-{n}"
    return folder


def relative(path: Path, folder: Path) -> str:
    """`path` as recorded by an output in `folder`: relative to it, with '/' on every platform."""
    rel = os.path.relpath(Path(path).resolve(), Path(folder).resolve())
    return PurePosixPath(*Path(rel).parts).as_posix()


def resolve(folder: Path, recorded: str) -> Path:
    """Where a path recorded by an output in `folder` is now. Absolute paths stay as they are; a file that is
    gone is still named by the path that was looked for, for the error message."""
    return (Path(folder) / recorded).resolve()


def check_outputs(inputs: list[str], outputs: list[tuple[str, Path]]) -> None:
    """Refuse, before anything is read or written, outputs that would destroy an input, collide with another
    output, or cannot be written. `outputs` are (kind, path) pairs; several sources may share one event store
    (kind "event store"), nothing else may be named twice."""
    files = {Path(i).resolve() for i in inputs if not is_url(i)}
    seen: dict[Path, str] = {}
    for kind, path in outputs:
        key = Path(path).resolve()
        if key in files:
            raise StreamerError(f"the {kind} {path} is an input of this run: name another file")
        if key.is_dir():
            raise StreamerError(f"the {kind} {path} is a folder: name a file")
        if key.exists() and not key.is_file():  # a pipe, a socket, a device: writing to it may wait forever
            raise StreamerError(f"the {kind} {path} is not a regular file: name a file")
        if kind != "event store" and key.is_file() and key.stat().st_size > 0:
            # The store is a database that runs and sources add to; a log or a video is one run's, and replacing
            # it would leave it disagreeing with the store.
            raise StreamerError(f"the {kind} {path} exists (an earlier run's?): name a new file, or remove it")
        other = seen.get(key)
        if other is not None and not kind == other == "event store":
            twice = f"as the {kind} of two sources" if other == kind else f"as both the {other} and the {kind}"
            raise StreamerError(f"{path} is named {twice}: name a file for each")
        seen[key] = kind
        ancestor = next(p for p in key.parents if p.exists())
        if not ancestor.is_dir() or not os.access(ancestor, os.W_OK):
            raise StreamerError(f"cannot write the {kind} {path}: {ancestor} is not a writable folder")


def find_store(run_or_db: Path) -> Path:
    """The event store of a run folder, or the store named."""
    path = Path(run_or_db)
    if path.is_dir():
        stores = sorted(path.glob("*.db"))
        if not stores:
            raise StreamerError(f"no event store (*.db) in {path}")
        return stores[0]
    return path
