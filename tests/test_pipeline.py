"""The pipeline with a scripted detector: tracks, events and the annotated video as a user sees them."""

import numpy as np
import pytest

from streamer.config import Config
from streamer.pipeline.local import Pipeline
from tests.helpers import moving_car, probe_video, read_events
from tests.scripted import ScriptedDetector


def run(clip, tmp_path, script, **sections):
    config = Config.model_validate({"sampler": {"every_n_frames": 5, "max_fps": None, "scene_threshold": None},
                                    "tracker": {"lost_after_s": 1.0}, **sections})
    detector = ScriptedDetector(script)
    stats = Pipeline(config, lambda: detector).run(str(clip), tmp_path / "out.mp4", tmp_path / "events.jsonl")
    return stats, read_events(tmp_path / "events.jsonl"), detector


def test_a_moving_box_keeps_one_track_id(clip, tmp_path, event_validator):
    stats, events, detector = run(clip, tmp_path, moving_car)
    assert stats.frames == 150 and stats.keyframes == 30
    assert [e["type"] for e in events] == ["object_appeared", "object_left"]
    appeared, left = events
    assert appeared["track_id"] == left["track_id"] and appeared["label"] == "car"
    assert appeared["frame_index"] == 0  # a sure detection (the script says 0.9) is confirmed on its first keyframe
    assert left["reason"] == "stream_ended" and left["dwell_s"] == pytest.approx(145 / 25)
    for event in events:
        event_validator.validate(event)


def test_a_box_gone_longer_than_lost_after_leaves_exactly_once(clip, tmp_path):
    # Seen on frames 0..50, gone from frame 55 on; lost_after_s is 1 s (25 frames).
    stats, events, _ = run(clip, tmp_path, lambda i: moving_car(i) if i <= 50 else [])
    left = [e for e in events if e["type"] == "object_left"]
    assert len(left) == 1
    assert left[0]["reason"] == "lost"
    assert left[0]["frame_index"] == 75  # first keyframe >= 1 s after the last sighting at frame 50
    assert left[0]["dwell_s"] == pytest.approx(50 / 25)
    assert left[0]["bbox"] == [160.0, 200.0, 280.0, 260.0]


def test_a_box_that_comes_back_in_time_does_not_leave(clip, tmp_path):
    _, events, _ = run(clip, tmp_path, lambda i: [] if 40 <= i <= 55 else moving_car(i))
    assert [e["type"] for e in events] == ["object_appeared", "object_left"]
    assert events[-1]["reason"] == "stream_ended"


def test_ocr_region_yields_one_text_read_then_text_changed(clip, tmp_path, event_validator):
    def plate(index):
        text = "AB 42" if index < 100 else "AB 43"
        return [("text", (300, 240, 360, 260), text)]

    _, events, _ = run(clip, tmp_path, plate, model={"task": "<OCR_WITH_REGION>"})
    reads = [e for e in events if e["type"] in ("text_read", "text_changed")]
    # Confirmed at keyframe 0 (sure); three votes settle it at 10. "AB 43" must out-vote the last ten reads: at 125.
    assert [(e["type"], e["text"], e["frame_index"]) for e in reads] == [
        ("text_read", "AB 42", 10), ("text_changed", "AB 43", 125)]
    assert reads[1]["previous_text"] == "AB 42" and reads[0]["track_id"] == reads[1]["track_id"]
    for event in events:
        event_validator.validate(event)


def test_five_reads_of_a_plate_with_one_misread_give_one_text_read(clip, tmp_path):
    script = {0: "AB 42", 5: "AB 42", 10: "A8 42", 15: "AB 42", 20: "AB 42", 25: "AB 42"}

    def plate(index):
        return [("text", (300, 240, 360, 260), script[index])] if index in script else []

    _, events, _ = run(clip, tmp_path, plate, model={"task": "<OCR_WITH_REGION>"})
    reads = [e for e in events if e["type"] in ("text_read", "text_changed")]
    assert [(e["type"], e["text"]) for e in reads] == [("text_read", "AB 42")]
    [left] = [e for e in events if e["type"] == "object_left"]
    assert left["text"] == "AB 42"


def test_annotated_video_has_every_frame_and_shows_the_tracks(clip, tmp_path):
    stats, _, _ = run(clip, tmp_path, lambda i: [("sign", (430, 60, 620, 130), None)])
    out = probe_video(tmp_path / "out.mp4")
    source = probe_video(clip)
    assert (out["count"], out["width"], out["height"], out["rate"], out["codec"]) == (150, 640, 360, 25, "h264")

    def box_edge_changed(index):
        # Left edge of the drawn box: the source has the sign's flat colour there, the output a box line.
        diff = np.abs(out["frames"][index][70:120, 428:432].astype(int) - source["frames"][index][70:120, 428:432])
        return diff.mean() > 20

    # Frame 0 is drawn before the track is confirmed (label only, box still drawn); frames between keyframes
    # carry the latest keyframe's boxes.
    assert all(box_edge_changed(i) for i in (0, 3, 7, 149))


