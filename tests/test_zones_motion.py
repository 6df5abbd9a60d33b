"""Zones, lines, calm events and full-rate boxes on synthetic tracks with known ground truth."""

import pytest

from streamer.config import Config
from streamer.pipeline.local import Pipeline
from tests.helpers import read_events
from tests.scripted import ScriptedDetector

KEYFRAME_EVERY = 5  # frames, at 25 fps: 0.2 s


def run(clip, tmp_path, script, events=None, **sections):
    config = Config.model_validate({
        "sampler": {"every_n_frames": KEYFRAME_EVERY, "max_fps": None, "scene_threshold": None},
        "tracker": {"lost_after_s": 1.0}, "events": events or {}, **sections,
    })
    Pipeline(config, lambda: ScriptedDetector(script)).run(str(clip), tmp_path / "out.mp4", tmp_path / "e.jsonl")
    return read_events(tmp_path / "e.jsonl")


def walker(index):
    """A person walking left to right at 100 px/s: x = 20 + 4 * index (bottom centre at x + 20)."""
    x = 20 + 4 * index
    return [("person", (x, 200, x + 40, 300), None)]


def test_zone_entered_and_left_with_dwell(clip, tmp_path, event_validator):
    zone = {"name": "door", "polygon": [[200, 150], [400, 150], [400, 350], [200, 350]]}
    events = run(clip, tmp_path, walker, events={"zones": [zone]})
    entered = [e for e in events if e["type"] == "zone_entered"]
    left = [e for e in events if e["type"] == "zone_left"]
    # Bottom centre x = 40 + 4i: inside 200..400 from i = 40 to i = 90; keyframes every 5 frames.
    assert [(e["zone"], e["frame_index"]) for e in entered] == [("door", 40)]
    assert [(e["zone"], e["frame_index"]) for e in left] == [("door", 95)]
    assert left[0]["dwell_s"] == pytest.approx((95 - 40) / 25)
    assert entered[0]["track_id"] == left[0]["track_id"] and entered[0]["label"] == "person"
    for event in events:
        event_validator.validate(event)


def test_zone_label_filter(clip, tmp_path):
    zone = {"name": "door", "polygon": [[0.3, 0.4], [0.6, 0.4], [0.6, 1.0], [0.3, 1.0]], "labels": ["car"]}
    events = run(clip, tmp_path, walker, events={"zones": [zone]})
    assert not [e for e in events if e["type"].startswith("zone_")]


def test_line_crossed_with_direction_both_ways(clip, tmp_path, event_validator):
    def there_and_back(index):
        x = 20 + 6 * index if index < 75 else 20 + 6 * 75 - 6 * (index - 75)
        return [("car", (x, 200, x + 40, 240), None)]

    line = {"name": "gate", "start": [300, 0], "end": [300, 360]}
    events = run(clip, tmp_path, there_and_back, events={"lines": [line]})
    crossed = [(e["line"], e["direction"]) for e in events if e["type"] == "line_crossed"]
    assert len(crossed) == 2 and {d for _, d in crossed} == {"in", "out"}
    assert crossed[0][1] != crossed[1][1]
    for event in events:
        event_validator.validate(event)


def test_a_flicker_of_one_keyframe_gives_no_leave_and_appear(clip, tmp_path):
    events = run(clip, tmp_path, lambda i: [] if i == 50 else walker(i))
    assert [e["type"] for e in events] == ["object_appeared", "object_left"]
    assert events[1]["reason"] == "stream_ended"
