import json
import re
import time

import numpy as np
import pytest

from streamer.config import ModelConfig
from streamer.errors import StreamerError
from streamer.model.florence import Florence2Detector
from streamer.pipeline.reader import open_reader
from streamer.records import Keyframe
from tests.tiny_florence import build_tiny_florence


@pytest.fixture(scope="module")
def clip_frames(clip):
    reader = open_reader(str(clip))
    reader.start()
    frames = [f for f in reader.frames() if f.index in (0, 40, 80, 120)]
    reader.stop()
    return frames


def test_od_boxes_come_back_in_source_pixels(tiny_od, clip_frames):
    detector = Florence2Detector(ModelConfig(path=tiny_od, device="cpu"))
    [result] = detector.detect([Keyframe(clip_frames[0], "<OD>")])
    det = result.detections
    assert list(det.data["class_name"]) == ["car"]
    # <loc_100><loc_200><loc_500><loc_600> of a 640x360 frame: int((bin + 0.5) * size / 1000)
    np.testing.assert_allclose(det.xyxy[0], [64, 72, 320, 216])


def test_ocr_regions_become_boxes_with_text(tiny_ocr, clip_frames):
    detector = Florence2Detector(ModelConfig(path=tiny_ocr, device="cpu", task="<OCR_WITH_REGION>"))
    [result] = detector.detect([Keyframe(clip_frames[0], "<OCR_WITH_REGION>")])
    det = result.detections
    assert list(det.data["text"]) == ["AB 42"]
    assert list(det.data["class_name"]) == ["text"]
    np.testing.assert_allclose(det.xyxy[0], [64, 252, 192, 288])


def test_text_tasks_answer_on_the_frame(tiny_ocr, clip_frames):
    detector = Florence2Detector(ModelConfig(path=tiny_ocr, device="cpu", task="<OCR>"))
    [result] = detector.detect([Keyframe(clip_frames[0], "<OCR>")])
    assert len(result.detections) == 0
    assert result.text.startswith("AB 42")


def test_degenerate_boxes_and_stray_location_tokens_stop_at_the_door(tmp_path, clip_frames):
    """A malformed answer: a box with no height, then one with no width, then a good one; text tasks on the same
    answer keep the words and none of the location tokens."""
    answer = ("car<loc_384><loc_36><loc_512><loc_36>car<loc_100><loc_100><loc_100><loc_300>"
              "bus<loc_100><loc_200><loc_500><loc_600>STOP")
    detector = Florence2Detector(ModelConfig(path=build_tiny_florence(tmp_path / "m", answer), device="cpu"))
    od, caption = detector.detect([Keyframe(clip_frames[0], "<OD>"), Keyframe(clip_frames[0], "<CAPTION>")])
    assert list(od.detections.data["class_name"]) == ["bus"]
    np.testing.assert_allclose(od.detections.xyxy, [[64, 72, 320, 216]])
    assert caption.text == "car car bus STOP" and "loc" not in caption.text


def test_a_regions_words_keep_none_of_the_models_markup(tmp_path, clip_frames):
    """A stray location token inside a region's words (what Label Studio was handed as 'car<loc_200>STOP')."""
    answer = ("car<loc_200>STOP<loc_100><loc_700><loc_300><loc_700><loc_300><loc_800><loc_100><loc_800>"
              "AB 42<loc_100><loc_100><loc_300><loc_100><loc_300><loc_200><loc_100><loc_200>")
    model = build_tiny_florence(tmp_path / "m", answer)
    detector = Florence2Detector(ModelConfig(path=model, device="cpu", task="<OCR_WITH_REGION>"))
    [result] = detector.detect([Keyframe(clip_frames[0], "<OCR_WITH_REGION>")])
    assert list(result.detections.data["text"]) == ["car STOP", "AB 42"]


def test_a_batch_answers_like_one_by_one(tiny_od, clip_frames):
    detector = Florence2Detector(ModelConfig(path=tiny_od, device="cpu"))
    keyframes = [Keyframe(f, "<OD>") for f in clip_frames]
    batched = detector.detect(keyframes)
    single = [detector.detect([k])[0] for k in keyframes]
    assert [r.keyframe.frame.index for r in batched] == [0, 40, 80, 120]
    for a, b in zip(batched, single):
        np.testing.assert_array_equal(a.detections.xyxy, b.detections.xyxy)
        assert list(a.detections.data["class_name"]) == list(b.detections.data["class_name"])


def test_uncached_hub_model_offline_says_how_to_use_a_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.monotonic()
    with pytest.raises(StreamerError) as err:
        Florence2Detector(ModelConfig(id="florence-community/Florence-2-base", device="cpu"))
    message = str(err.value)
    assert "florence-community/Florence-2-base" in message and "model.path" in message
    assert "\n" not in message
    assert time.monotonic() - started < 30


