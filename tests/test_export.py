"""Exports as the annotators' tools read them, and their corrected exports read back.

One run of the bundled clip (a car driving right, a person standing, a truck half out of the picture) kept its
keyframes, its tracks of every frame and its video's index; every format is exported from it and read with the
real readers: pycocotools, supervision, Datumaro (CVAT's dataset layer, in a venv of its own) and Ultralytics'
dataset checker and loader (`make test` installs both, see the Makefile).
"""

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

from pathlib import Path

import numpy as np
import pytest

from streamer.annotation.dataset import load_dataset
from streamer.cli import main
from streamer.config import Config
from streamer.outputs.sinks import tracks_rows
from streamer.pipeline.local import Pipeline, SourceSpec
from tests.helpers import CLIP, ROOT, car_and_person, probe_video
from tests.scripted import ScriptedDetector

W, H = 640, 360
DATUMARO = ROOT / ".cache" / "datumaro-venv" / "bin" / "python"
ULTRALYTICS = ROOT / ".cache" / "ultralytics-lib"


def scene(index):
    """The car, the person, and a truck parked across the right edge (its box reaches past the picture)."""
    return car_and_person(index) + [("truck", (600, 10, 700, 60), None)]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("run")
    config = Config.model_validate({"sampler": {"every_n_frames": 5, "max_fps": None, "scene_threshold": None},
                                    "tracker": {"lost_after_s": 1.0}, "output": {"save_keyframes": True}})
    spec = SourceSpec(str(CLIP), folder / "events.jsonl", None, name="street", db_path=folder / "events.db",
                      tracks_path=folder / "tracks.jsonl")
    Pipeline(config, lambda: ScriptedDetector(scene)).run_many([spec])
    return folder


def export(run, fmt, out, *extra):
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["export", str(run), "--format", fmt, *map(str, extra), str(out)]) == 0
    return out


def tracked(run):
    """{(frame, track id): (box, detected)} of the confirmed tracks in the run's tracks file."""
    return {(r["frame_index"], r["track_id"]): (r["bbox"], r["kind"] == "detected")
            for _, r in tracks_rows(run / "tracks.jsonl") if r["track_id"] >= 0}


@pytest.fixture(scope="module")
def coco(run, tmp_path_factory):
    return export(run, "coco", tmp_path_factory.mktemp("x") / "coco")


def test_coco_is_in_cvats_layout_and_pycocotools_scores_it_against_itself_at_ap_1(coco):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    annotations = coco / "annotations" / "instances_default.json"
    data = json.loads(annotations.read_text())
    assert len(data["images"]) == 30 and all((coco / "images" / "default" / i["file_name"]).is_file()
                                             for i in data["images"])
    for a in data["annotations"]:  # the truck is clipped to the picture, nothing degenerate is left
        x, y, w, h = a["bbox"]
        assert w > 0 and h > 0 and x >= 0 and x + w <= W + 1e-3 and y + h <= H + 1e-3
    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO(str(annotations))
        found = truth.loadRes([{**a, "score": 1.0} for a in data["annotations"]])
        scored = COCOeval(truth, found, "bbox")
        scored.evaluate(), scored.accumulate(), scored.summarize()
    assert scored.stats[0] == pytest.approx(1.0)


def boxes_by_image(dataset):
    return {s.path.name: sorted((dataset.classes[c], *np.round(b, 1)) for b, c in zip(s.boxes.xyxy, s.boxes.class_id))
            for s in dataset.samples}


