"""Review items from a store's events: one row per activity (Frigate's review items), whatever order the events
of overlapping objects come in, and whether each was reviewed kept in the store."""

from __future__ import annotations

import pytest

from streamer.outputs.store import EventStore
from streamer.records import Event, Logged
from streamer.web import review

T0 = 1_780_000_000.0


def write(store, folder, t, kind, track=None, label=None, text=None, run="r1", **extra):
    if kind == "object_left":
        extra = {"dwell_s": 1.0, "reason": "lost", **extra}
    event = Event(kind, "gate", int(t * 25), t, T0 + t, track_id=track, label=label, text=text, extra=extra)
    store.write(Logged.of(event), folder, run=run)


@pytest.fixture()
def db(tmp_path):
    path = tmp_path / "events.db"
    store = EventStore(path)
    w = lambda *a, **k: write(store, tmp_path, *a, **k)  # noqa: E731
    # a car; a van comes while the car is there and stays after it left; the car's plate read late: one activity
    w(0.0, "object_appeared", 1, "car")
    w(2.0, "object_appeared", 2, "van")
    w(2.5, "zone_entered", 2, "van", zone="drive")
    w(3.0, "object_left", 1, "car")
    w(3.5, "text_read", 1, "car", text="AB 42")
    w(4.0, "caption", text="a van in a drive")
    w(6.0, "object_left", 2, "van")
    # a person 3 s after: the same activity; 20 s later another one; an outage between is no activity
    w(9.0, "object_appeared", 3, "person")
    w(10.0, "object_left", 3, "person")
    w(20.0, "source_down", reason="timeout")
    w(30.0, "object_appeared", 4, "person")
    # the next run's tracks start at 0 again: never part of the run before's items
    w(31.0, "object_appeared", 1, "dog", run="r2")
    store.close()
    return path


def test_overlapping_objects_are_one_item_with_everything_they_did(db):
    items = review.items(db)
    assert [i["labels"] for i in items] == [{"dog": 1}, {"person": 1}, {"car": 1, "van": 1, "person": 1}]
    first = items[-1]
    assert first["zones"] == ["drive"] and first["texts"] == ["AB 42", "a van in a drive"]
    assert first["seconds"] == 10.0 and not first["ongoing"] and first["events"] == 9
    assert items[1]["ongoing"] and items[0]["ongoing"]  # the person at 30 s and the dog have not left
    assert review.items(db, since=T0 + 25) == items[:2]  # started in the window
    assert review.items(db, source="elsewhere") == []


def test_an_item_found_again_by_its_id_spans_its_footage_and_its_review_is_kept(db):
    first = review.items(db)[-1]
    found = review.item(db, first["id"])
    clip = review.span(db, found, 1.0, 2.0)
    assert (clip.start, clip.end) == (T0 - 1.0, T0 + 12.0) and clip.run is None  # a camera: from its recordings
    review.mark(db, first["id"], True)
    assert [i["reviewed"] for i in review.items(db)] == [False, False, True]
    review.mark(db, first["id"], False)
    assert not any(i["reviewed"] for i in review.items(db))
    for wrong in (first["id"] + 1, 10**30, 0, 10**6):  # an event inside an item, no id, no such event
        with pytest.raises(review.NoItem):
            review.mark(db, wrong, True)


def test_a_damaged_row_does_not_hide_the_activity_it_belongs_to(db):
    """A row cut short (a disk that filled mid-write) is read as an event without its zone or snapshot."""
    import sqlite3

    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE events SET line = substr(line, 1, 20) WHERE type = 'zone_entered'")
    first = review.items(db)[-1]
    assert first["labels"] == {"car": 1, "van": 1, "person": 1} and first["zones"] == []
