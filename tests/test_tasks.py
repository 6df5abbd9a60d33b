"""Every Florence-2 task through `streamer run --task ...` on the tiny model, and what each gives a user."""

import numpy as np
import pytest

from streamer.cli import main
from streamer.tasks import TASKS
from tests.helpers import CLIP, read_events

REGION = "<loc_100><loc_200><loc_500><loc_600>"
PROMPTS = {
    "<CAPTION_TO_PHRASE_GROUNDING>": "a red car",
    "<OPEN_VOCABULARY_DETECTION>": "car",
    "<REFERRING_EXPRESSION_SEGMENTATION>": "the car",
    "<REGION_TO_SEGMENTATION>": REGION,
    "<REGION_TO_CATEGORY>": REGION,
    "<REGION_TO_DESCRIPTION>": REGION,
    "<REGION_TO_OCR>": REGION,
}


@pytest.mark.parametrize("task", list(TASKS))
def test_every_task_runs_end_to_end(task, tiny_od, tiny_ocr, tiny_poly, tmp_path, event_validator, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    kind = TASKS[task].kind
    model = {"ocr": tiny_ocr, "polygons": tiny_poly}.get(kind, tiny_od)
    video, log = tmp_path / "out.mp4", tmp_path / "events.jsonl"
    args = ["run", str(CLIP), "--model", str(model), "--task", task, "--out-video", str(video), "--events", str(log)]
    if task in PROMPTS:
        args += ["--prompt", PROMPTS[task]]
    assert main(args) == 0
    events = read_events(log)
    for event in events:
        event_validator.validate(event)
    by_type = {}
    for event in events:
        by_type.setdefault(event["type"], []).append(event)
    if kind in ("boxes", "open_vocabulary"):
        [appeared] = by_type["object_appeared"]
        assert appeared["bbox"] == [64.0, 72.0, 320.0, 216.0]
        assert 0.0 <= appeared["confidence"] <= 1.0
        expected = {"<REGION_PROPOSAL>": "region_proposal"}.get(task, "car")
        assert appeared["label"] == expected
    elif kind == "ocr":
        assert [e["text"] for e in by_type["text_read"]] == ["AB 42"]
    elif kind == "polygons":
        [appeared] = by_type["object_appeared"]
        # the phrase segmented, or for a region (location tokens, no words) the task's name
        assert appeared["label"] == {"<REGION_TO_SEGMENTATION>": "region_to_segmentation"}.get(task, PROMPTS[task])
        assert appeared["bbox"] == [64.0, 36.0, 192.0, 108.0]
    else:
        kind_of_event = "caption" if "CAPTION" in task else "text_read"
        [said] = by_type[kind_of_event]
        assert said["text"] == "car" and said["task"] == task and said["track_id"] is None
    assert video.stat().st_size > 0


def test_prompted_task_without_prompt_is_a_config_error(tiny_od, capsys):
    assert main(["run", str(CLIP), "--model", str(tiny_od), "--task", "<OPEN_VOCABULARY_DETECTION>"]) == 1
    assert "needs a prompt" in capsys.readouterr().err


def test_a_segmentation_mask_is_drawn_on_the_frames_between_keyframes(tiny_poly, tmp_path):
    from tests.helpers import probe_video

    video = tmp_path / "out.mp4"
    assert main(["run", str(CLIP), "--model", str(tiny_poly), "--task", "<REFERRING_EXPRESSION_SEGMENTATION>",
                 "--prompt", "car", "--out-video", str(video), "--events", str(tmp_path / "e.jsonl")]) == 0
    drawn, source = probe_video(video)["frames"], probe_video(CLIP)["frames"]
    inside = np.s_[60:85, 100:160]  # well inside the polygon (64..192 x 36..108), away from the box's edges
    for index in (12, 13, 27):  # not keyframes
        assert np.abs(drawn[index][inside].astype(int) - source[index][inside]).mean() > 15, index