def test_coco_and_yolo_read_back_to_the_same_boxes(run, coco, tmp_path):
    yolo = export(run, "yolo", tmp_path / "yolo")
    data_yaml = (yolo / "data.yaml").read_text()
    assert "train: images/train" in data_yaml and "val: images/train" in data_yaml  # Ultralytics' keys
    for image in (yolo / "images" / "train").iterdir():  # Ultralytics finds a label by its image's path
        label = yolo / "labels" / "train" / f"{image.stem}.txt"
        assert label.is_file() and all(int(line.split()[0]) < 3 for line in label.read_text().splitlines())
    from_coco, from_yolo = load_dataset(coco), load_dataset(yolo)
    assert from_coco.classes == from_yolo.classes == ["car", "person", "truck"]
    assert boxes_by_image(from_coco) == boxes_by_image(from_yolo)
    [frame_50] = [boxes for name, boxes in boxes_by_image(from_coco).items() if name.endswith("-0000050.jpg")]
    assert frame_50 == [("car", 160.0, 200.0, 280.0, 260.0), ("person", 400.0, 150.0, 440.0, 280.0),
                        ("truck", 600.0, 10.0, 640.0, 60.0)]


def read_with(python, script, argument, **env):
    """JSON a real tool's reader (tests/readers/) prints about our export."""
    if not Path(python).exists():
        pytest.fail(f"{python} is missing: `make test` installs the readers the export tests use")
    result = subprocess.run([str(python), str(ROOT / "tests" / "readers" / script), argument], capture_output=True,
                            text=True, timeout=300, env={**os.environ, **env})
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.splitlines()[-1])  # the tools print their own chatter before


def test_datumaro_recognises_every_export_and_imports_the_same_boxes(run, coco, tmp_path):
    folders = {"coco": coco, "yolo": export(run, "yolo", tmp_path / "yolo"),
               "mot": export(run, "mot", tmp_path / "mot") / "street", "cvat": export(run, "cvat", tmp_path / "cvat")}
    read = read_with(DATUMARO, "datumaro_read.py", json.dumps({k: str(v) for k, v in folders.items()}))
    assert {fmt: read[fmt]["detected"] for fmt in folders} == {
        "coco": ["coco_instances"], "yolo": ["yolo"], "mot": ["mot_seq"], "cvat": ["cvat"]}
    ours = sorted((name.rsplit(".", 1)[0], label, x1, y1, x2 - x1, y2 - y1)
                  for name, boxes in boxes_by_image(load_dataset(coco)).items() for label, x1, y1, x2, y2 in boxes)
    for fmt in ("coco", "yolo"):
        assert sorted((item, label, *np.round(box, 1)) for item, label, box, _ in read[fmt]["boxes"]) == ours
    truth = tracked(run)
    for fmt, first in (("mot", 1), ("cvat", 0)):  # MOT counts frames and ids from 1, CVAT from 0
        seen = {(int(item.rsplit("_", 1)[-1]) - first, track - first): box for item, _, box, track in read[fmt]["boxes"]}
        assert seen.keys() == truth.keys()
        for key, (x, y, w, h) in seen.items():
            assert [x, y, x + w, y + h] == pytest.approx(truth[key][0], abs=0.01)


def test_ultralytics_checks_the_yolo_export_and_trains_on_the_same_boxes(run, coco, tmp_path):
    yolo = export(run, "yolo", tmp_path / "yolo")
    read = read_with(sys.executable, "ultralytics_read.py", str(yolo / "data.yaml"), PYTHONPATH=str(ULTRALYTICS),
                     YOLO_OFFLINE="1", YOLO_CONFIG_DIR=str(tmp_path / "ultralytics"))
    assert read["names"] == {"0": "car", "1": "person", "2": "truck"} and Path(read["val"]).is_dir()
    ours = boxes_by_image(load_dataset(coco))
    assert len(read["labels"]) == len(ours) == 30
    for image, classes, boxes in read["labels"]:
        theirs = sorted((read["names"][str(int(c))], *np.round([(x - w / 2) * W, (y - h / 2) * H, (x + w / 2) * W,
                                                               (y + h / 2) * H], 1)) for c, (x, y, w, h) in zip(classes, boxes))
        assert theirs == ours[Path(image).name]


