"""Tracks between sparse keyframes, on a generated scene with ground truth: a fast mover (two of its widths between
keyframes) and an object that stops and goes on, answered from the truth by a scripted detector. What a user
sees: one track per object, boxes on their objects on nearly every frame, a tracks file that agrees with the
events and the video, MOT files standard evaluators read, and no churn on a camera whose model is slow."""

import threading
import time
from concurrent.futures import Future
from fractions import Fraction

import av
import cv2
import numpy as np
import supervision as sv
import pytest
from trackers.eval import evaluate_mot_sequence

from streamer.cli import main
from streamer.config import Config
from streamer.model.worker import KeyframeModel
from streamer.pipeline.local import Pipeline
from streamer.pipeline.source_run import SourceRun, SourceSpec
from streamer.records import FrameDetections, Keyframe
from tests.helpers import probe_video, read_events
from tests.scripted import ScriptedDetector
from streamer.outputs.sinks import tracks_rows
from tests.helpers import Events, MemoryReader

W, H, FPS, N, EVERY = 320, 240, 25, 100, 10


def fast(i):  # 30 px wide, 6 px a frame: two widths between keyframes
    x = -10 + 6 * i
    return (x, 40, x + 30, 90) if x + 30 <= W else None


def stop_and_go(i):  # 3 px a frame, standing still from frame 30 to 60
    x = 20 + 3 * min(i, 30) + 3 * max(0, i - 60)
    return (x, 140, x + 50, 190)


TRUTH = {1: ("person", fast), 2: ("car", stop_and_go)}


def truth_at(i):
    return [(gid, label, box) for gid, (label, path) in TRUTH.items() if (box := path(i)) is not None]


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """The scene as an H.264 file: textured objects over a textured background (optical flow needs texture)."""
    rng = np.random.default_rng(3)
    background = cv2.GaussianBlur(rng.integers(0, 255, (H, W, 3), dtype=np.uint8), (5, 5), 0) // 2 + 60
    textures = {gid: cv2.GaussianBlur(rng.integers(0, 255, (60, 60, 3), dtype=np.uint8), (3, 3), 0) for gid in TRUTH}
    path = tmp_path_factory.mktemp("scene") / "scene.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(FPS))
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.options = {"crf": "18"}
        for i in range(N):
            image = background.copy()
            for gid, _, (x1, y1, x2, y2) in truth_at(i):
                x1c, x2c = max(0, x1), min(W, x2)
                if x2c > x1c:
                    image[y1:y2, x1c:x2c] = textures[gid][: y2 - y1, x1c - x1 : x2c - x1]
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def detector():
    """The truth on every keyframe, with the boxes of objects at the edge clipped as a detector sees them."""
    def script(i):
        return [(label, (max(0, x1), y1, min(W, x2), y2), None) for _, label, (x1, y1, x2, y2) in truth_at(i)
                if min(W, x2) - max(0, x1) >= 10]
    return ScriptedDetector(script)


def config(**tracker):
    return Config.model_validate({"sampler": {"every_n_frames": EVERY, "max_fps": None, "scene_threshold": None},
                                  "tracker": tracker})


