"""A durable, bounded, ordered queue on disk for events on their way to another system (MQTT, webhooks).

While the broker or receiver is down, events wait in a small SQLite file and go out in order once it is back;
a restart of streamer picks up what was still waiting. Past `max_items` the oldest waiting events are dropped,
counted and logged, so a receiver that never returns cannot fill the disk.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from pathlib import Path

from streamer.errors import cannot_write

log = logging.getLogger("streamer.outputs.outbox")


class Outbox:
    def __init__(self, path: Path, max_items: int = 10_000) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_items = max_items
        self.overflowed = 0
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        try:
            self._conn = self._open()
        except sqlite3.OperationalError as exc:  # cannot be written (a full disk, a read-only place): not damaged
            raise cannot_write("outbox", self.path, exc) from None
        except sqlite3.DatabaseError:  # damaged (a power cut, a disk that filled): kept aside, a new one begun
            aside = self.path.with_name(f"{self.path.name}.damaged-{int(time.time())}")
            self.path.rename(aside)
            log.warning("outbox %s was damaged: moved to %s (its waiting events are there); a new one begins",
                        self.path, aside)
            try:
                self._conn = self._open()
            except sqlite3.Error as exc:
                raise cannot_write("outbox", self.path, exc) from None
        # Kept in memory: count(*) scans the table, and a broker outage makes it long.
        self._size = self._conn.execute("SELECT count(*) FROM outbox").fetchone()[0]

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY, payload TEXT NOT NULL)")
            conn.execute("SELECT count(*) FROM outbox").fetchone()
        except sqlite3.DatabaseError:
            conn.close()
            raise
        return conn

    def put(self, payload: dict) -> None:
        """Kept until delivered; an event the disk cannot take ends the run with one line (it would be lost)."""
        with self._lock:
            try:
                self._conn.execute("INSERT INTO outbox (payload) VALUES (?)",
                                   (json.dumps(payload, ensure_ascii=False),))
            except sqlite3.Error as exc:
                raise cannot_write("outbox", self.path, exc) from None
            self._size += 1
            excess = self._size - self.max_items
            if excess > 0:
                self._conn.execute("DELETE FROM outbox WHERE id IN (SELECT id FROM outbox ORDER BY id LIMIT ?)", (excess,))
                self._size -= excess
                self.overflowed += excess
                log.warning("outbox %s full: dropped %d oldest events (%d in all)", self.path.name, excess,
                            self.overflowed)
            self._ready.notify_all()

    def peek(self, limit: int, timeout: float) -> list[tuple[int, dict]]:
        """The oldest waiting events (up to `limit`), waiting up to `timeout` for one to arrive."""
        with self._lock:
            if self._size == 0:
                self._ready.wait(timeout)
            rows = self._conn.execute("SELECT id, payload FROM outbox ORDER BY id LIMIT ?", (limit,)).fetchall()
        return [(row_id, json.loads(payload)) for row_id, payload in rows]

    def ack(self, ids: list[int]) -> None:
        with self._lock:
            before = self._conn.total_changes
            self._conn.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in ids])
            self._size -= self._conn.total_changes - before

    def __len__(self) -> int:
        with self._lock:
            return self._size

    def wake(self) -> None:
        with self._lock:
            self._ready.notify_all()

    def close(self) -> None:
        with self._lock:
            self._conn.close()
