"""A run folder stands on its own: moved, copied or read from another working directory, it exports and queries
the same; stores written before paths were relative still open."""

import json
import os
import shutil
import sqlite3
from pathlib import Path

import cv2
import pytest

from streamer.cli import main
from streamer.config import Config
from streamer.outputs.store import MIGRATIONS, connect, query
from streamer.pipeline.local import Pipeline, SourceSpec
from tests.helpers import CLIP, car_and_person, read_events
from tests.scripted import ScriptedDetector


@pytest.fixture
def cwd(tmp_path):
    """Run each step from a working directory of its own, as a user would; restored afterwards."""
    before = os.getcwd()

    def chdir(name):
        folder = tmp_path / name
        folder.mkdir(exist_ok=True)
        os.chdir(folder)
        return folder

    yield chdir
    os.chdir(before)


def run_relative(folder_name="runs/street-1"):
    """A run whose outputs were named relative to the working directory, as the CLI names run folders."""
    config = Config.model_validate({
        "sampler": {"every_n_frames": 10, "max_fps": None, "scene_threshold": None},
        "tracker": {"lost_after_s": 1.0}, "output": {"save_keyframes": True}, "events": {"snapshots": True}})
    folder = Path(folder_name)
    spec = SourceSpec(str(CLIP), folder / "events.jsonl", None, name="street", db_path=folder / "events.db")
    Pipeline(config, lambda: ScriptedDetector(car_and_person)).run_many([spec])


def export_coco(run, out):
    assert main(["export", str(run), "--format", "coco", str(out)]) == 0
    annotations = json.loads((out / "annotations" / "instances_default.json").read_text())
    images = {i["id"]: i["file_name"] for i in annotations["images"]}
    boxes = sorted((images[a["image_id"]], a["category_id"], tuple(a["bbox"])) for a in annotations["annotations"])
    pixels = {name: cv2.imread(str(out / "images" / "default" / name)).sum() for name in images.values()}
    return boxes, pixels


def test_a_moved_run_folder_exports_and_queries_the_same(cwd):
    start = cwd("start")
    run_relative()
    in_place = export_coco(start / "runs" / "street-1", start / "in-place")
    snapshots_in_place = [e["snapshot"] for e in query(start / "runs" / "street-1" / "events.db") if "snapshot" in e]
    assert snapshots_in_place

    moved = cwd("elsewhere") / "moved-run"
    shutil.move(str(start / "runs" / "street-1"), moved)
    shutil.rmtree(start)
    third = cwd("third")
    assert export_coco(moved, third / "exported") == in_place

    # The log and the store name the snapshot relative to the run folder; the query resolves it to the file.
    logged = [e["snapshot"] for e in read_events(moved / "events.jsonl") if "snapshot" in e]
    assert logged and all(not os.path.isabs(p) and p.startswith("snapshots/") for p in logged)
    found = [e["snapshot"] for e in query(moved / "events.db") if "snapshot" in e]
    assert [os.path.relpath(p, moved) for p in found] == logged
    assert all(cv2.imread(p) is not None for p in found)
    rows = sqlite3.connect(moved / "events.db").execute("SELECT DISTINCT image FROM keyframes").fetchall()
    assert rows and all(r[0].startswith("keyframes/") for r in rows)


def test_a_keyframe_that_is_really_gone_is_named_where_it_was_looked_for(cwd, capsys):
    start = cwd("start")
    run_relative()
    folder = start / "runs" / "street-1"
    victim = sorted((folder / "keyframes").iterdir())[3]
    victim.unlink()
    cwd("other")
    assert main(["export", str(folder), "--format", "yolo", "out"]) == 1
    err = capsys.readouterr().err
    assert f"keyframe image missing: {victim} (1 in all)" in err


def test_a_store_written_with_working_directory_paths_still_exports_after_a_move(cwd):
    """Stores of version 2 recorded `runs/<run>/keyframes/...` as typed, relative to where streamer started.
    They are migrated: keyframes to `keyframes/` beside the store, snapshots found from here or beside it."""
    start = cwd("start")
    run_relative()
    folder = start / "runs" / "street-1"
    expected = export_coco(folder, start / "fresh")
    db = sqlite3.connect(folder / "events.db")
    db.execute("UPDATE keyframes SET image = 'runs/street-1/' || image")
    db.execute("UPDATE keyframe_boxes SET image = 'runs/street-1/' || image")
    for row_id, line in db.execute("SELECT id, line FROM events").fetchall():
        event = json.loads(line)
        if "snapshot" in event:
            event["snapshot"] = "runs/street-1/" + event["snapshot"]
            db.execute("UPDATE events SET line = ? WHERE id = ?", (json.dumps(event), row_id))
    db.execute("PRAGMA user_version = 2")
    db.commit()
    db.close()

    moved = cwd("elsewhere") / "old-run"
    shutil.move(str(folder), moved)
    assert export_coco(moved, cwd("third") / "out") == expected
    snapshots = [e["snapshot"] for e in query(moved / "events.db") if "snapshot" in e]
    assert snapshots and all(os.path.isfile(p) for p in snapshots)
    conn = connect(moved / "events.db", create=False)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    conn.close()


def test_a_store_beside_a_log_elsewhere_points_at_the_same_snapshot(tmp_path):
    config = Config.model_validate({"sampler": {"every_n_frames": 10, "max_fps": None, "scene_threshold": None},
                                    "events": {"snapshots": True}})
    spec = SourceSpec(str(CLIP), tmp_path / "logs" / "events.jsonl", None, name="street",
                      db_path=tmp_path / "stores" / "events.db")
    Pipeline(config, lambda: ScriptedDetector(car_and_person)).run_many([spec])
    logged = [e["snapshot"] for e in read_events(spec.events_path) if "snapshot" in e]
    stored = [e["snapshot"] for e in query(spec.db_path) if "snapshot" in e]
    assert stored == [str((tmp_path / "logs" / p).resolve()) for p in logged]
    # the store keeps the log's own line, byte for byte, and where the log is
    rows = sqlite3.connect(spec.db_path).execute("SELECT line, folder FROM events ORDER BY id").fetchall()
    assert [line for line, _ in rows] == spec.events_path.read_text().splitlines()
    assert {folder for _, folder in rows} == {"../logs"}
