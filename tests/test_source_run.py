"""The per-source run at its seam: an in-memory reader and a model whose answers the test releases, no video
files. Back-pressure for files, no queueing for cameras, and the takeover rules of a restarted run."""

import json
import threading
import time
from concurrent.futures import Future

import numpy as np
import pytest

from streamer.config import Config
from streamer.model.worker import KeyframeModel
from streamer.outputs.sinks import tracks_rows
from streamer.outputs.store import EventStore, query
from streamer.pipeline.source_run import SourceRun, SourceSpec, Takeover
from streamer.records import Keyframe
from tests.helpers import Events, Frames, MemoryReader, read_events
from tests.rtsp_server import wait_for
from tests.scripted import ScriptedDetector

N = 60


class HeldModel(KeyframeModel):
    """A keyframe model that answers from a script, but only once the test lets it."""

    def __init__(self, script=lambda i: []) -> None:
        self.detector = ScriptedDetector(script)
        self.released = threading.Event()
        self.submitted: list[int] = []

    def submit(self, keyframe: Keyframe) -> Future:
        future: Future = Future()
        self.submitted.append(keyframe.frame.index)

        def answer():
            self.released.wait()
            if not future.set_running_or_notify_cancel():  # let go by the run, as the Worker does
                return
            try:
                [result] = self.detector.detect([keyframe])
            except Exception as exc:  # delivered to whoever waits, as the Worker does
                future.set_exception(exc)
            else:
                future.set_result(result)

        threading.Thread(target=answer, daemon=True).start()
        return future


def config(**sampler):
    return Config.model_validate({"sampler": {"every_n_frames": 5, "max_fps": None, "scene_threshold": None, **sampler},
                                  "pipeline": {"max_pending_frames": 12}, "tracker": {"lost_after_s": 0.5}})


def start(run: SourceRun) -> tuple[threading.Thread, threading.Event, dict]:
    stop, out = threading.Event(), {}
    thread = threading.Thread(target=lambda: out.setdefault("stats", run.run(stop)), daemon=True)
    thread.start()
    return thread, stop, out


def box(index):
    return [("car", (5 + index * 0.2, 10, 25 + index * 0.2, 30), None)]


def test_a_file_waits_for_the_model_with_at_most_the_pending_line_in_hand(tmp_path):
    reader, model, frames = MemoryReader(), HeldModel(box), Frames()
    run = SourceRun(SourceSpec("mem", tmp_path / "e.jsonl"), config(), reader, model, shared=[frames])
    thread, _, out = start(run)
    time.sleep(0.5)
    # The model has answered nothing: the run holds a full line of frames and reads no further.
    assert reader.taken == 12 and frames.count == 0 and model.submitted == [0, 5, 10]
    model.released.set()
    thread.join(10)
    assert out["stats"].error is None and out["stats"].frames == N == frames.count and frames.seen == list(range(N))
    assert out["stats"].keyframes == N // 5 and model.submitted == list(range(0, N, 5))


def test_a_camera_never_queues_keyframes_and_the_live_view_never_waits(tmp_path):
    reader, model = MemoryReader(live=True, pace_s=0.002), HeldModel(box)
    view, final = Frames(immediate=True), Frames()
    cfg = config().model_copy(update={"live": config().live.model_copy(update={"hold_frames": 10})})
    run = SourceRun(SourceSpec("mem", tmp_path / "e.jsonl"), cfg, reader, model, shared=[view, final])
    thread, _, out = start(run)
    assert wait_for(lambda: reader.taken == N and view.count == N, 5)
    # The first keyframe is still with the model: the live view has shown every frame, the other outputs all
    # but the 10 held behind it, in order.
    assert view.seen == list(range(N)) and final.seen == list(range(N - 10)) and model.submitted == [0]
    model.released.set()
    thread.join(10)
    assert final.seen == list(range(N)) and out["stats"].keyframes == 1 and out["stats"].frames == N


