"""The Florence-2 worker: batching equals one by one, confidences are real and aligned, zones map back."""

import time

import numpy as np
import pytest
import torch

from streamer.config import Config, ModelConfig
from streamer.model.florence import Florence2Detector
from streamer.model.worker import Worker
from streamer.pipeline.local import Pipeline
from streamer.records import Frame, Keyframe
from tests.helpers import read_events
from tests.scripted import ScriptedDetector
from tests.tiny_florence import build_tiny_florence

TWO_BOXES = "car<loc_100><loc_200><loc_500><loc_600>person<loc_600><loc_200><loc_700><loc_900>"


@pytest.fixture(scope="module")
def tiny_two(tmp_path_factory):
    # The model is sure of "car" and unsure of "person" (a small logit weight), so their confidences differ.
    return build_tiny_florence(tmp_path_factory.mktemp("tiny-two"), TWO_BOXES, weights={"person": 0.3})


def frame(index, value=0):
    rng = np.random.default_rng(index)
    return Frame("s", index, index / 25, 0.0, rng.integers(0, 255, (360, 640, 3), dtype=np.uint8))


def test_inputs_are_what_the_processor_builds(tiny_two):
    detector = Florence2Detector(ModelConfig(path=tiny_two, device="cpu"))
    keyframes = [Keyframe(frame(0), "<OD>"), Keyframe(frame(1), "<CAPTION_TO_PHRASE_GROUNDING>", "a red car on a road")]
    ours = detector.inputs(keyframes)
    theirs = detector.processor(
        text=["<OD>", "<CAPTION_TO_PHRASE_GROUNDING>a red car on a road"],
        images=[np.ascontiguousarray(k.frame.image[..., ::-1]) for k in keyframes],
        return_tensors="pt", padding="longest",
    )
    assert torch.equal(ours["input_ids"], theirs["input_ids"])
    assert torch.equal(ours["attention_mask"], theirs["attention_mask"])
    assert torch.allclose(ours["pixel_values"], theirs["pixel_values"])


def test_confidences_are_aligned_in_range_and_filter(tiny_two):
    detector = Florence2Detector(ModelConfig(path=tiny_two, device="cpu"))
    [result] = detector.detect([Keyframe(frame(0), "<OD>")])
    det = result.detections
    assert list(det.data["class_name"]) == ["car", "person"]
    car, person = det.confidence
    assert 0.9 < car <= 1.0 and 0.0 < person < 0.5
    np.testing.assert_allclose(det.xyxy[1], [384, 72, 448, 324])

    filtered = Florence2Detector(ModelConfig(path=tiny_two, device="cpu", min_confidence=0.5))
    [kept] = filtered.detect([Keyframe(frame(0), "<OD>")])
    assert list(kept.detections.data["class_name"]) == ["car"]


def test_batched_generate_equals_one_by_one_with_prompts_of_different_lengths(tiny_two):
    detector = Florence2Detector(ModelConfig(path=tiny_two, device="cpu"))
    task = "<CAPTION_TO_PHRASE_GROUNDING>"
    keyframes = [Keyframe(frame(i), task, p) for i, p in enumerate(["car", "a red car on a road", "dog", "a bus"])]
    batched = detector.detect(keyframes)
    for keyframe, result in zip(keyframes, batched):
        [single] = detector.detect([keyframe])
        np.testing.assert_array_equal(result.detections.xyxy, single.detections.xyxy)
        np.testing.assert_allclose(result.detections.confidence, single.detections.confidence, atol=1e-5)
        assert list(result.detections.data["class_name"]) == list(single.detections.data["class_name"])


def test_zone_crops_and_maps_boxes_back_to_frame_pixels(tiny_two):
    detector = Florence2Detector(ModelConfig(path=tiny_two, device="cpu"))
    [result] = detector.detect([Keyframe(frame(0), "<OD>", zone=(100, 50, 420, 230))])
    # Bins of a 320x180 crop, then offset by the zone's corner.
    np.testing.assert_allclose(result.detections.xyxy[0], [100 + 32, 50 + 36, 100 + 160, 50 + 108])


