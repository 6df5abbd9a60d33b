"""The embedded event store: every event in SQLite (WAL), queryable with `streamer events`.

Each event is committed as it is written, so the store holds what the JSONL log holds even when a run is
killed. The database schema is versioned with SQLite's `user_version` and migrated step by step, never rebuilt,
so stores written by older versions keep their events.

Paths the store records (keyframe images, event snapshots) are relative to the store's folder, so a run folder
can be moved; readers resolve them against the folder they open the store in (`streamer.outputs.runfolder`).
"""

from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import io
import json
import logging
import os
import re
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from streamer.errors import StreamerError, cannot_write
from streamer.outputs.protocol import Output, Shown
from streamer.outputs.runfolder import find_store, relative, resolve
from streamer.outputs.snapshots import save_jpeg
from streamer.records import DETECTED, EVENT_TYPES, KIND, Logged, Segment
from streamer.sources import safe_name

log = logging.getLogger("streamer.outputs.store")


def _paths_relative_to_the_store(conn: sqlite3.Connection, folder: Path) -> None:
    """Stores before version 3 recorded paths as given, relative to wherever streamer was started. Keyframes were
    always written to `keyframes/` beside the store; a snapshot is rewritten where it can be found from here,
    else to `snapshots/` beside the store, where streamer writes them in a run folder."""
    for (image,) in conn.execute("SELECT image FROM keyframes").fetchall():
        new = f"keyframes/{Path(image).name}"
        conn.execute("UPDATE keyframes SET image = ? WHERE image = ?", (new, image))
        conn.execute("UPDATE keyframe_boxes SET image = ? WHERE image = ?", (new, image))
    for row_id, line in conn.execute("SELECT id, line FROM events WHERE line LIKE '%\"snapshot\"%'").fetchall():
        event = json.loads(line)
        old = Path(event["snapshot"])
        event["snapshot"] = relative(old, folder) if old.is_file() else f"snapshots/{old.name}"
        conn.execute("UPDATE events SET line = ? WHERE id = ?", (json.dumps(event, ensure_ascii=False), row_id))


