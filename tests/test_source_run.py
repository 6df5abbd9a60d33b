"""The per-source run at its seam: an in-memory reader and a model whose answers the test releases, no video
files. Back-pressure for files, no queueing for cameras, and the takeover rules of a restarted run."""

import threading
import time
from concurrent.futures import Future
from fractions import Fraction

import numpy as np
import pytest

from streamer.config import Config
from streamer.reader import FrameQueue, Reader
from streamer.records import Frame, Keyframe, StreamInfo
from streamer.source_run import SourceRun, SourceSpec, Takeover
from streamer.store import EventStore, query
from streamer.worker import KeyframeModel
from tests.helpers import read_events
from tests.scripted import ScriptedDetector

N = 60


class MemoryReader(Reader):
    """N small frames at 25 fps from memory, `pace_s` apart (0: as fast as they are taken); counts how many the
    run has taken."""

    def __init__(self, live: bool = False, n: int = N, pace_s: float = 0.0) -> None:
        info = StreamInfo(source="mem", width=64, height=48, fps=Fraction(25), total_frames=None if live else n)
        super().__init__("mem", "mem", FrameQueue(4, drop_oldest=live), info=info)
        self.live = live
        self.state = "up" if live else "reading"
        self.n = n
        self.pace_s = pace_s
        self.taken = 0

    def start(self) -> None:
        pass

    def frames(self, stop=None):
        for i in range(self.n):
            if stop is not None and stop.is_set():
                return
            self.taken = i + 1
            time.sleep(self.pace_s)
            yield Frame("mem", i, i / 25, time.time(), np.zeros((48, 64, 3), np.uint8))


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
            try:
                [result] = self.detector.detect([keyframe])
            except Exception as exc:  # delivered to whoever waits, as the Worker does
                future.set_exception(exc)
            else:
                future.set_result(result)

        threading.Thread(target=answer, daemon=True).start()
        return future


class Frames:
    """A frame sink: the indices of the annotated frames, in the order they came out."""

    def __init__(self) -> None:
        self.seen: list[int] = []
        self.count = 0

    def frame(self, source, image, tracks) -> None:
        self.seen.append(self.count)
        self.count += 1


class Events:
    def __init__(self) -> None:
        self.events = []

    def event(self, event) -> None:
        self.events.append(event)


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
    run = SourceRun(SourceSpec("mem", tmp_path / "e.jsonl"), config(), reader, model, frame_sinks=[frames])
    thread, _, out = start(run)
    time.sleep(0.5)
    # The model has answered nothing: the run holds a full line of frames and reads no further.
    assert reader.taken == 12 and frames.count == 0 and model.submitted == [0, 5, 10]
    model.released.set()
    thread.join(10)
    assert out["stats"].error is None and out["stats"].frames == N == frames.count and frames.seen == list(range(N))
    assert out["stats"].keyframes == N // 5 and model.submitted == list(range(0, N, 5))


def test_a_camera_never_queues_keyframes_and_never_holds_frames(tmp_path):
    reader, model, frames = MemoryReader(live=True), HeldModel(box), Frames()
    run = SourceRun(SourceSpec("mem", tmp_path / "e.jsonl"), config(), reader, model, frame_sinks=[frames])
    thread, _, out = start(run)
    thread.join(10)  # every frame goes out while the first keyframe is still with the model
    assert frames.count == N and model.submitted == [0]
    model.released.set()
    assert out["stats"].keyframes == 1 and out["stats"].frames == N


def test_a_takeover_logs_again_what_its_predecessor_delivered_but_does_not_deliver_it(tmp_path):
    def full_run(path, takeover=None):
        model, sinks = HeldModel(box), Events()
        model.released.set()
        store = EventStore(path.with_suffix(".db"))
        run = SourceRun(SourceSpec("mem", path, db_path=store.path), config(), MemoryReader(), model,
                        event_sinks=[sinks], store=store, takeover=takeover)
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
    run = SourceRun(SourceSpec("mem", tmp_path / "e.jsonl"), config(), reader, model, frame_sinks=[frames])
    run.run(threading.Event())
    assert model.submitted == list(range(0, N, 5)) and frames.count == N
