"""`streamer find`: a phrase grounded after the fact on what a store kept. The model here is a scripted one that
grounds the phrase on the car from frame 50 on (the store's run saw a car and a person from frame 0)."""

import json
import shutil

import pytest

from streamer.cli import main
from streamer.config import Config
from streamer.errors import StreamerError
from streamer.outputs.store import EventStore
from streamer.pipeline.local import Pipeline, SourceSpec
from streamer.recording.find import Candidate, find, prerank
from streamer.recording.recorder import Segment
from tests.helpers import CLIP, car_and_person, moving_car
from tests.scripted import ScriptedDetector


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("run")
    config = Config.model_validate({"sampler": {"every_n_frames": 5, "max_fps": None, "scene_threshold": None},
                                    "tracker": {"lost_after_s": 1.0}, "output": {"save_keyframes": True}})
    spec = SourceSpec(str(CLIP), folder / "events.jsonl", None, name="street", db_path=folder / "events.db")
    Pipeline(config, lambda: ScriptedDetector(car_and_person)).run_many([spec])
    return folder / "events.db"


class Grounding:
    """A model factory that counts how often the model was loaded and which frames it was asked."""

    def __init__(self, script):
        self.loaded, self.model = 0, ScriptedDetector(script)

    def __call__(self):
        self.loaded += 1
        return self.model


def the_car_from_50(index):
    return [("car", box, None) for _, box, _ in moving_car(index)] if index >= 50 else []