def test_mot_is_cvats_mot_1_1_layout(run, tmp_path):
    mot = export(run, "mot", tmp_path / "mot")
    assert (mot / "street" / "gt" / "labels.txt").read_text().split() == ["car", "person", "truck"]
    rows = [line.split(",") for line in (mot / "street" / "gt" / "gt.txt").read_text().splitlines()]
    assert {(int(r[0]) - 1, int(r[1]) - 1) for r in rows} == set(tracked(run))  # frames and ids from 1
    assert all(float(r[4]) > 0 and float(r[5]) > 0 and r[6] == "1" for r in rows)


def test_mot_results_are_what_motchallenge_scorers_take_and_score_perfectly_against_the_same_tracks(run, tmp_path):
    """`results/<sequence>.txt` in the tracker layout (`frame,id,x,y,w,h,conf,-1,-1,-1`), read by the `trackers`
    package's TrackEval-parity scorer against a MOT17 ground truth of the same tracks (class 1: what MOT17's
    layout scores): HOTA 1, no switch. The gt's own class column (the label's number, CVAT's layout) would be
    dropped by such a scorer: that is why the results have none."""
    from trackers.eval import evaluate_mot_sequence

    mot = export(run, "mot", tmp_path / "mot")
    results = (mot / "results" / "street.txt").read_text().splitlines()
    rows = [line.split(",") for line in results]
    assert all(len(r) == 10 and r[7:] == ["-1", "-1", "-1"] and 0 <= float(r[6]) <= 1 for r in rows)
    gt = [line.split(",") for line in (mot / "street" / "gt" / "gt.txt").read_text().splitlines()]
    assert [r[:6] for r in rows] == [g[:6] for g in gt]
    mot17 = tmp_path / "mot17-gt.txt"
    mot17.write_text("".join(",".join([*g[:6], "1", "1", "1"]) + "\n" for g in gt))
    scores = evaluate_mot_sequence(str(mot17), str(mot / "results" / "street.txt"), metrics=["HOTA", "CLEAR"])
    assert scores.HOTA.HOTA == pytest.approx(1.0) and scores.CLEAR.IDSW == 0


def test_cvat_video_has_a_track_per_track_id_with_keyframes_where_the_model_looked(run, tmp_path):
    cvat = export(run, "cvat", tmp_path / "cvat")
    [xml] = list(cvat.glob("*.xml"))
    root = ET.parse(xml).getroot()
    assert root.findtext("meta/task/size") == "150" and root.findtext("meta/task/original_size/width") == "640"
    video = cvat / root.findtext("meta/task/source")
    assert video.is_file() and probe_video(video)["count"] == 150
    truth = tracked(run)
    tracks = root.findall("track")
    assert {int(t.get("id")) for t in tracks} == {track for _, track in truth}
    for track in tracks:
        boxes = track.findall("box")
        inside = [b for b in boxes if b.get("outside") == "0"]
        for box in inside:
            frame = int(box.get("frame"))
            bbox, detected = truth[(frame, int(track.get("id")))]
            assert [float(box.get(k)) for k in ("xtl", "ytl", "xbr", "ybr")] == pytest.approx(bbox, abs=0.01)
            if detected:
                assert box.get("keyframe") == "1"
        last = max(int(b.get("frame")) for b in inside)
        if last < 149:  # a track that ends says so
            assert boxes[-1].get("outside") == "1" and int(boxes[-1].get("frame")) == last + 1


def test_label_studio_video_tasks_and_their_labelling_config(run, tmp_path):
    out = export(run, "label-studio", tmp_path / "ls")
    [task] = json.loads((out / "tasks.json").read_text())
    assert task["data"]["video"] == f"/data/local-files/?d=ls/videos/{next((out / 'videos').iterdir()).name}"
    config = ET.fromstring((out / "label_config.xml").read_text())
    assert {e.get("value") for e in config.iter("Label")} == {"car", "person", "truck"}
    [prediction] = task["predictions"]
    truth = tracked(run)
    assert len(prediction["result"]) == len({track for _, track in truth})
    for result in prediction["result"]:
        assert result["type"] == "videorectangle" and result["from_name"] == "box" and result["to_name"] == "video"
        sequence = result["value"]["sequence"]
        assert all(0 <= p["x"] <= 100 and 0 < p["width"] <= 100 and p["frame"] >= 1 for p in sequence)
        assert sequence[-1]["enabled"] is False or sequence[-1]["frame"] == 150


