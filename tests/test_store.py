"""The SQLite event store, `streamer events`, snapshots and dataset export."""

import json
import sqlite3

import numpy as np
import pytest
import supervision as sv

from streamer.cli import main
from streamer.config import Config
from streamer.errors import StreamerError
from streamer.outputs.store import MIGRATIONS, connect, query
from streamer.pipeline.local import Pipeline, SourceSpec
from streamer.records import Logged
from tests.helpers import CLIP, car_and_person, read_events
from tests.scripted import ScriptedDetector


def run(tmp_path, script=car_and_person, **sections):
    config = Config.model_validate({"sampler": {"every_n_frames": 5, "max_fps": None, "scene_threshold": None},
                                    "tracker": {"lost_after_s": 1.0}, **sections})
    spec = SourceSpec(str(CLIP), tmp_path / "events.jsonl", None, name="street", db_path=tmp_path / "events.db")
    Pipeline(config, lambda: ScriptedDetector(script)).run_many([spec])
    return tmp_path / "events.jsonl", tmp_path / "events.db"


def test_store_holds_exactly_the_logs_events(tmp_path):
    log, db = run(tmp_path)
    assert query(db) == read_events(log)
    assert len(read_events(log)) == 4


@pytest.mark.parametrize("filters, expected", [
    ({"type": "object_appeared"}, [("object_appeared", "car"), ("object_appeared", "person")]),
    ({"label": "person"}, [("object_appeared", "person"), ("object_left", "person")]),
    ({"type": "object_left", "label": "car"}, [("object_left", "car")]),
    ({"source": "elsewhere"}, []),
])
def test_events_filters(tmp_path, filters, expected):
    _, db = run(tmp_path)
    assert sorted((e["type"], e["label"]) for e in query(db, **filters)) == sorted(expected)