def fresh(store, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(store.parent, copy)
    return copy / "events.db"


def test_a_phrase_is_found_on_the_keyframes_it_is_on_with_its_boxes(store, tmp_path):
    store = fresh(store, tmp_path)
    model = Grounding(the_car_from_50)
    hits = find(store, "white car", model, "scripted")
    assert sorted(h.frame_index for h in hits) == list(range(50, 150, 5))
    for hit in hits:
        x = 10 + 3 * hit.frame_index
        assert hit.box == [x, 200, x + 120, 260] and hit.source == "street" and hit.image.endswith(".jpg")
        assert hit.wall_time is not None and hit.clip["source"] == "street"
    assert model.loaded == 1 and sum(len(c) for c in model.model.calls) == 30  # every keyframe, once


def test_asking_again_is_answered_from_the_cache_without_the_model(store, tmp_path):
    store = fresh(store, tmp_path)
    first = find(store, "white car", Grounding(the_car_from_50), "scripted")
    again = Grounding(the_car_from_50)
    assert find(store, "white  car", again, "scripted") == first and again.loaded == 0
    other_model = Grounding(the_car_from_50)
    find(store, "white car", other_model, "another model")  # answers are the model's own
    assert other_model.loaded == 1


def test_a_phrase_nothing_matches_finds_nothing(store, tmp_path):
    assert find(fresh(store, tmp_path), "giraffe", Grounding(lambda i: []), "scripted") == []


def test_frames_near_an_event_that_names_the_phrase_are_asked_first(tmp_path):
    from streamer.records import Event, Logged

    db = EventStore(tmp_path / "e.db").acquire()
    read = Event("text_read", "gate", 9000, 360.0, 1767225600.0 + 3600, track_id=4, label="van", text="AB 42 LTD")
    db.write(Logged.of(read), tmp_path)
    db.close()
    frames = [Candidate(f"k:{i}", "gate", i, i, 1767225600.0 + 60 * i) for i in range(120)]  # one a minute
    ordered = prerank(tmp_path / "e.db", "plate AB 42", frames)
    assert [c.frame_index for c in ordered[:1]] == [60] and ordered[1].frame_index == 0  # the rest oldest first


def test_recorded_segments_are_searched_too(store, tmp_path):
    store = fresh(store, tmp_path)
    shutil.copy(CLIP, store.parent / "segment.mp4")
    db = EventStore(store).acquire()
    db.add_segment(Segment("gate", "segment.mp4", 1767225600.0, 1767225606.0, 0.0, 6.0, 0, 149, 1, run="r"))
    db.close()
    hits = find(store, "car", Grounding(lambda i: [("car", (10, 10, 50, 50), None)]), "scripted", source="gate")
    assert [h.pts for h in hits] == [0.0, 2.0, 4.0]  # the segment's key frames, one per 2 s
    assert all(h.footage.endswith("segment.mp4") and h.image is None for h in hits)


def test_the_command_prints_the_best_hits(store, tiny_od, tmp_path, capsys):
    store = fresh(store, tmp_path)
    assert main(["find", str(store.parent), "car", "--model", str(tiny_od), "--limit", "3", "--format", "json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert len(hits) == 3 and all(h["source"] == "street" and len(h["box"]) == 4 for h in hits)


def test_a_phrase_longer_than_the_model_takes_is_one_line(store, tiny_od, tmp_path, capsys):
    # under 200 characters, but each takes tokens: the tiny model's encoder has 256 positions
    assert main(["find", str(fresh(store, tmp_path)), "車" * 190, "--model", str(tiny_od)]) == 1
    err = capsys.readouterr().err
    assert "give it fewer words" in err and err.count("\n") == 1


@pytest.mark.parametrize("args, says", [
    (["  "], "the phrase is empty"),
    (["car", "--from", "2001-01-01T00:00:00", "--to", "2001-01-02T00:00:00"], "nothing was kept in that range"),
    (["car", "--limit", "0"], "--limit"),
    (["car OR NEAR(\"x\" *) " * 500], "at most 200"),  # not an IndexError deep in the model
])
def test_bad_input_is_one_line(store, tmp_path, capsys, args, says):
    assert main(["find", str(store), *args, "--model", str(tmp_path / "no-model")]) == 1
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1


def test_a_store_that_kept_nothing_says_how_to_keep(tmp_path, capsys):
    EventStore(tmp_path / "e.db").close()
    with pytest.raises(StreamerError, match="save_keyframes: true, or record a camera"):
        find(tmp_path / "e.db", "car", Grounding(lambda i: []), "scripted")


class Watching:
    """The scripted car and person on detection keyframes; on a watch's grounding, the car sure and the person
    not (0.9 and 0.1)."""

    input_size = None

    def detect(self, keyframes):
        import numpy as np
        import supervision as sv

        from streamer.records import FrameDetections

        plain = ScriptedDetector(car_and_person)
        out = []
        for k in keyframes:
            if k.task != "<CAPTION_TO_PHRASE_GROUNDING>":
                out += plain.detect([k])
                continue
            boxes = [box for _, box, _ in car_and_person(k.frame.index)]
            out.append(FrameDetections(k, sv.Detections(
                xyxy=np.array(boxes, dtype=np.float32), confidence=np.array([0.9, 0.1], dtype=np.float32),
                data={"class_name": np.array([k.prompt] * 2, dtype=object)})))
        return out


def test_a_watch_gives_one_phrase_seen_per_track_it_confirms(tmp_path, event_validator):
    from tests.helpers import read_events

    config = Config.model_validate({"sampler": {"every_n_frames": 5, "max_fps": None, "scene_threshold": None},
                                    "tracker": {"lost_after_s": 1.0}, "events": {"snapshots": True},
                                    "watch": [{"phrase": " white   car ", "every_n_keyframes": 2}]})
    spec = SourceSpec(str(CLIP), tmp_path / "events.jsonl", None, name="street")
    Pipeline(config, Watching).run_many([spec])
    events = read_events(tmp_path / "events.jsonl")
    seen = [e for e in events if e["type"] == "phrase_seen"]
    assert len(seen) == 1 and seen[0]["phrase"] == seen[0]["label"] == "white car"  # the car, once; not the person
    assert seen[0]["confidence"] == pytest.approx(0.9) and (tmp_path / seen[0]["snapshot"]).is_file()
    x1 = seen[0]["bbox"][0]
    assert x1 == pytest.approx(10 + 3 * seen[0]["frame_index"], abs=1)
    event_validator.validate(seen[0])
    # The detection task's events are as they were; the watch makes no others.
    assert sorted(e["label"] for e in events if e["type"] == "object_appeared") == ["car", "person"]
    assert {e["type"] for e in events} == {"object_appeared", "object_left", "phrase_seen"}
    assert len([e for e in events if e["type"] == "object_left"]) == 2


def test_watch_from_the_command_line_and_its_bad_input(tiny_od, tmp_path, capsys):
    assert main(["run", str(CLIP), "--model", str(tiny_od), "--no-video", "--events", str(tmp_path / "e.jsonl"),
                 "--watch", "car"]) == 0
    from tests.helpers import read_events

    assert [e["phrase"] for e in read_events(tmp_path / "e.jsonl") if e["type"] == "phrase_seen"] == ["car"]
    capsys.readouterr()
    assert main(["run", str(CLIP), "--model", str(tiny_od), "--watch", "  "]) == 1
    assert "--watch: a phrase" in capsys.readouterr().err