def test_unreachable_hub_fails_fast_without_offline_flag(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: nothing listens
    with pytest.raises(StreamerError, match="hub cannot be reached"):
        Florence2Detector(ModelConfig(id="florence-community/Florence-2-base", device="cpu"))


def test_a_model_the_hub_does_not_have_is_named_as_missing(tmp_path):
    """The hub's own answer (a 404 with its RepoNotFound code) tells a wrong id from an unreachable hub; the hub
    is asked through its own client, which reads HF_ENDPOINT (and proxies) when the process starts."""
    import os
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from tests.helpers import CLIP, streamer

    class Hub(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(404)
            self.send_header("X-Error-Code", "RepoNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env.update(HF_HOME=str(tmp_path / "hf"), HF_ENDPOINT=f"http://127.0.0.1:{server.server_address[1]}")
    try:
        result = streamer("run", CLIP, "--model", "someone/no-such-model", "--no-video", "--events",
                          tmp_path / "e.jsonl", env=env)
    finally:
        server.shutdown()
    assert result.returncode == 1
    assert result.stderr == "streamer: error: model 'someone/no-such-model' was not found on the hub\n"


@pytest.mark.parametrize("make, message", [(lambda p: p / "nope", "does not exist"), (lambda p: p, "holds no config.json")])
def test_bad_model_folder(tmp_path, make, message):
    with pytest.raises(StreamerError, match=message):
        Florence2Detector(ModelConfig(path=make(tmp_path), device="cpu"))


def _cut_weights(folder):
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])


def _no_tokenizer(folder):
    (folder / "tokenizer.json").unlink()


def _another_model(folder):
    config = folder / "config.json"
    config.write_text(config.read_text().replace('"model_type": "florence2"', '"model_type": "bert"'))


def _edited(path: str, value):
    """A config.json edited by hand: `path` (dotted) set to `value`."""
    def edit(folder):
        config = json.loads((folder / "config.json").read_text())
        *parents, key = path.split(".")
        node = config
        for parent in parents:
            node = node[parent]
        node[key] = value
        (folder / "config.json").write_text(json.dumps(config))
    return edit


@pytest.mark.parametrize("damage, message", [
    (_cut_weights, "its weights file is corrupt or cut short"),
    (_no_tokenizer, "holds no tokenizer"),
    (_another_model, "holds a 'bert' model, not Florence-2"),
    (_edited("text_config.vocab_size", -5), "config.json gives text_config.vocab_size -5: sizes and counts"),
    (_edited("text_config.d_model", 0), "config.json gives text_config.d_model 0"),
    (_edited("vision_config.depths", [1, "two"]), re.escape('config.json gives vision_config.depths [1, "two"]')),
])
def test_a_damaged_model_folder_is_one_clear_line(tiny_od, tmp_path, damage, message):
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(tiny_od, folder)
    damage(folder)
    with pytest.raises(StreamerError, match=message) as error:
        Florence2Detector(ModelConfig(path=folder, device="cpu"))
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("zone", [None, (320, 90, 640, 360)])
def test_a_keyframe_shrunk_for_a_remote_worker_gives_the_model_the_same_pixels_and_boxes(tiny_poly, clip_frames, zone):
    from streamer.cluster.model_worker import shrink

    detector = Florence2Detector(ModelConfig(path=tiny_poly, device="cpu", task="<REFERRING_EXPRESSION_SEGMENTATION>",
                                             prompt="a car"))
    full = Keyframe(clip_frames[1], "<REFERRING_EXPRESSION_SEGMENTATION>", "a car", zone)
    small = shrink(full, detector.input_size)
    assert small.frame.image.shape[:2] == detector.input_size[::-1] and small.frame_size == (640, 360)
    assert small.frame.image.nbytes < full.frame.image.nbytes / 10  # what crosses to the worker
    assert np.array_equal(detector.pixel_values(small), detector.pixel_values(full))
    [a] = detector.detect([full])
    [b] = detector.detect([small])
    np.testing.assert_array_equal(a.detections.xyxy, b.detections.xyxy)
    assert a.detections.mask.shape == b.detections.mask.shape == (1, 360, 640)
    np.testing.assert_array_equal(a.detections.mask, b.detections.mask)


def test_a_question_shrunk_for_a_remote_worker_still_waits_behind_keyframes(clip_frames):
    from streamer.cluster.model_worker import shrink

    question = Keyframe(clip_frames[1], "<OCR>", zone=(320, 90, 640, 360), question=True)
    small = shrink(question, (768, 768))
    assert small.question and small.zone == question.zone and small.frame_size == (640, 360)