def test_keyframes_are_batched_when_the_worker_falls_behind(clip, tmp_path):
    import time

    def slow(index):
        time.sleep(0.05)
        return []

    _, _, detector = run(clip, tmp_path, slow, model={"batch_size": 4})
    sizes = [len(c) for c in detector.calls]
    assert sum(sizes) == 30 and max(sizes) > 1 and max(sizes) <= 4


def test_stop_mid_run_closes_outputs_with_what_was_done(clip, tmp_path, event_validator):
    config = Config.model_validate({"sampler": {"every_n_frames": 5, "max_fps": None, "scene_threshold": None}})
    pipeline = None

    def script(index):
        if index >= 60:
            pipeline.stop()
        return moving_car(index)

    detector = ScriptedDetector(script)
    pipeline = Pipeline(config, lambda: detector)
    stats = pipeline.run(str(clip), tmp_path / "out.mp4", tmp_path / "events.jsonl")
    assert stats.stopped_early and 60 < stats.frames < 150
    assert probe_video(tmp_path / "out.mp4")["count"] == stats.frames
    events = read_events(tmp_path / "events.jsonl")
    assert [e["type"] for e in events] == ["object_appeared", "object_left"]
    for event in events:
        event_validator.validate(event)


@pytest.mark.parametrize("threshold, tracked", [(0.25, True), (0.55, False)])
def test_activation_threshold_decides_whether_a_half_sure_box_gets_a_track(clip, tmp_path, threshold, tracked):
    """Florence-2 scores this car at 0.5: a track starts below that threshold, not above it (with ByteTrack's own
    first-stage threshold of 0.6, no setting below it used to change anything)."""
    class HalfSure(ScriptedDetector):
        def detect(self, keyframes):
            results = super().detect(keyframes)
            for result in results:
                result.detections.confidence = np.full(len(result.detections), 0.5, dtype=np.float32)
            return results

    config = Config.model_validate({"sampler": {"every_n_frames": 5, "max_fps": None, "scene_threshold": None},
                                    "tracker": {"activation_threshold": threshold}})
    Pipeline(config, lambda: HalfSure(moving_car)).run(str(clip), None, tmp_path / "e.jsonl")
    appeared = [e for e in read_events(tmp_path / "e.jsonl") if e["type"] == "object_appeared"]
    assert (len(appeared) == 1) == tracked


def test_a_camera_with_video_on_gives_the_model_and_the_saved_keyframes_the_cameras_own_pixels(clip, tmp_path):
    """The clip run as a camera (real time, frames drawn at once) with the annotated video, saved keyframes and
    snapshots on: every keyframe the model got, and every keyframe saved, is the decoded frame, not a drawn one."""
    import cv2

    from streamer.outputs.store import keyframe_boxes
    from streamer.pipeline.source_run import SourceSpec

    class Looking(ScriptedDetector):
        def __init__(self) -> None:
            super().__init__(lambda i: [("car", (100, 100, 300, 200), None), ("plate", (20, 20, 120, 60), "AB 42")])
            self.seen: dict[int, np.ndarray] = {}

        def detect(self, keyframes):
            for k in keyframes:
                assert not k.frame.image.flags.writeable  # nobody downstream can draw on it
                self.seen[k.frame.index] = k.frame.image.copy()
            return super().detect(keyframes)

    looking = Looking()
    config = Config.model_validate({"sampler": {"every_n_frames": 5, "max_fps": None, "scene_threshold": None},
                                    "output": {"save_keyframes": True}, "events": {"snapshots": True}})
    spec = SourceSpec(str(clip), tmp_path / "e.jsonl", tmp_path / "out.mp4", live=True, db_path=tmp_path / "e.db")
    [stats] = Pipeline(config, lambda: looking).run_many([spec], duration_s=3)
    assert stats.live and len(looking.seen) >= 5
    decoded = probe_video(clip)["frames"]
    for index, image in looking.seen.items():
        np.testing.assert_array_equal(image, decoded[index % len(decoded)])  # a file as a camera loops
    images, _ = keyframe_boxes(spec.db_path)
    assert images
    for path in images:
        index = int(path.stem.rsplit("-", 1)[-1])
        saved = cv2.imread(str(path)).astype(int)
        # JPEG noise is a few levels; a drawn box or label is a stripe of full colour along the box's edges
        assert np.abs(saved - decoded[index % len(decoded)])[95:105, 95:305].mean() < 8
    video = probe_video(tmp_path / "out.mp4")["frames"]
    assert np.abs(video[0].astype(int)[100, 120:280] - decoded[0][100, 120:280]).mean() > 40  # the copy is drawn
