"""Review items: a camera's events grouped into activities, as Frigate's review items are.

One car that comes, is read and goes is three events but one thing to look at. An item starts with a tracked
object when nothing is going on, takes in every object that appears while one of its objects is still there (or
within `GAP_S` of the last one leaving), and every later event of its objects (texts read, descriptions, zones);
it ends when its last object has left. Items are grouped per run (a file's times are its own), found from the
events alone (nothing is kept but whether an item was reviewed), and named by their first event's id.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

from streamer.errors import StreamerError, cannot_write
from streamer.outputs.store import connect, original, reading
from streamer.recording.clip import Span
from streamer.records import iso_time

GAP_S = 5.0  # an object appearing this soon after the last one left belongs to the same activity
_LOOK_BACK_S = 3600.0  # how far back an item is looked for when named by its id
LONGEST_CLIP_S = 600.0  # an item's clip (a car parked all day is the first ten minutes of it)
_TEXTS = ("text_read", "text_changed", "object_described", "phrase_seen", "caption")


class NoItem(StreamerError):
    """No review item of that id in the store."""


@dataclass
class Item:
    """One activity of one camera (one run of it), as its events build it up."""

    id: int  # its first event's id in its store
    source: str
    run: str | None
    start: float  # wall-clock seconds
    end: float
    start_pts: float
    end_pts: float
    open: set = field(default_factory=set)  # track ids not gone yet
    left: set = field(default_factory=set)  # track ids gone
    tracks: dict = field(default_factory=dict)  # track id -> label
    zones: list = field(default_factory=list)
    texts: list = field(default_factory=list)
    events: list = field(default_factory=list)  # (id, type)
    snapshot: int | None = None  # the id of its first event with a snapshot

    def take(self, row) -> None:
        event_id, type_, track, label, text, when, pts, line = row
        self.events.append((event_id, type_))
        self.end, self.end_pts = max(self.end, when), max(self.end_pts, pts)
        if track is not None:
            if label and (track not in self.tracks or type_ == "object_appeared"):
                self.tracks[track] = label
            if type_ == "object_left":
                self.open.discard(track)
                self.left.add(track)
            elif track not in self.left:  # a text read after its object left keeps nothing open
                self.open.add(track)
        if type_ in _TEXTS and text and text not in self.texts and len(self.texts) < 20:
            self.texts.append(text)
        if type_ == "zone_entered" or self.snapshot is None:
            try:
                data = json.loads(line)
            except ValueError:  # a row cut short (a disk that filled): its zone and snapshot are not known
                data = {}
            if not isinstance(data, dict):
                data = {}
            zone = data.get("zone")
            if type_ == "zone_entered" and isinstance(zone, str) and zone not in self.zones:
                self.zones.append(zone)
            if self.snapshot is None and "snapshot" in data:
                self.snapshot = event_id

    def seconds(self) -> float:
        """How long it went on in the footage: a file is read faster than it plays, so its own times say; a
        camera's clock that went back (a reconnect) leaves the wall clock's."""
        footage = self.end_pts - self.start_pts
        return footage if footage >= 0 else self.end - self.start

    def summary(self, reviewed: set[int]) -> dict:
        """As the page and the API give it."""
        labels: dict[str, int] = {}
        for label in self.tracks.values():
            labels[label] = labels.get(label, 0) + 1
        return {"id": self.id, "source": self.source, "start": iso_time(self.start), "end": iso_time(self.end),
                "seconds": round(self.seconds(), 3), "ongoing": bool(self.open), "labels": labels,
                "zones": self.zones, "texts": self.texts, "events": len(self.events),
                "types": sorted({t for _, t in self.events}), "snapshot_event": self.snapshot,
                "reviewed": self.id in reviewed}


def group(rows) -> list[Item]:
    """Rows (id, source, run, type, track_id, label, text, wall_epoch, pts, line) in time order, as items."""
    items: list[Item] = []
    current: dict[tuple, Item] = {}  # (source, run) -> its item now
    owner: dict[tuple, Item] = {}  # (source, run, track) -> the item its track is in
    for event_id, source, run, type_, track, label, text, when, pts, line in rows:
        where = (source, run)
        row = (event_id, type_, track, label, text, when, pts, line)
        if track is None:  # a caption, a frame's text, an outage: never an item of its own
            item = current.get(where)
            if item is not None and item.open and type_ in _TEXTS:
                item.take(row)
            continue
        item = owner.get((*where, track))
        if item is None:
            item = current.get(where)
            if item is None or (not item.open and when - item.end > GAP_S):
                item = Item(event_id, source, run, when, when, pts, pts)
                items.append(item)
                current[where] = item
            owner[(*where, track)] = item
        item.take(row)
    return items


_COLUMNS = "id, source, {run}, type, track_id, label, text, wall_epoch, pts, line"


def items(path: Path, source: str | None = None, since: float | None = None, until: float | None = None) -> list[dict]:
    """The items of a store that started between `since` and `until` (epoch seconds), newest first. Events from
    an hour before `since` are read too, so an item that began before is not cut in two."""
    with reading(path) as (conn, tables):
        run = "run" if "run" in tables["events"] else "NULL"
        where, args = ["1"], []
        if source is not None:
            where.append("source = ?")
            args.append(source)
        if since is not None:
            where.append("wall_epoch >= ?")
            args.append(since - _LOOK_BACK_S)
        if until is not None:
            where.append("wall_epoch < ?")
            args.append(until)
        rows = conn.execute(f"SELECT {_COLUMNS.format(run=run)} FROM events WHERE {' AND '.join(where)} "
                            "ORDER BY wall_epoch, id", args).fetchall()
        reviewed = _reviewed(conn, tables)
    found = [i for i in group(rows) if since is None or i.start >= since]
    return [i.summary(reviewed) for i in reversed(found)]


def _reviewed(conn, tables) -> set[int]:
    if "reviewed" not in tables:  # a store from before review items: nothing reviewed yet
        return set()
    return {row[0] for row in conn.execute("SELECT event_id FROM reviewed")}


def item(path: Path, item_id: int) -> Item:
    """The item named `item_id` (an item's first event), found again from the events of the hour before it on."""
    with reading(path) as (conn, tables):
        run = "run" if "run" in tables["events"] else "NULL"
        first = None if not 0 < item_id < 2**63 else conn.execute(
            f"SELECT source, {run}, wall_epoch FROM events WHERE id = ? AND track_id IS NOT NULL",
            (item_id,)).fetchone()
        rows = [] if first is None else conn.execute(
            f"SELECT {_COLUMNS.format(run=run)} FROM events WHERE source = ? AND {run} IS ? AND wall_epoch >= ? "
            "ORDER BY wall_epoch, id", (first[0], first[1], first[2] - _LOOK_BACK_S)).fetchall()
    found = next((i for i in group(rows) if i.id == item_id), None)
    if found is None:
        raise NoItem(f"no review item {item_id}")
    return found


def span(path: Path, found: Item, pre_s: float, post_s: float) -> Span:
    """The footage of an item, `pre_s` before it to `post_s` after (LONGEST_CLIP_S at most): a file's from the
    file itself (its own times), a camera's from its recordings."""
    if found.run is not None and original(path, found.run) is not None:
        start, end = found.start_pts - pre_s, found.end_pts + post_s
        return Span(found.source, start, min(end, start + LONGEST_CLIP_S), found.run)
    start, end = found.start - pre_s, found.end + post_s
    return Span(found.source, start, min(end, start + LONGEST_CLIP_S), None)


def mark(path: Path, item_id: int, reviewed: bool) -> None:
    """Keep whether an item was reviewed, in its store (where the events are, so it moves with them)."""
    item(path, item_id)  # one that is there
    conn = connect(path, create=False)
    try:
        if reviewed:
            conn.execute("INSERT OR REPLACE INTO reviewed (event_id, at) VALUES (?, ?)", (item_id, time.time()))
        else:
            conn.execute("DELETE FROM reviewed WHERE event_id = ?", (item_id,))
    except sqlite3.Error as exc:  # a full disk, a read-only place
        raise cannot_write("event store", path, exc) from None
    finally:
        conn.close()