def test_a_cameras_tracks_file_says_what_the_model_saw_on_every_frame(tmp_path):
    """Keyframes are `detected`, every frame has its line (empty or not), no box lies outside the picture or is
    inside out, and an id shows from the keyframe whose object_appeared names it."""
    def leaving(index):  # a car driving out of the 64x48 picture to the right, 3 px a frame
        return [("car", (20 + 3 * index, 10, 44 + 3 * index, 30), None)]

    model = HeldModel(leaving)
    model.released.set()
    spec = SourceSpec("mem", tmp_path / "e.jsonl", tracks_path=tmp_path / "t.jsonl")
    run = SourceRun(spec, config(), MemoryReader(live=True, pace_s=0.01), model)
    assert run.run(threading.Event()).error is None
    lines = [json.loads(line) for line in spec.tracks_path.read_text().splitlines()]
    assert [line["frame_index"] for line in lines] == list(range(N))
    rows = [row for _, row in tracks_rows(spec.tracks_path)]
    assert rows and all(0 <= x1 < x2 <= 64 and 0 <= y1 < y2 <= 48 for x1, y1, x2, y2 in (r["bbox"] for r in rows))
    kinds = {r["frame_index"]: r["kind"] for r in rows}
    answered = [i for i in model.submitted if i in kinds]
    assert answered and all(kinds[i] == "detected" for i in answered)
    assert {r["kind"] for r in rows if r["frame_index"] not in model.submitted} == {"predicted"}
    assert not any(line["tracks"] for line in lines[-5:])  # the car is gone
    [appeared] = [e for e in read_events(spec.events_path) if e["type"] == "object_appeared"]
    assert min(r["frame_index"] for r in rows if r["track_id"] >= 0) == appeared["frame_index"]


def test_a_takeover_logs_again_what_its_predecessor_delivered_but_does_not_deliver_it(tmp_path):
    def full_run(path, takeover=None):
        model, sinks = HeldModel(box), Events()
        model.released.set()
        store = EventStore(path.with_suffix(".db"))
        run = SourceRun(SourceSpec("mem", path, db_path=store.path), config(), MemoryReader(), model,
                        shared=[sinks], store=store, takeover=takeover)
        stats = run.run(threading.Event())
        return stats, read_events(path), [e.type for e in sinks.events], query(store.path)

    _, logged, delivered, stored = full_run(tmp_path / "first.jsonl")
    assert [e["type"] for e in logged] == delivered == ["object_appeared", "object_left"] and len(stored) == 2
    stats, again, delivered, stored = full_run(tmp_path / "second.jsonl", Takeover(replay=1))
    assert [e["type"] for e in again] == ["object_appeared", "object_left"]  # the log is whole
    assert delivered == ["object_left"] and [e["type"] for e in stored] == ["object_left"]
    assert stats.events == 1


def test_a_camera_takeover_continues_the_log_with_fresh_track_ids(tmp_path):
    log = tmp_path / "cam.jsonl"
    log.write_text('{"type": "object_appeared", "track_id": 6}\n')
    model = HeldModel(box)
    model.released.set()
    reader = MemoryReader(live=True, pace_s=0.005)
    run = SourceRun(SourceSpec("mem", log), config(), reader, model, takeover=Takeover(append=True, first_track_id=7))
    run.run(threading.Event())
    events = read_events(log)
    assert events[0] == {"type": "object_appeared", "track_id": 6}
    ids = {e["track_id"] for e in events[1:] if e.get("track_id") is not None}
    assert ids and min(ids) >= 7 and run.max_track_id == max(ids)


def test_a_bug_in_a_stage_ends_the_run_with_its_cause_kept(tmp_path):
    def broken(index):
        raise ZeroDivisionError("a bug")

    model = HeldModel(broken)
    model.released.set()
    run = SourceRun(SourceSpec("mem", tmp_path / "e.jsonl"), config(), MemoryReader(), model)
    stats = run.run(threading.Event())
    assert "mem: ZeroDivisionError: a bug" in str(stats.error)
    assert isinstance(stats.error.__cause__, ZeroDivisionError) and stats.state == "ended"


def test_stats_are_copies_that_other_threads_cannot_change(tmp_path):
    run = SourceRun(SourceSpec("mem", tmp_path / "e.jsonl"), config(), MemoryReader(), HeldModel())
    copy = run.stats()
    copy.frames, copy.event_counts["x"] = 99, 1
    assert run.stats().frames == 0 and run.stats().event_counts == {}