def label_studio_export(out, change=lambda result: None):
    """What Label Studio's JSON export gives after someone accepted (and maybe changed) the predictions."""
    tasks = json.loads((out / "tasks.json").read_text())
    for number, task in enumerate(tasks, 1):
        result = json.loads(json.dumps(task.pop("predictions")[0]["result"]))
        change(result)
        task["id"] = number
        task["annotations"] = [{"id": number, "result": result, "was_cancelled": False,
                                "created_at": "2026-12-01T10:00:00Z"}]
    (out / "project-1-at-2026-12-01.json").write_text(json.dumps(tasks))
    (out / "tasks.json").unlink()
    return out / "project-1-at-2026-12-01.json"


def test_corrected_video_tracks_come_back_with_their_frames(run, tmp_path):
    cvat = load_dataset(export(run, "cvat", tmp_path / "cvat"))
    truth = tracked(run)
    detected = sorted({frame for (frame, _), (_, seen) in truth.items() if seen})
    frames = probe_video(CLIP)["frames"]
    assert len(cvat.samples) == len(detected)
    for sample, frame in zip(cvat.samples, detected):
        assert np.array_equal(sample.image, frames[frame])  # the video's own frame, decoded
        expected = sorted(tuple(np.round(bbox, 1)) for (f, _), (bbox, _) in truth.items() if f == frame)
        assert sorted(tuple(np.round(b, 1)) for b in sample.boxes.xyxy) == expected

    def move_the_car(result):
        for region in result:
            if region["value"]["labels"] == ["car"]:
                for point in region["value"]["sequence"]:
                    point["x"] += 5.0  # 32 px right
    corrected = load_dataset(label_studio_export(export(run, "label-studio", tmp_path / "ls"), move_the_car))
    assert corrected.classes == cvat.classes
    by_frame = {s.path.name: s for s in corrected.samples}
    for sample in cvat.samples:
        again = by_frame[sample.path.name]
        assert np.array_equal(again.image, sample.image)
        shift = np.where((np.array(cvat.classes)[again.boxes.class_id] == "car")[:, None], [32, 0, 32, 0], 0)
        assert sorted(map(tuple, np.round(again.boxes.xyxy - shift, 1))) == sorted(
            map(tuple, np.round(sample.boxes.xyxy, 1)))