def test_each_image_is_preprocessed_once_for_several_tasks(tiny_two, monkeypatch):
    detector = Florence2Detector(ModelConfig(path=tiny_two, device="cpu"))
    calls = []
    original = detector.processor.image_processor.__call__

    class Counting:
        def __call__(self, *args, **kwargs):
            calls.append(1)
            return original(*args, **kwargs)

    monkeypatch.setattr(detector.processor, "image_processor", Counting())
    shared = frame(3)
    detector.detect([Keyframe(shared, "<OD>")])
    detector.detect([Keyframe(shared, "<OCR_WITH_REGION>")])
    detector.detect([Keyframe(shared, "<CAPTION>")])
    assert len(calls) == 1


def test_a_keyframes_tasks_share_one_call_and_are_never_split():
    seen = []

    class Recording(ScriptedDetector):
        def detect(self, keyframes):
            seen.append([(k.frame.index, k.task) for k in keyframes])
            return super().detect(keyframes)

    tasks = ["<OD>", "<OCR_WITH_REGION>", "<CAPTION>"]
    worker = Worker(Recording(lambda i: []), max_batch=4, max_wait_ms=200)
    futures = [f for i in range(3) for f in worker.submit_all([Keyframe(frame(i), task) for task in tasks])]
    assert worker.submit_all([]) == [] and worker.queue_depth == 3  # a keyframe no task is due on: nothing queued
    worker.start()
    results = [f.result(timeout=10) for f in futures]
    worker.stop()
    assert [(r.keyframe.frame.index, r.keyframe.task) for r in results] == [(i, t) for i in range(3) for t in tasks]
    # Three tasks a keyframe and at most four keyframes a call: each keyframe's tasks make one call of their own.
    assert seen == [[(i, t) for t in tasks] for i in range(3)]


def test_tasks_batched_together_answer_as_each_alone(tiny_two):
    detector = Florence2Detector(ModelConfig(path=tiny_two, device="cpu"))
    shared = frame(5)
    keyframes = [Keyframe(shared, "<OD>"), Keyframe(shared, "<CAPTION_TO_PHRASE_GROUNDING>", "a red car on a road"),
                 Keyframe(shared, "<OCR_WITH_REGION>"), Keyframe(frame(6), "<CAPTION>")]
    together = detector.detect(keyframes)
    assert [r.keyframe for r in together] == keyframes
    for keyframe, result in zip(keyframes, together):
        detector.forget_images()
        [alone] = detector.detect([keyframe])
        assert result.text == alone.text
        np.testing.assert_array_equal(result.detections.xyxy, alone.detections.xyxy)
        np.testing.assert_allclose(result.detections.confidence, alone.detections.confidence, atol=1e-5)
        assert list(result.detections.data["class_name"]) == list(alone.detections.data["class_name"])
    assert len(together[0].detections) and len(together[1].detections)


def test_schedule_runs_each_task_on_its_keyframes(clip, tmp_path):
    config = Config.model_validate({
        "sampler": {"every_n_frames": 10, "max_fps": None, "scene_threshold": None},
        "schedule": [
            {"task": "<OD>"},
            {"task": "<OCR_WITH_REGION>", "every_n_keyframes": 5},
            {"task": "<CAPTION>", "every_s": 2.0},
            {"task": "<OD>", "zone": [0.5, 0.0, 1.0, 0.5]},
        ],
    })
    jobs, calls = [], []

    class Recording(ScriptedDetector):
        def detect(self, keyframes):
            jobs.extend((k.frame.index, k.task, k.zone) for k in keyframes)
            calls.append({k.frame.index for k in keyframes})
            return super().detect(keyframes)

    Pipeline(config, lambda: Recording(lambda i: [])).run(str(clip), None, tmp_path / "e.jsonl")
    # All of a keyframe's tasks (four on frames 0, 50, 100) share one call.
    for index in (0, 50, 100):
        assert sum(index in frames for frames in calls) == 1
    od = sorted(i for i, t, z in jobs if t == "<OD>" and z is None)
    assert od == list(range(0, 150, 10))
    assert sorted(i for i, t, _ in jobs if t == "<OCR_WITH_REGION>") == [0, 50, 100]
    assert sorted(i for i, t, _ in jobs if t == "<CAPTION>") == [0, 50, 100]
    assert {z for _, t, z in jobs if z is not None} == {(320, 0, 640, 180)}