def _column(table: str, column: str, kind: str) -> Callable[[sqlite3.Connection, Path], None]:
    """A migration that adds a column, unless it is there already."""
    def add(conn: sqlite3.Connection, folder: Path) -> None:
        if column not in {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
    return add


# Each step takes the database from version i to i + 1: SQL, or a function of the connection and the store's folder.
MIGRATIONS: list[str | Callable[[sqlite3.Connection, Path], None]] = [
    """
    CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        schema_version INTEGER NOT NULL,
        type TEXT NOT NULL,
        source TEXT NOT NULL,
        frame_index INTEGER NOT NULL,
        pts REAL NOT NULL,
        wall_time TEXT NOT NULL,
        wall_epoch REAL NOT NULL,
        track_id INTEGER,
        label TEXT,
        text TEXT,
        line TEXT NOT NULL
    );
    CREATE INDEX events_by_time ON events (wall_epoch);
    CREATE INDEX events_by_source_type ON events (source, type);
    """,
    """
    CREATE TABLE keyframe_boxes (
        id INTEGER PRIMARY KEY,
        source TEXT NOT NULL,
        frame_index INTEGER NOT NULL,
        pts REAL NOT NULL,
        image TEXT NOT NULL,
        label TEXT NOT NULL,
        track_id INTEGER NOT NULL,
        confidence REAL,
        x1 REAL NOT NULL, y1 REAL NOT NULL, x2 REAL NOT NULL, y2 REAL NOT NULL
    );
    CREATE TABLE keyframes (
        image TEXT PRIMARY KEY,
        source TEXT NOT NULL,
        frame_index INTEGER NOT NULL,
        pts REAL NOT NULL
    );
    """,
    _paths_relative_to_the_store,
    # Full-text search over what was seen: labels, texts read, captions (and whatever later events carry as text),
    # kept up to date by a trigger; `rebuild` indexes the events of a store written before.
    """
    CREATE VIRTUAL TABLE IF NOT EXISTS events_text USING fts5(
        label, text, type, source, content='events', content_rowid='id', tokenize='unicode61 remove_diacritics 2'
    );
    INSERT INTO events_text(events_text) VALUES ('rebuild');
    CREATE TRIGGER IF NOT EXISTS events_text_insert AFTER INSERT ON events BEGIN
        INSERT INTO events_text (rowid, label, text, type, source) VALUES (new.id, new.label, new.text, new.type,
                                                                           new.source);
    END;
    """,
    # An event's line is stored as the log wrote it, byte for byte; its paths (a snapshot) are relative to the
    # log's folder, which is recorded here relative to the store's (NULL: the same folder).
    _column("events", "folder", "TEXT"),
    # Recorded segments of cameras (`recorder`), indexed as each one closes; paths relative to the store's folder.
    """
    CREATE TABLE IF NOT EXISTS segments (
        id INTEGER PRIMARY KEY,
        source TEXT NOT NULL,
        path TEXT NOT NULL,
        start_wall REAL NOT NULL,
        end_wall REAL NOT NULL,
        start_pts REAL,
        end_pts REAL,
        first_frame INTEGER,
        last_frame INTEGER,
        bytes INTEGER NOT NULL,
        original INTEGER NOT NULL DEFAULT 0,
        run TEXT,
        tracks TEXT,
        UNIQUE (path, run)
    );
    CREATE INDEX IF NOT EXISTS segments_by_time ON segments (start_wall);
    CREATE INDEX IF NOT EXISTS segments_by_source ON segments (source, start_wall);
    """,
    # Which run wrote an event (track ids start again with every run; a clip of a track stays in its run).
    _column("events", "run", "TEXT"),
    # When a kept keyframe was seen, for `streamer find --from/--to` (NULL in stores written before).
    _column("keyframes", "wall_epoch", "REAL"),
    # Review items a person has looked at (`review`), by the id of each item's first event.
    "CREATE TABLE IF NOT EXISTS reviewed (event_id INTEGER PRIMARY KEY, at REAL NOT NULL);",
]
DB_VERSION = len(MIGRATIONS)
_RELATIVE = MIGRATIONS.index(_paths_relative_to_the_store) + 1  # stores from this version on record relative paths
COLUMNS = ["id", "wall_time", "source", "type", "frame_index", "pts", "track_id", "label", "text"]


def migrate(conn: sqlite3.Connection, folder: Path) -> None:
    """Every step from the store's version to this one in one transaction, so a reader (the page, `streamer
    events`) sees the store as it was or as it is, never half migrated."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > DB_VERSION:
        raise StreamerError(f"event store was written by a newer streamer (schema {version} > {DB_VERSION})")
    if version == DB_VERSION:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        for step in range(version, DB_VERSION):
            migration = MIGRATIONS[step]
            if callable(migration):
                migration(conn, folder)
            else:
                for statement in _statements(migration):
                    conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {DB_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:  # SQLite rolls back by itself on some errors (a full disk): the cause is that error
            conn.execute("ROLLBACK")
        raise


def _statements(script: str) -> list[str]:
    """An SQL script cut into its statements (a trigger's body holds semicolons of its own)."""
    statements, current = [], ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    if current.strip():
        statements.append(current.strip())
    return statements


def connect(path: Path, create: bool) -> sqlite3.Connection:
    """Open a store; with `create`, a new one where nothing is. Anything else found there (an empty or text
    file, somebody else's SQLite database) is refused, never turned into a store. A new store is built beside
    its place and moved in whole, so whoever opens the path finds nothing or a complete store."""
    path = Path(path)
    exists = path.is_file() and path.stat().st_size > 0
    if not create and not path.is_file():
        raise StreamerError(f"event store not found: {path}")
    if (exists or not create) and not _is_sqlite(path):
        raise StreamerError(f"{path} is not a streamer event store")
    try:
        if not exists:
            path.parent.mkdir(parents=True, exist_ok=True)
            _build(path)
        conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        try:
            _identity(conn, path)
        except StreamerError:
            conn.close()
            raise
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        migrate(conn, path.parent)
    except sqlite3.OperationalError as exc:  # could not write: a full disk, a read-only place
        raise cannot_write("event store", path, exc) from None
    except sqlite3.DatabaseError as exc:
        raise StreamerError(f"{path} is not a streamer event store: {exc}") from None
    return conn


def _build(path: Path) -> None:
    """A new store at `path`: made under a name of its own and linked into place; when another run made one there
    first, or a user's empty file is there, that one is what we open (an empty file is replaced)."""
    part = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.new")
    try:
        with contextlib.closing(sqlite3.connect(str(part), isolation_level=None)) as conn:
            migrate(conn, path.parent)
        try:
            os.link(part, path)
        except FileExistsError:
            if path.stat().st_size == 0:  # an empty file: a store not begun (another run's is never 0 bytes)
                os.replace(part, path)
        except OSError:  # a file system without hard links
            if not path.exists() or path.stat().st_size == 0:
                os.replace(part, path)
    finally:
        part.unlink(missing_ok=True)


def _identity(conn: sqlite3.Connection, path: Path) -> dict[str, set[str]]:
    """Make sure a database is a streamer store before anything touches it; its tables' columns. An empty
    database (no tables, version 0) is a store not begun yet."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    tables = {name: {row[1] for row in conn.execute(f"PRAGMA table_info({name})")}
              for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if version == 0 and not tables:
        return tables
    if version == 0 or not {"line", "wall_epoch", "type"} <= tables.get("events", set()):
        raise StreamerError(f"{path} is an SQLite database, but not a streamer event store")
    if version > DB_VERSION:
        raise StreamerError(f"event store {path} was written by a newer streamer (schema {version} > {DB_VERSION})")
    return tables


@contextlib.contextmanager
def reading(path: Path):
    """A store opened read only, its identity checked: what a command that only reads gets (it never migrates,
    never switches a journal mode, never creates a file): (connection, each table's columns)."""
    path = Path(path)
    if not path.is_file():
        raise StreamerError(f"event store not found: {path}")
    if not _is_sqlite(path):
        raise StreamerError(f"{path} is not a streamer event store")
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False)
    except sqlite3.Error as exc:
        raise StreamerError(f"cannot read the event store {path}: {exc}") from None
    try:
        tables = _identity(conn, path)
        if not tables:
            raise StreamerError(f"{path} is an empty database, not a streamer event store")
        yield conn, tables
    except sqlite3.DatabaseError as exc:
        raise StreamerError(f"cannot read the event store {path}: {exc}") from None
    finally:
        conn.close()


def _is_sqlite(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(16) == b"SQLite format 3\x00"


class EventStore:
    """The store a run writes into; one instance may be shared by several sources (writes are serialised)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._conn = connect(self.path, create=True)
        self._lock = threading.Lock()
        self._users = 0

    def acquire(self) -> "EventStore":
        """One more source writes here; the store closes when the last one is done."""
        with self._lock:
            self._users += 1
        return self

    @contextlib.contextmanager
    def _writing(self):
        """The connection, one writer at a time; a failed write (a full disk: "database or disk is full") is one
        line naming the store."""
        with self._lock:
            try:
                yield self._conn
            except sqlite3.Error as exc:
                raise cannot_write("event store", self.path, exc) from None

    def write(self, logged: Logged, log_folder: Path, run: str | None = None) -> None:
        """`log_folder`: the folder of the event log beside this store, which the event's paths are relative to;
        `run`: the id of the run that made it."""
        event, data = logged.event, logged.data
        folder = relative(log_folder, self.path.parent)
        with self._writing() as conn:
            conn.execute(
                "INSERT INTO events (schema_version, type, source, frame_index, pts, wall_time, wall_epoch, track_id,"
                " label, text, line, folder, run) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                # wall_epoch from the ISO text itself, so --since/--until with a logged time compare exactly
                (data["schema_version"], event.type, event.source, event.frame_index, event.pts, data["wall_time"],
                 _dt.datetime.fromisoformat(data["wall_time"]).timestamp(), event.track_id, event.label, event.text,
                 logged.line, None if folder == "." else folder, run),
            )

    def write_keyframe(self, source: str, frame_index: int, pts: float, image: Path, detections,
                       wall_time: float | None = None) -> None:
        """A saved keyframe and the boxes detected on it (with their track ids; -1: not confirmed yet), for
        dataset export and `streamer find`."""
        names = detections.data.get("class_name")
        image = relative(image, self.path.parent)
        rows = [
            (source, frame_index, pts, image, str(names[i]) if names is not None else "object", int(t),
             None if detections.confidence is None else float(detections.confidence[i]), *map(float, detections.xyxy[i]))
            for i, t in enumerate(detections.tracker_id if detections.tracker_id is not None else [])
        ]  # every box the model saw on it: a track not confirmed yet (-1) is an object all the same
        with self._writing() as conn, conn:
            conn.execute("INSERT OR REPLACE INTO keyframes (image, source, frame_index, pts, wall_epoch)"
                         " VALUES (?, ?, ?, ?, ?)", (image, source, frame_index, pts, wall_time))
            conn.executemany(
                "INSERT INTO keyframe_boxes (source, frame_index, pts, image, label, track_id, confidence, x1, y1, x2, y2)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)

    def add_segment(self, segment) -> None:
        """A recorded segment (`records.Segment`), the moment it is closed."""
        with self._writing() as conn:
            conn.execute("INSERT OR REPLACE INTO segments (source, path, start_wall, end_wall, start_pts, end_pts,"
                         " first_frame, last_frame, bytes, original, run, tracks) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         (segment.source, segment.path, segment.start_wall, segment.end_wall, segment.start_pts,
                          segment.end_pts, segment.first_frame, segment.last_frame, segment.bytes,
                          int(segment.original), segment.run, segment.tracks))

    def segments(self, limit: int | None = None, ended_before: float | None = None, after=None,
                 source: str | None = None) -> list:
        """The segments the store recorded, oldest first: at most `limit`, those that ended before
        `ended_before`, those after the segment `after` (in that order, to walk them in batches); never the
        originals of file sources, which are the user's files."""
        with self._writing() as conn:
            return _segments(conn, source, limit=limit, recorded=True, ended_before=ended_before, after=after)

    def recorded_bytes(self, source: str | None = None) -> int:
        with self._writing() as conn:
            return conn.execute("SELECT coalesce(sum(bytes), 0) FROM segments WHERE original = 0 AND (? IS NULL OR"
                                " source = ?)", (source, source)).fetchone()[0]

    def segment_paths(self, source: str) -> list[str]:
        with self._writing() as conn:
            return [row[0] for row in conn.execute("SELECT path FROM segments WHERE source = ?", (source,))]

    def delete_segment(self, segment_id: int) -> None:
        with self._writing() as conn:
            conn.execute("DELETE FROM segments WHERE id = ?", (segment_id,))

    def event_times(self, since: float, exclude: tuple[str, ...]) -> list[float]:
        """When events since `since` (epoch seconds) happened, but those of the types in `exclude`."""
        marks = ", ".join("?" * len(exclude))
        with self._writing() as conn:
            return [row[0] for row in conn.execute(
                f"SELECT wall_epoch FROM events WHERE wall_epoch >= ? AND type NOT IN ({marks})", (since, *exclude))]

    def close(self) -> None:
        """One source is done with the store; the last one closes it."""
        with self._lock:
            self._users -= 1
            if self._users > 0 or self._conn is None:
                return
            self._conn.close()
            self._conn = None


class StoreOutput(Output):
    """The store as one source's output: every event, and with `save_keyframes` every keyframe the model saw, its
    own pixels as a JPEG in `keyframes/` beside the store, with the boxes detected on it (confirmed tracks)."""

    def __init__(self, store: EventStore, log_folder: Path, save_keyframes: bool = False, run_id: str = "") -> None:
        self.store = store.acquire()
        self.log_folder = log_folder
        self.save_keyframes = save_keyframes
        self.run_id = run_id  # in every file name this run writes, so no other run can take it

    def event(self, logged: Logged) -> None:
        self.store.write(logged, self.log_folder, self.run_id)

    def frame(self, shown: Shown) -> None:
        if not (self.save_keyframes and shown.keyframe):
            return
        frame = shown.frame
        path = self.store.path.parent / "keyframes" / f"{safe_name(frame.source)}-{self.run_id}{frame.index:07d}.jpg"
        save_jpeg(path, frame.image, "keyframe image")
        for frame_tracks in shown.tracks:
            det = frame_tracks.detections
            seen = det[det.data[KIND] == DETECTED] if len(det) else det
            self.store.write_keyframe(frame.source, frame.index, frame.pts, path, seen, frame.wall_time)

    def close(self) -> None:
        self.store.close()


# In the order of `records.Segment`'s fields.
_SEGMENT_COLUMNS = ("source, path, start_wall, end_wall, start_pts, end_pts, first_frame, last_frame, bytes, id, original,"
                    " run, tracks")


def _segments(conn: sqlite3.Connection, source: str | None = None, start: float | None = None,
              end: float | None = None, limit: int | None = None, recorded: bool = False,
              ended_before: float | None = None, after=None) -> list:
    """Segments of `source` (all: None) overlapping [start, end] in wall time, oldest first; `recorded`: only
    those the store recorded (not file sources' originals)."""
    return [Segment(*row) for row in _segment_rows(conn, _SEGMENT_COLUMNS, source, start, end, limit, recorded,
                                                    ended_before, after)]


def _segment_rows(conn: sqlite3.Connection, columns: str, source: str | None = None, start: float | None = None,
                  end: float | None = None, limit: int | None = None, recorded: bool = False,
                  ended_before: float | None = None, after=None) -> list[tuple]:
    """`columns` of the segments `_segments` describes, as plain rows."""
    where, args = ["original = 0"] if recorded else [], []
    for condition, value in (("source = ?", source), ("end_wall >= ?", start), ("start_wall <= ?", end),
                             ("end_wall < ?", ended_before)):
        if value is not None:
            where.append(condition)
            args.append(value)
    if after is not None:
        where.append("(start_wall > ? OR (start_wall = ? AND id > ?))")
        args += [after.start_wall, after.start_wall, after.id]
    sql = (f"SELECT {columns} FROM segments" + (" WHERE " + " AND ".join(where) if where else "")
           + " ORDER BY start_wall, id")
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    return conn.execute(sql, args).fetchall()


def recordings(path: Path, source: str | None = None, start: float | None = None,
               end: float | None = None) -> list:
    """A store's recorded segments of cameras (read only) overlapping [start, end] in wall time, oldest first;
    their paths are relative to the store's folder."""
    with reading(path) as (conn, tables):
        return _segments(conn, source, start, end, recorded=True) if "segments" in tables else []


def recorded_spans(path: Path, source: str) -> list[tuple[float, float]]:
    """(start, end) wall times of a camera's recorded segments, oldest first: what a timeline needs of them,
    read without making a record of each (a week of minute segments in milliseconds)."""
    with reading(path) as (conn, tables):
        return _segment_rows(conn, "start_wall, end_wall", source, recorded=True) if "segments" in tables else []


def footage(path: Path) -> list:
    """Every video a store indexes, oldest first: cameras' recorded segments and file sources' own files."""
    with reading(path) as (conn, tables):
        return _segments(conn) if "segments" in tables else []


def kept_keyframes(path: Path, source: str | None = None, start: float | None = None,
                   end: float | None = None) -> list[tuple[Path, str, int, float, float | None]]:
    """Every kept keyframe (image resolved against the store's folder, source, frame index, pts, wall time or
    None in stores written before it was kept), oldest first; with `start`/`end`, those seen in that span."""
    with reading(path) as (conn, tables):
        if "keyframes" not in tables:
            return []
        wall = "wall_epoch" if "wall_epoch" in tables["keyframes"] else "NULL"
        where, args = [], []
        for condition, value in (("source = ?", source), (f"{wall} >= ?", start), (f"{wall} <= ?", end)):
            if value is not None:
                where.append(condition)
                args.append(value)
        rows = conn.execute(f"SELECT image, source, frame_index, pts, {wall} FROM keyframes"
                            + (" WHERE " + " AND ".join(where) if where else "") + f" ORDER BY {wall}, source, "
                            "frame_index", args).fetchall()
        old = conn.execute("PRAGMA user_version").fetchone()[0] < _RELATIVE
    folder = Path(path).parent
    return [(resolve(folder, f"keyframes/{Path(image).name}" if old else image), src, index, pts, at)
            for image, src, index, pts, at in rows]


def mentions(path: Path, words: str) -> list[tuple[str, float, float]]:
    """(source, wall time, BM25 rank: lower is better) of every event whose label, text or caption has any of
    `words`: where a phrase was already seen in other words."""
    found = re.findall(r"\w+", words)
    with reading(path) as (conn, tables):
        if not found or "events_text" not in tables:
            return []
        match = " OR ".join('"' + word.replace('"', '""') + '"' for word in found)
        return conn.execute("SELECT events.source, events.wall_epoch, bm25(events_text) FROM events JOIN events_text"
                            " ON events_text.rowid = events.id WHERE events_text MATCH ? ORDER BY bm25(events_text)",
                            (match,)).fetchall()


def snapshot_of(path: Path, event_id: int) -> Path | None:
    """The snapshot file of an event, where the store says it is (relative to its log's folder), if it is a
    JPEG file there."""
    with reading(path) as (conn, tables):
        folder = "folder" if "folder" in tables["events"] else "NULL"
        row = conn.execute(f"SELECT line, {folder} FROM events WHERE id = ?", (event_id,)).fetchone()
    if row is None:
        return None
    name = json.loads(row[0]).get("snapshot")
    if not isinstance(name, str) or not name.endswith(".jpg"):
        return None
    found = resolve(Path(path).parent / (row[1] or "."), name)
    return found if found.is_file() else None


def original(path: Path, run: str | None):
    """The original file a file source's run indexed as its recording, or None."""
    if run is None:
        return None
    with reading(path) as (conn, tables):
        if "segments" not in tables:
            return None
        row = conn.execute(f"SELECT {_SEGMENT_COLUMNS} FROM segments WHERE original = 1 AND run = ?",
                           (run,)).fetchone()
    return None if row is None else Segment(*row)


def epoch(value: str, flag: str) -> float:
    try:
        moment = _dt.datetime.fromisoformat(value)
    except ValueError:
        raise StreamerError(f"{flag}: expected an ISO-8601 time such as 2026-11-28T10:00:00, got '{value}'") from None
    if moment.tzinfo is None:
        moment = moment.astimezone()  # local time, as a person types it
    return moment.timestamp()


def match_words(search: str) -> str:
    """A person's search as an FTS5 query: every word must occur (in any order), each as a literal, so quotes,
    stars or dashes in it are text, not query syntax. Empty when it holds no word."""
    words = re.findall(r"\w+", search)
    return " ".join('"' + word.replace('"', '""') + '"' for word in words)


def query(path: Path, source: str | None = None, type: str | None = None, label: str | None = None,
          since: str | None = None, until: str | None = None, search: str | None = None,
          with_id: bool = False) -> list[dict[str, Any]]:
    """Events matching every given filter, oldest first (best match first with `search`: words in their label,
    text, type or source, ranked by BM25), as the JSON objects of the event log (`with_id`: the store's id of
    each first, which `streamer clip --event` takes); paths in them (snapshots)
    resolved against the store's folder, so they work from wherever the store is read."""
    if type is not None and type not in EVENT_TYPES:
        raise StreamerError(f"--type: no event type '{type}'; the types are {', '.join(EVENT_TYPES)}")
    path = find_store(path) if Path(path).is_dir() else path
    where, args = [], []
    for column, value in (("source", source), ("type", type), ("label", label)):
        if value is not None:
            where.append(f"events.{column} = ?")
            args.append(value)
    if since is not None:
        where.append("wall_epoch >= ?")
        args.append(epoch(since, "--since"))
    if until is not None:
        where.append("wall_epoch < ?")
        args.append(epoch(until, "--until"))
    order, table = "wall_epoch, events.id", "events"
    if search is not None and not match_words(search):
        raise StreamerError(f"--search: no word to look for in '{search}'")
    with reading(path) as (conn, tables):
        if search is not None and "events_text" in tables:
            table = "events JOIN events_text ON events_text.rowid = events.id"
            where.append("events_text MATCH ?")
            args.append(match_words(search))
            order = "bm25(events_text), wall_epoch"
        elif search is not None:  # a store from before the index, read as it is: every word somewhere, in order
            for word in re.findall(r"\w+", search):
                where.append("(events.label LIKE ? OR events.text LIKE ? OR events.type LIKE ?)")
                args += [f"%{word}%"] * 3
        folder = "folder" if "folder" in tables["events"] else "NULL"
        sql = (f"SELECT events.id, line, {folder} FROM {table}" + (" WHERE " + " AND ".join(where) if where else "")
               + f" ORDER BY {order}")
        rows = conn.execute(sql, args).fetchall()
        old = conn.execute("PRAGMA user_version").fetchone()[0] < _RELATIVE
    events = []
    damaged = []
    for row_id, line, folder in rows:
        try:
            logged = json.loads(line)
            if not isinstance(logged, dict):
                raise ValueError("not an object")
        except (ValueError, TypeError):  # a row cut short (a disk that filled, a copy broken off)
            damaged.append(row_id)
            continue
        event = {"id": row_id, **logged} if with_id else logged
        if "snapshot" in event:
            if old and not Path(event["snapshot"]).is_file():  # as the migration to relative paths would find it
                event["snapshot"] = f"snapshots/{Path(event['snapshot']).name}"
            event["snapshot"] = str(resolve(Path(path).parent / (folder or "."), event["snapshot"]))
        events.append(event)
    if damaged:
        log.warning("%s: %d damaged events left out (ids %s)", path, len(damaged),
                    ", ".join(map(str, damaged[:10])) + (" ..." if len(damaged) > 10 else ""))
    return events


def render(events: list[dict[str, Any]], fmt: str, columns: list[str] = COLUMNS) -> str:
    """`table` for people; `json` one array, `jsonl` a line per event, `csv`, for programs."""
    if fmt == "json":
        return json.dumps(events, ensure_ascii=False, indent=1)
    if fmt == "jsonl":
        return "\n".join(json.dumps(e, ensure_ascii=False) for e in events)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=columns + ["bbox"], extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for event in events:
            writer.writerow({**event, "bbox": " ".join(str(v) for v in event["bbox"] or [])})
        return out.getvalue().rstrip("\n")
    return text_table(columns, [[_cell(e.get(c)) for c in columns] for e in events], "events")


def text_table(head: list[str], rows: list[list[str]], what: str) -> str:
    """Columns padded to their widest cell, and a last line counting the rows: what people read in a terminal
    (`streamer events`, `streamer find`)."""
    widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(head)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(head, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in rows]
    lines.append(f"({len(rows)} {what})")
    return "\n".join(line.rstrip() for line in lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def keyframe_boxes(path: Path) -> tuple[list[Path], dict[Path, list[tuple[str, tuple[float, float, float, float], int]]]]:
    """Every saved keyframe image, resolved against the store's folder, with its (label, box, track id), for export."""
    with reading(path) as (conn, tables):
        if "keyframes" not in tables:
            return [], {}
        images = [row[0] for row in conn.execute("SELECT image FROM keyframes ORDER BY source, frame_index")]
        rows = conn.execute("SELECT image, label, x1, y1, x2, y2, track_id FROM keyframe_boxes ORDER BY id").fetchall()
        if conn.execute("PRAGMA user_version").fetchone()[0] < _RELATIVE:  # read as the migration would write it
            images = [f"keyframes/{Path(image).name}" for image in images]
            rows = [(f"keyframes/{Path(image).name}", *rest) for image, *rest in rows]
    folder = Path(path).parent
    boxes: dict[Path, list] = {resolve(folder, image): [] for image in images}
    for image, label, *xyxy, track_id in rows:
        boxes.setdefault(resolve(folder, image), []).append((label, tuple(xyxy), int(track_id)))
    return [resolve(folder, image) for image in images], boxes