@pytest.fixture(scope="module")
def run(scene, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    Pipeline(config(), detector).run(str(scene), out / "out.mp4", out / "events.jsonl",
                                     tracks_path=out / "tracks.jsonl")
    return out


def tracks_of(path):
    return [row for _, row in tracks_rows(path)]


def covered(rows, gid):
    """Share of the object's frames (from its first keyframe on) with a box on it (IoU >= 0.5), and the ids."""
    first = min(i for i in range(0, N, EVERY) if any(g == gid for g, _, _ in truth_at(i)))
    frames = [i for i in range(first, N) if any(g == gid for g, _, _ in truth_at(i))]
    by_frame = {}
    for r in rows:
        by_frame.setdefault(r["frame_index"], []).append(r)
    hits, ids = 0, set()
    for i in frames:
        box = np.array([[max(0, v) if k != 2 else min(W, v) for k, v in enumerate(TRUTH[gid][1](i))]], float)
        for r in by_frame.get(i, []):
            if sv.box_iou_batch(box, np.array([r["bbox"]]))[0, 0] >= 0.5:
                hits += 1
                ids.add(r["track_id"])
                break
    return hits / len(frames), ids


def test_a_fast_mover_and_a_stop_and_go_object_get_one_track_each(run):
    events = read_events(run / "events.jsonl")
    appeared = [e for e in events if e["type"] == "object_appeared"]
    assert sorted(e["label"] for e in appeared) == ["car", "person"]
    rows = tracks_of(run / "tracks.jsonl")
    for gid in TRUTH:  # a box on nearly every frame, one id (shown from its confirmation on)
        share, ids = covered(rows, gid)
        assert len(ids - {-1}) == 1 and share >= 0.9, (gid, share, ids)
    first_id = {}
    for r in rows:
        if r["track_id"] >= 0:
            first_id.setdefault(r["track_id"], r["frame_index"])
    assert first_id == {e["track_id"]: e["frame_index"] for e in appeared}  # the id shows where it appeared


def test_boxes_between_keyframes_follow_the_object_and_stop_when_it_stops(run):
    rows = {(r["frame_index"], r["label"]): r for r in tracks_of(run / "tracks.jsonl") if r["track_id"] >= 0}
    for i in range(31, 60):  # standing: no box glides on
        assert rows[(i, "car")]["bbox"][0] == pytest.approx(stop_and_go(i)[0], abs=3)
    for i in (13, 17, 25):  # between keyframes, mid-flight
        assert rows[(i, "person")]["bbox"][0] == pytest.approx(fast(i)[0], abs=4)
        assert rows[(i, "person")]["kind"] == "interpolated"


def test_the_tracks_file_agrees_with_the_events_and_the_video(run, scene):
    rows = tracks_of(run / "tracks.jsonl")
    events = read_events(run / "events.jsonl")
    video, source = probe_video(run / "out.mp4")["frames"], probe_video(scene)["frames"]
    assert len(video) == N and max(r["frame_index"] for r in rows) < N
    for r in rows:  # every box of the file is drawn where the file says: its top edge differs from the input
        if r["frame_index"] in (15, 45, 77) and r["track_id"] >= 0:
            x1, y1, x2, _ = (int(round(v)) for v in r["bbox"])
            edge = np.s_[max(0, y1), max(0, x1) + 2 : min(W, x2) - 2]
            drawn = np.abs(video[r["frame_index"]][edge].astype(int) - source[r["frame_index"]][edge]).mean()
            assert drawn > 40, (r, drawn)
    labels = {e["track_id"]: e["label"] for e in events if e["type"] == "object_appeared"}
    assert {r["track_id"]: r["label"] for r in rows if r["track_id"] >= 0} == labels
    detected = {(r["frame_index"], r["track_id"]): r for r in rows if r["kind"] == "detected"}
    for event in events:
        if event["type"] == "object_appeared":
            row = detected[(event["frame_index"], event["track_id"])]
            assert row["bbox"] == pytest.approx(event["bbox"], abs=0.01)
    assert {r["kind"] for r in rows} <= {"detected", "interpolated", "predicted"}


def test_mot_export_reads_back_with_trackers_eval(run, tmp_path, capsys):
    assert main(["export", str(run), "--format", "mot", str(tmp_path / "mot")]) == 0
    [results] = list((tmp_path / "mot").glob("*/gt/gt.txt"))  # CVAT's MOT 1.1 layout, a sequence per source
    labels = (results.parent / "labels.txt").read_text().split()
    assert {int(line.split(",")[7]) for line in results.read_text().splitlines()} == set(range(1, len(labels) + 1))
    itself = evaluate_mot_sequence(results, results, metrics=["CLEAR", "Identity"])  # no box degenerate
    assert itself.CLEAR.MOTA == 1.0 and itself.Identity.IDF1 == 1.0
    gt = tmp_path / "gt.txt"
    gt.write_text("".join(f"{i + 1},{gid},{max(0, x1)},{y1},{min(W, x2) - max(0, x1)},{y2 - y1},1,1,1\n"
                          for i in range(N) for gid, _, (x1, y1, x2, y2) in truth_at(i) if min(W, x2) > max(0, x1)))
    result = evaluate_mot_sequence(gt, results, metrics=["CLEAR", "HOTA", "Identity"])
    assert result.HOTA.HOTA > 0.75 and result.CLEAR.IDSW == 0


def test_min_hits_1_confirms_a_track_on_its_first_keyframe(scene, tmp_path):
    Pipeline(config(min_hits=1), detector).run(str(scene), None, tmp_path / "e.jsonl")
    appeared = [e for e in read_events(tmp_path / "e.jsonl") if e["type"] == "object_appeared"]
    assert sorted(e["frame_index"] for e in appeared) == [0, 0]


class SlowModel(KeyframeModel):
    """A camera's model that takes `delay_s` per keyframe, seeing a car standing still."""

    def __init__(self, delay_s):
        self.delay_s = delay_s
        self.answered = 0

    def submit(self, keyframe: Keyframe) -> Future:
        future: Future = Future()

        def answer():
            time.sleep(self.delay_s)
            det = ScriptedDetector(lambda i: [("car", (10, 10, 40, 30), None)]).detect([keyframe])[0].detections
            self.answered += 1
            future.set_result(FrameDetections(keyframe, det))

        threading.Thread(target=answer, daemon=True).start()
        return future


def test_a_still_object_on_a_camera_with_a_slow_model_appears_once_and_never_leaves(tmp_path):
    model, events = SlowModel(delay_s=0.5), Events()
    cfg = Config.model_validate({"sampler": {"every_n_frames": 2, "max_fps": None, "scene_threshold": None},
                                 "tracker": {"lost_after_s": 0.2}})
    run = SourceRun(SourceSpec("mem", tmp_path / "e.jsonl"), cfg, MemoryReader(live=True, n=100, pace_s=0.02),
                    model, shared=[events])
    stats = run.run(threading.Event())
    assert stats.error is None and model.answered >= 3  # each answer 12 times lost_after_s late
    kinds = [(e.type, e.extra.get("reason")) for e in events.events]
    assert kinds == [("object_appeared", None), ("object_left", "stream_ended")]


def test_a_file_shows_an_unsure_tracks_id_from_its_first_keyframe_a_camera_from_its_confirmation(scene, tmp_path):
    """A detection the model is unsure of waits for a second keyframe before its track is confirmed; a file's
    frames wait for that keyframe anyway, so they get the id the track turned out to have."""
    def unsure(i):
        return [(label, box, None, 0.5) for label, box, _ in detector().script(i)]

    Pipeline(config(), lambda: ScriptedDetector(unsure)).run(str(scene), None, tmp_path / "e.jsonl",
                                                             tracks_path=tmp_path / "t.jsonl")
    appeared = {e["label"]: e for e in read_events(tmp_path / "e.jsonl") if e["type"] == "object_appeared"}
    assert appeared["car"]["frame_index"] == EVERY  # confirmed on its second keyframe
    rows = [r for r in tracks_of(tmp_path / "t.jsonl") if r["label"] == "car"]
    assert {r["track_id"] for r in rows} == {appeared["car"]["track_id"]}  # no frame without its id
    assert min(r["frame_index"] for r in rows) == 0
    share, ids = covered(tracks_of(tmp_path / "t.jsonl"), 2)
    assert share >= 0.9 and ids == {appeared["car"]["track_id"]}


def _still(colour, x):
    image = np.full((H, W, 3), 90, np.uint8)
    image[100:140, x : x + 40] = colour
    return image


def test_a_track_lost_for_keyframes_is_found_again_by_its_look_and_another_object_is_not():
    """A red box moving right stops behind something (two keyframes without it) and shows again where it
    stopped, far from where its velocity says it is: the same look takes its id back; a blue box there gets a
    new one."""
    from streamer.pipeline.tracker import Tracker
    from streamer.records import Frame

    def final(colour):
        tracker = Tracker(config(lost_after_s=10.0).tracker, keyframe_rate=1.0)
        xs = [20, 40, 60, None, None, 70]
        for k, x in enumerate(xs):
            shown = colour if k == 5 else (0, 0, 255)
            image = _still(shown, x) if x is not None else np.full((H, W, 3), 90, np.uint8)
            n = int(x is not None)
            found = sv.Detections(xyxy=np.array([[x or 0, 100, (x or 0) + 40, 140]] * n, float).reshape(-1, 4),
                                  confidence=np.full(n, 0.9), data={"class_name": np.array(["car"] * n, dtype=object)})
            tracks = tracker.update(Frame("cam", k, float(k), 0.0, image), found, {})
        seen = tracks.detections
        return {int(t) for t, kind in zip(seen.tracker_id, seen.data["kind"]) if kind == "detected"}

    assert final((0, 0, 255)) == {0}  # the red car, its id kept
    assert final((255, 0, 0)) == {1}  # a blue car where the red one stopped: someone else