def test_tracks_of_two_tasks_never_share_an_id(clip, tmp_path):
    config = Config.model_validate({
        "sampler": {"every_n_frames": 5, "max_fps": None, "scene_threshold": None},
        "schedule": [{"task": "<OD>"}, {"task": "<OCR_WITH_REGION>", "every_n_keyframes": 2}],
    })

    def script(index):
        return [("car", (10, 10, 100, 100), None), ("text", (200, 200, 260, 220), "AB 42")]

    Pipeline(config, lambda: ScriptedDetector(script)).run(str(clip), None, tmp_path / "e.jsonl")
    appeared = [e for e in read_events(tmp_path / "e.jsonl") if e["type"] == "object_appeared"]
    # The scripted detector answers every task the same, so each task has a car and a text track.
    assert len(appeared) == 4 and len({e["track_id"] for e in appeared}) == 4


def test_two_tasks_on_one_keyframe_run_the_vision_tower_once_and_answer_as_from_pixels(tiny_two):
    from streamer.model.florence import parse_answer

    detector = Florence2Detector(ModelConfig(path=tiny_two, device="cpu"))
    tower = detector.model.model.vision_tower
    calls, forward = [], tower.forward
    tower.forward = lambda *args, **kwargs: (calls.append(1), forward(*args, **kwargs))[1]
    od = Keyframe(frame(0), "<OD>")
    [boxes] = detector.detect([od])
    [grounded] = detector.detect([Keyframe(frame(0), "<CAPTION_TO_PHRASE_GROUNDING>", "a red car on a road")])
    assert len(calls) == 1 and len(boxes.detections) and len(grounded.detections)
    detector.detect([Keyframe(frame(1), "<OD>")])
    assert len(calls) == 2  # another frame is another image
    # The model's own path, from pixels, says the same.
    with torch.inference_mode():
        ids = detector.model.generate(**detector.inputs([od]), max_new_tokens=64, do_sample=False)
    text = detector.processor.tokenizer.decode(ids[0], skip_special_tokens=False)
    assert np.array_equal(parse_answer(od, text, detector.processor).detections.xyxy, boxes.detections.xyxy)


def test_a_detection_keyframe_goes_before_a_waiting_question():
    import threading

    class Recording:
        def __init__(self):
            self.release, self.seen = threading.Event(), []

        def detect(self, keyframes):
            self.release.wait(5)
            self.seen.append([k.frame.index for k in keyframes])
            return ScriptedDetector(lambda i: []).detect(keyframes)

    detector = Recording()
    worker = Worker(detector, max_batch=1)
    worker.start()
    try:
        busy = worker.submit(Keyframe(frame(0), "<OD>"))
        time.sleep(0.2)  # the worker holds keyframe 0
        question = worker.submit(Keyframe(frame(1), "<OCR>", zone=(0, 0, 10, 10), question=True))
        later = worker.submit(Keyframe(frame(2), "<OD>"))
        detector.release.set()
        for future in (busy, question, later):
            future.result(timeout=5)
    finally:
        worker.stop()
    assert detector.seen == [[0], [2], [1]]