def test_events_since_until_and_formats(tmp_path, capsys):
    log, db = run(tmp_path)
    events = read_events(log)
    last = events[-1]["wall_time"]
    assert query(db, since=last) == [e for e in events if e["wall_time"] >= last]
    assert query(db, until=events[0]["wall_time"]) == []
    assert main(["events", str(db), "--type", "object_left", "--format", "csv"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("id,wall_time,source,type") and len(out) == 3
    assert main(["events", str(db), "--label", "car"]) == 0
    table = capsys.readouterr().out
    assert "object_appeared" in table and "(2 events)" in table
    assert main(["events", str(tmp_path), "--format", "jsonl", "--source", "street"]) == 0  # the run folder
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [e.pop("id") for e in printed] == list(range(1, len(events) + 1)) and printed == events
    assert main(["events", str(db), "--format", "json", "--type", "object_left"]) == 0
    array = json.loads(capsys.readouterr().out)  # one JSON document
    assert [e["type"] for e in array] == ["object_left"] * 2
    assert main(["events", str(db), "--type", "object_apeared"]) == 1
    assert "no event type 'object_apeared'; the types are object_appeared, object_left" in capsys.readouterr().err
    assert main(["events", str(db), "--since", "yesterday"]) == 1
    assert "ISO-8601" in capsys.readouterr().err


def test_an_older_store_is_migrated_not_rebuilt(tmp_path):
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript(MIGRATIONS[0])
    conn.execute("PRAGMA user_version = 1")
    conn.execute("INSERT INTO events (schema_version, type, source, frame_index, pts, wall_time, wall_epoch, line)"
                 " VALUES (1, 'object_appeared', 'cam', 3, 0.1, '2026-01-01T00:00:00+00:00', 1767225600, '{\"kept\": 1}')")
    conn.commit()
    conn.close()
    migrated = connect(path, create=True)
    assert migrated.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert migrated.execute("SELECT count(*) FROM keyframes").fetchone()[0] == 0
    migrated.close()
    assert query(path) == [{"kept": 1}]


def test_a_store_being_made_is_never_seen_half_made(tmp_path):
    """The page and `streamer events` may read a store while a run is making it: they find nothing or a store."""
    import threading

    paths = [tmp_path / f"s{i}.db" for i in range(30)]
    seen, done = [], threading.Event()

    def read():
        while not done.is_set():
            for path in paths:
                try:
                    query(path)
                except StreamerError as exc:
                    if "not found" not in str(exc):
                        seen.append(str(exc))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for path in paths:
            connect(path, create=True).close()
    finally:
        done.set()
        reader.join()
    assert seen == []
    assert all(query(path) == [] for path in paths)
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(("-wal", "-shm"))) == sorted(
        p.name for p in paths)  # nothing left over from the making


def test_a_file_that_is_not_a_store(tmp_path):
    path = tmp_path / "x.db"
    path.write_text("hello")
    with pytest.raises(StreamerError, match="not a streamer event store"):
        query(path)


def test_snapshots_are_crops_of_the_object(tmp_path):
    log, _ = run(tmp_path, events={"snapshots": True})
    appeared = [e for e in read_events(log) if e["type"] == "object_appeared"]
    import cv2

    for event in appeared:
        crop = cv2.imread(str(log.parent / event["snapshot"]))
        x1, y1, x2, y2 = event["bbox"]
        assert crop.shape[:2] == (round(y2) - round(y1), round(x2) - round(x1))


@pytest.mark.parametrize("fmt", ["coco", "yolo"])
def test_export_loads_back_with_supervision(tmp_path, fmt, capsys):
    run(tmp_path, output={"save_keyframes": True})
    out = tmp_path / "dataset"
    assert main(["export", str(tmp_path), "--format", fmt, str(out)]) == 0
    if fmt == "coco":
        dataset = sv.DetectionDataset.from_coco(str(out / "images" / "default"),
                                                str(out / "annotations" / "instances_default.json"))
    else:
        dataset = sv.DetectionDataset.from_yolo(str(out / "images" / "train"), str(out / "labels" / "train"),
                                                str(out / "data.yaml"))
    assert sorted(dataset.classes) == ["car", "person"]
    assert len(dataset) == 30  # every keyframe of the 150-frame clip, one each 5 frames
    by_frame = {}
    for path, _, det in dataset:
        frame = int(path.rsplit("-", 1)[-1].split(".")[0])
        by_frame[frame] = det
    # Keyframe 50: both tracks confirmed; the car at x = 10 + 3 * 50.
    det = by_frame[50]
    names = [dataset.classes[c] for c in det.class_id]
    car = det.xyxy[names.index("car")]
    np.testing.assert_allclose(car, [160, 200, 280, 260], atol=1.0)
    assert len(by_frame[0]) == 2  # every keyframe with its boxes: those of tracks not confirmed yet too
    # Every box keeps its track: the car is one track on every keyframe it is on.
    if fmt == "coco":
        coco = json.loads((out / "annotations" / "instances_default.json").read_text())
        names = {c["id"]: c["name"] for c in coco["categories"]}
        car_ids = {a["attributes"]["track_id"] for a in coco["annotations"] if names[a["category_id"]] == "car"}
        assert len(car_ids - {-1}) == 1 and len(coco["annotations"]) == sum(len(d) for _, _, d in dataset)
    else:
        for labels in (out / "labels" / "train").glob("*.txt"):
            ids = (out / "track_ids" / "train" / labels.name).read_text().split()
            assert len(ids) == len(labels.read_text().splitlines()) and all(int(t) >= -1 for t in ids)


def test_export_without_saved_keyframes_says_how(tmp_path, capsys):
    run(tmp_path)
    assert main(["export", str(tmp_path), "--format", "coco", str(tmp_path / "out")]) == 1
    assert "save_keyframes" in capsys.readouterr().err


def _event(kind, text=None, label=None, track_id=None, index=0):
    from streamer.records import Event

    return Event(type=kind, source="gate", frame_index=index, pts=index / 25, wall_time=1767225600.0 + index,
                 track_id=track_id, label=label, text=text)


def test_search_finds_what_was_read_or_said_best_match_first(tmp_path, capsys):
    from streamer.outputs.store import EventStore

    store = EventStore(tmp_path / "events.db").acquire()
    for event in [_event("object_appeared", label="person", track_id=1, index=1),
                  _event("text_read", text="AB 42", label="car", track_id=2, index=2),
                  _event("caption", text="a white delivery van parked by a white wall", index=3),
                  _event("caption", text="a van", index=4)]:
        store.write(Logged.of(event), tmp_path)
    store.close()
    db = tmp_path / "events.db"
    assert [e["text"] for e in query(db, search="white van")] == ["a white delivery van parked by a white wall"]
    assert [e["text"] for e in query(db, search="VAN")] == ["a van", "a white delivery van parked by a white wall"]
    assert [(e["type"], e["track_id"]) for e in query(db, search="42")] == [("text_read", 2)]
    assert [e["track_id"] for e in query(db, search="person", type="object_appeared")] == [1]
    assert query(db, search='"white -van*') != []  # quotes, dashes and stars are text, not query syntax
    assert main(["events", str(db), "--search", "white van"]) == 0
    out = capsys.readouterr().out
    assert "snapshot" in out.splitlines()[0] and "(1 events)" in out
    assert main(["events", str(db), "--search", "!!"]) == 1
    assert capsys.readouterr().err.startswith("streamer: error: --search: no word")


def test_an_older_store_is_indexed_for_search_when_migrated(tmp_path):
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    for step in MIGRATIONS[:2]:
        conn.executescript(step)
    conn.execute("PRAGMA user_version = 3")
    conn.execute("INSERT INTO events (schema_version, type, source, frame_index, pts, wall_time, wall_epoch, label,"
                 " text, line) VALUES (1, 'text_read', 'cam', 3, 0.1, '2026-01-01T00:00:00+00:00', 1767225600,"
                 " 'container', 'MSKU 123', '{\"kept\": 1}')")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    assert query(path, search="msku") == [{"kept": 1}]  # read as it is: a query never writes
    assert path.read_bytes() == before and not path.with_name("old.db-wal").exists()
    connect(path, create=True).close()  # a run writing to it migrates it and indexes what it holds
    assert query(path, search="msku") == [{"kept": 1}]


def test_a_store_that_cannot_be_brought_up_to_date_on_a_full_disk_says_the_disk_is_full(small_disk):
    """Its migration fails for want of room; SQLite has rolled it back already, and that is not news: the full
    disk is (it said "cannot rollback - no transaction is active" before)."""
    from streamer.outputs.store import EventStore

    path = small_disk / "old.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(MIGRATIONS[0])
        conn.execute("PRAGMA user_version = 1")
    with open(small_disk / "filler", "wb", buffering=0) as filler:
        try:
            while True:
                filler.write(b"\0" * 4096)
        except OSError:  # the disk is full
            pass
    with pytest.raises(StreamerError) as error:
        EventStore(path)
    assert str(error.value).startswith(f"cannot write the event store {path}: ")
    assert "full" in str(error.value) and "rollback" not in str(error.value)