@pytest.mark.parametrize("live", [False, True])
def test_the_model_gets_the_keyframes_the_sampler_chooses(tmp_path, live):
    model = HeldModel()
    model.released.set()
    frames = Frames()
    reader = MemoryReader(live=live, pace_s=0.005)  # a camera in real time: the model keeps up, none is skipped
    run = SourceRun(SourceSpec("mem", tmp_path / "e.jsonl"), config(), reader, model, shared=[frames])
    run.run(threading.Event())
    assert model.submitted == list(range(0, N, 5)) and frames.count == N


class Resized(MemoryReader):
    """A camera that comes back at 96x72 from frame `at` on (reconnected at another resolution)."""

    def __init__(self, at: int, **kwargs) -> None:
        super().__init__(live=True, **kwargs)
        self.at = at

    def frames(self, stop=None):
        import numpy as np

        for frame in super().frames(stop):
            if frame.index >= self.at:
                image = np.full((72, 96, 3), frame.index % 256, np.uint8)
                image.setflags(write=False)
                frame.image = image
            yield frame


def test_a_camera_back_at_another_size_with_a_keyframe_in_flight_starts_its_tracking_over(tmp_path):
    """The keyframe in flight was asked in the old size's pixels: it is let go, the tracks end
    (`source_restarted`) and the car is tracked on at the new size with a new id. Before, its answer reached
    the new tracking, which had never looked at it (KeyError), and the camera was lost."""
    class HeldFrom(HeldModel):
        def submit(self, keyframe):
            if keyframe.frame.index < 25:
                future = Future()
                future.set_result(self.detector.detect([keyframe])[0])
                self.submitted.append(keyframe.frame.index)
                return future
            return super().submit(keyframe)

    model = HeldFrom(box)
    reader = Resized(at=30, pace_s=0.01)
    cfg = config().model_copy(update={"tracker": config().tracker.model_copy(update={"min_hits": 1})})
    run = SourceRun(SourceSpec("mem", tmp_path / "e.jsonl"), cfg, reader, model)
    thread, _, out = start(run)
    assert wait_for(lambda: reader.taken >= 40, 5)
    model.released.set()
    thread.join(10)
    assert out["stats"].error is None and out["stats"].frames == N
    events = read_events(tmp_path / "e.jsonl")
    left = [e for e in events if e["type"] == "object_left"]
    assert left[0]["reason"] == "source_restarted" and left[0]["frame_index"] < 30
    appeared = [(e["track_id"], e["frame_index"]) for e in events if e["type"] == "object_appeared"]
    assert appeared[0][0] == 0 and appeared[1][0] == 1 and appeared[1][1] >= 30, appeared


def test_a_camera_switched_off_sends_no_keyframes_ends_its_tracks_and_starts_over_when_back_on(tmp_path):
    """Home Assistant's detect switch: off, the tracks end at once (`detect_off`) and no keyframe goes to the model;
    on again, the car is found again under a new id. Recording and snapshots switches are read by their stages."""
    from streamer.outputs.switches import Switches

    cfg = config().model_copy(update={"tracker": config().tracker.model_copy(update={"min_hits": 1})})
    switches = Switches(cfg)

    class Switching(MemoryReader):  # the switch turned from outside, between two frames
        def frames(self, stop=None):
            for frame in super().frames(stop):
                if frame.index in (20, 40):
                    switches.set("mem", "detect", frame.index == 40)
                yield frame

    model = HeldModel(box)
    model.released.set()
    spec = SourceSpec("mem", tmp_path / "e.jsonl", tracks_path=tmp_path / "t.jsonl")
    run = SourceRun(spec, cfg, Switching(live=True, pace_s=0.005), model, switches=switches)
    assert run.run(threading.Event()).error is None
    assert model.submitted and not [i for i in model.submitted if 20 <= i < 40]
    assert any(i >= 40 for i in model.submitted)
    events = read_events(spec.events_path)
    left = [e for e in events if e["type"] == "object_left"]
    assert left[0]["reason"] == "detect_off" and left[0]["track_id"] == 0 and left[0]["frame_index"] < 20
    appeared = [(e["track_id"], e["frame_index"]) for e in events if e["type"] == "object_appeared"]
    assert appeared[0][0] == 0 and appeared[1][0] == 1 and appeared[1][1] >= 40, appeared
    lines = {row["frame_index"]: row["tracks"] for row in map(json.loads, spec.tracks_path.read_text().splitlines())}
    assert not any(lines[i] for i in range(20, 40))  # no boxes while detection is off
    assert "snapshots" not in switches.names and not switches.set("mem", "snapshots", True)  # not configured
    assert not switches.on("mem", "snapshots")