def test_the_loop_run_export_correct_evaluate_works_on_cvat_tracks(run, tiny_od, tmp_path, capsys):
    out = export(run, "cvat", tmp_path / "cvat")
    capsys.readouterr()
    assert main(["evaluate", str(out), "--model", str(tiny_od), "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["images"] == len({f for (f, _), (_, seen) in tracked(run).items() if seen})


def cut_short(folder):
    xml = next(folder.glob("*.xml"))
    xml.write_text(xml.read_text()[:2000])


def past_the_video(folder):
    xml = next(folder.glob("*.xml"))
    xml.write_text(xml.read_text().replace('frame="5" keyframe="1"', 'frame="900" keyframe="1"', 1))


@pytest.mark.parametrize("fmt, change, says", [
    ("cvat", cut_short, "not CVAT XML"),
    ("cvat", past_the_video, "frame 900 is not in"),
    ("label-studio", lambda out: label_studio_export(out, lambda r: r.append({"type": "polygonlabels", "value": {}})),
     "result type 'polygonlabels' is not a box"),
])
def test_a_malformed_correction_is_one_line_naming_the_file(run, tmp_path, capsys, fmt, change, says):
    out = export(run, fmt, tmp_path / fmt)
    change(out)
    capsys.readouterr()
    assert main(["evaluate", str(out), "--model", str(tmp_path / "no-model")]) == 1
    err = capsys.readouterr().err
    assert says in err and str(out) in err and len(err.strip().splitlines()) == 1


def test_an_export_into_a_folder_with_something_in_it_is_refused(run, tmp_path, capsys):
    out = tmp_path / "dataset"
    shutil.copytree(export(run, "coco", tmp_path / "first"), out)
    before = sorted(p.stat().st_mtime_ns for p in out.rglob("*"))
    assert main(["export", str(run), "--format", "yolo", str(out)]) == 1
    assert "not empty" in capsys.readouterr().err and sorted(p.stat().st_mtime_ns for p in out.rglob("*")) == before


def test_an_export_that_does_not_fit_on_the_disk_leaves_nothing_behind(run, small_disk, capsys):
    out = small_disk / "dataset"
    assert main(["export", str(run), "--format", "coco", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"streamer: error: cannot write the export {out}: ") and err.count("\n") == 1
    assert list(small_disk.iterdir()) == []  # no half dataset to be taken for a whole one, nothing to block a retry


def test_an_export_killed_midway_is_run_again_into_the_same_folder(run, tmp_path):
    """A killed export (SIGKILL, a power cut) leaves its half-built folder beside the target; the same command
    run again gets the dataset, and the leftover is gone. One being built by a live process is left alone."""
    out = tmp_path / "dataset"
    dead = tmp_path / ".dataset.4194305.partial"  # above any pid_max: that process is gone
    (dead / "images").mkdir(parents=True)
    (dead / "images" / "half.jpg").write_bytes(b"\xff\xd8")
    alive = tmp_path / f".dataset.{os.getppid()}.partial"
    alive.mkdir()
    assert main(["export", str(run), "--format", "coco", str(out)]) == 0
    assert (out / "annotations" / "instances_default.json").exists()
    assert not dead.exists() and alive.exists()


HOSTILE = ['car <b> & "co"', "it's, a truck", "two\nlines"]


def test_labels_holding_markup_quotes_commas_and_newlines_read_back_the_same_in_every_tool(tmp_path):
    """Labels come from prompts and the model as any text: `< & " ' ,` and a newline. COCO, YOLO, MOT and CVAT
    exports read by Datumaro give every box its label back (a newline, which no one-label-a-line file can hold,
    as a space), and nothing shifts: the same boxes under the same labels."""
    def scripted(index):
        return [(HOSTILE[0], (40, 40, 120, 120), None), (HOSTILE[1], (300, 50, 420, 150), None),
                (HOSTILE[2], (200, 200, 280, 300), None)]

    run = tmp_path / "run"
    config = Config.model_validate({"sampler": {"every_n_frames": 10, "max_fps": None, "scene_threshold": None},
                                    "output": {"save_keyframes": True}})
    spec = SourceSpec(str(CLIP), run / "events.jsonl", None, name="street", db_path=run / "events.db",
                      tracks_path=run / "tracks.jsonl")
    Pipeline(config, lambda: ScriptedDetector(scripted)).run_many([spec])
    folders = {fmt: export(run, fmt, tmp_path / fmt) for fmt in ("coco", "yolo", "mot", "cvat")}
    folders["mot"] = folders["mot"] / "street"
    read = read_with(DATUMARO, "datumaro_read.py", json.dumps({k: str(v) for k, v in folders.items()}))
    expected = {" ".join(label.split()) if "\n" in label else label for label in HOSTILE}
    for fmt, got in read.items():
        labels = {label for _, label, _, _ in got["boxes"]}
        assert labels == expected, (fmt, labels)
        by_label = {}
        for _, label, box, _ in got["boxes"]:
            by_label.setdefault(label, set()).add(tuple(round(v) for v in box[:2]))
        assert by_label[HOSTILE[0]] == {(40, 40)} and by_label[HOSTILE[1]] == {(300, 50)}, fmt