def test_an_int8_model_on_the_cpu_answers_as_the_float_one(tiny_two):
    from torch.ao.nn.quantized.dynamic import Linear as Int8Linear

    float_det = Florence2Detector(ModelConfig(path=tiny_two, device="cpu"))
    int8_det = Florence2Detector(ModelConfig(path=tiny_two, device="cpu", quantize="int8"))
    layers = [m for m in int8_det.model.modules() if isinstance(m, (torch.nn.Linear, Int8Linear))]
    assert layers and all(isinstance(m, Int8Linear) for m in layers)
    assert not any(isinstance(m, Int8Linear) for m in float_det.model.modules())
    keyframe = Keyframe(frame(0), "<OD>")
    [exact], [int8] = float_det.detect([keyframe]), int8_det.detect([keyframe])
    assert list(int8.detections.data["class_name"]) == list(exact.detections.data["class_name"]) == ["car", "person"]
    np.testing.assert_array_equal(int8.detections.xyxy, exact.detections.xyxy)
    np.testing.assert_allclose(int8.detections.confidence, exact.detections.confidence, atol=0.05)


def test_int8_is_refused_for_a_gpu_and_beside_compile():
    with pytest.raises(ValueError, match="quantize: int8 is for the CPU"):
        ModelConfig(device="cuda", quantize="int8")
    with pytest.raises(ValueError, match="choose one of quantize and compile"):
        ModelConfig(quantize="int8", compile=True)


def test_the_output_layer_computed_rows_first_gives_the_same_answers(tiny_two):
    from streamer.model.florence import rows_first

    detector = Florence2Detector(ModelConfig(path=tiny_two, device="cpu"))
    head = detector.model.get_output_embeddings()
    vars(head).pop("forward", None)  # whichever the load picked: nn.Linear's own first
    x = torch.randn(3, 1, head.in_features)
    with torch.inference_mode():
        torch.testing.assert_close(rows_first(head)(x), head(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(rows_first(head)(x[:1]), head(x[:1]))
    shared = frame(7)
    keyframes = [Keyframe(shared, "<OD>"), Keyframe(shared, "<CAPTION_TO_PHRASE_GROUNDING>", "a red car on a road")]
    plain = detector.detect(keyframes)
    head.forward = rows_first(head)
    for a, b in zip(plain, detector.detect(keyframes)):
        np.testing.assert_array_equal(a.detections.xyxy, b.detections.xyxy)
        np.testing.assert_allclose(a.detections.confidence, b.detections.confidence, atol=1e-5)


def test_a_still_cameras_keyframe_waits_behind_moving_ones_but_never_past_the_floor():
    """The model's time where something moves: detection keyframes of cameras whose picture changed (or that hold
    a track) go first, a still camera's waits behind them up to `still_wait_s` and then takes its turn, and a
    question waits behind every detection keyframe."""
    from streamer.model.worker import _Line, _Waiting

    line, now = _Line(8, still_wait_s=2.0), time.monotonic()

    def waiting(name, order, still=False, question=0, waited=0.0):
        return _Waiting(question, still, now - waited, order, [name], [])

    for item in (waiting("still-fresh", 0, still=True), waiting("question", 1, question=1),
                 waiting("moving-a", 2), waiting("still-overdue", 3, still=True, waited=2.5), waiting("moving-b", 4)):
        assert line.put(item, timeout=0)
    assert [line.get(0).keyframes[0] for _ in range(5)] == [
        "moving-a", "still-overdue", "moving-b", "still-fresh", "question"]
    assert line.get(0) is None
    fifo = _Line(2, still_wait_s=0.0)  # 0: no camera waits behind another
    for item in (waiting("still", 0, still=True), waiting("moving", 1)):
        fifo.put(item, timeout=0)
    assert not fifo.put(waiting("one too many", 2), timeout=0.01)  # bounded
    assert [fifo.get(0).keyframes[0] for _ in range(2)] == ["still", "moving"]