def test_a_camera_with_nothing_moving_and_no_track_sends_still_keyframes(tmp_path):
    """A still picture with nothing on it: its keyframes are marked still (they wait behind other cameras'); once
    the model finds something there, the camera holds a track and its keyframes are not still any more."""
    class Still(MemoryReader):
        def frames(self, stop=None):
            for frame in super().frames(stop):
                frame.image = np.full((48, 64, 3), 90, np.uint8)
                yield frame

    class Recording(HeldModel):
        def submit(self, keyframe):
            self.marks.append((keyframe.frame.index, keyframe.still))
            return super().submit(keyframe)

    model = Recording(lambda i: box(i) if i >= 30 else [])
    model.marks = []
    model.released.set()
    cfg = config(scene_threshold=0.12)
    run = SourceRun(SourceSpec("mem", tmp_path / "e.jsonl"), cfg, Still(live=True, pace_s=0.005), model)
    stats = run.run(threading.Event())
    marks = dict(model.marks)
    assert marks[0] is False  # the first keyframe: nothing to compare with
    assert all(marks[i] for i in marks if 0 < i <= 30), marks  # still, nothing held
    assert not any(marks[i] for i in marks if i >= 40), marks  # a car found at 30: a track held
    assert stats.still_keyframes == sum(marks.values())


def test_a_still_cameras_waiting_keyframe_gives_way_to_the_frame_where_someone_appears(tmp_path):
    """The model is busy with another camera; this quiet camera's keyframe waits behind it (still). When a person
    walks in, that keyframe is taken back and the frame with the person goes instead: the model never spends a
    call on the empty picture, and the person is seen on the first keyframe after they came."""
    from streamer.model.worker import Worker

    released = threading.Event()

    class Busy(ScriptedDetector):
        def detect(self, keyframes):
            if keyframes[0].frame.source == "other":
                released.wait(10)  # another camera's long call
            return super().detect(keyframes)

    detector = Busy(lambda i: [("person", (20, 10, 40, 40), None)] if i >= 30 else [])
    worker = Worker(detector, max_batch=1, still_wait_s=30.0)
    worker.start()

    class Quiet(MemoryReader):  # an empty street; a person from frame 30 on
        def frames(self, stop=None):
            for frame in super().frames(stop):
                image = np.full((48, 64, 3), 90, np.uint8)
                if frame.index >= 30:
                    image[10:40, 20:40] = 250
                frame.image = image
                if frame.index == 3:  # the model gets busy with another camera's keyframe
                    worker.submit(Keyframe(Frame("other", 0, 0.0, time.time(), image), "<OD>"))
                if frame.index == 36:
                    released.set()
                yield frame

    from streamer.records import Frame

    cfg = config(scene_threshold=0.12).model_copy(update={"tracker": config().tracker.model_copy(
        update={"min_hits": 1})})
    run = SourceRun(SourceSpec("mem", tmp_path / "e.jsonl"), cfg, Quiet(live=True, pace_s=0.01), worker)
    try:
        stats = run.run(threading.Event())
    finally:
        worker.stop()
    answered = [i for call in detector.calls for i in call]
    assert answered[:3] == [0, 0, 30], answered  # its first keyframe, the other camera's, then the person's
    assert 5 not in answered and stats.still_keyframes >= 1
    [appeared] = [e for e in read_events(tmp_path / "e.jsonl") if e["type"] == "object_appeared"]
    assert appeared["frame_index"] == 30 and appeared["label"] == "person"
