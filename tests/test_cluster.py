"""On a Ray cluster (a local head started as the README says, CPU only): the same outputs as one process, and
source and worker actors killed mid-run come back without losing or repeating events."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from streamer.config import Config
from streamer.outputs.sinks import tracks_rows
from streamer.pipeline.local import Pipeline, SourceSpec
from tests.brokers import Receiver
from tests.helpers import CLIP, ROOT, clip_times, probe_video, read_events, streamer, without_wall_time
from tests.rtsp_server import RtspServer, free_port, require_gstreamer, wait_for

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.ray

BIN = Path(sys.executable).parent
FAST_LIVE = {"open_timeout_s": 2.0, "read_timeout_s": 2.0, "backoff_initial_s": 0.2, "backoff_max_s": 1.0}
# Three sources and two workers on two CPUs.
CLUSTER = {"cpus_per_source": 0.25, "cpus_per_worker": 0.5, "max_restarts": 2}


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """`ray start --head` as the README has it, the test process joined as a driver; stopped at the end."""
    port = free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    start = subprocess.run([BIN / "ray", "start", "--head", f"--port={port}", "--num-cpus=2",
                            "--include-dashboard=false", "--disable-usage-stats"],
                           env=env, capture_output=True, text=True, timeout=120)
    assert start.returncode == 0, start.stderr
    # "auto": the cluster just started here, joined with the token the head wrote (~/.ray/auth_token).
    ray.init(address="auto", logging_level="WARNING")
    yield f"127.0.0.1:{port}"
    ray.shutdown()
    subprocess.run([BIN / "ray", "stop", "--force"], env=env, capture_output=True, timeout=120)


LONG = 300  # frames of the long clip


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory) -> Path:
    """The bundled clip twice over (12 s, 300 frames): long enough to kill an actor well before its end."""
    return clip_times(tmp_path_factory.mktemp("clips") / "long.mp4", LONG // 150)


def config_for(model: Path, **sections) -> Config:
    return Config.model_validate({"model": {"path": str(model)}, "live": FAST_LIVE, "cluster": CLUSTER,
                                  "output": {"dir": "unused"}, **sections})


def single_process(config: Config, specs, duration_s=None):
    from streamer.model.florence import Florence2Detector

    return Pipeline(config, lambda: Florence2Detector(config.model)).run_many(specs, duration_s=duration_s)


class OnRay:
    """A RayPipeline on a background thread, so a test can kill its actors mid-run."""

    def __init__(self, config: Config, specs, duration_s=None):
        from streamer.cluster import RayPipeline

        self.said: list[str] = []  # the driver's lines: the cluster, where each actor runs and moves to
        self.pipeline = RayPipeline(config, notify=self.said.append)
        self.result: dict = {}
        self.thread = threading.Thread(target=self._run, args=(specs, duration_s), daemon=True)
        self.thread.start()

    def _run(self, specs, duration_s):
        try:
            self.result["stats"] = self.pipeline.run_many(specs, duration_s=duration_s)
        except Exception as exc:
            self.result["error"] = exc

    def wait_frames(self, n: int, source: int = 0, within: float = 60.0) -> None:
        assert wait_for(lambda: self.pipeline.runs and self.pipeline.runs[source].stats().frames >= n, within), (
            f"source {source} never reached frame {n}: {self.result}")

    def join(self, within: float = 120.0):
        self.thread.join(timeout=within)
        assert not self.thread.is_alive(), "the Ray run did not end in time"
        assert "error" not in self.result, self.result.get("error")
        return self.result["stats"]


def cluster_is_free() -> bool:
    total, free = ray.cluster_resources(), ray.available_resources()
    return free.get("CPU", 0) == total.get("CPU")


def test_two_files_and_a_camera_on_ray_give_what_one_process_gives(ray_head, tiny_od, tmp_path, event_validator):
    require_gstreamer()
    config = config_for(tiny_od, cluster={**CLUSTER, "workers": 2})
    with RtspServer() as server:
        def specs(folder: Path):
            return [SourceSpec(str(CLIP), folder / "a.jsonl", folder / "a.mp4", name="a"),
                    SourceSpec(str(CLIP), folder / "b.jsonl", folder / "b.mp4", name="b"),
                    SourceSpec(server.url(), folder / "cam.jsonl", folder / "cam.mp4", name="cam")]

        local = single_process(config, specs(tmp_path / "one"), duration_s=8)
        remote = OnRay(config, specs(tmp_path / "ray"), duration_s=8).join()
    for name in ("a", "b"):
        one, many = read_events(tmp_path / "one" / f"{name}.jsonl"), read_events(tmp_path / "ray" / f"{name}.jsonl")
        assert [e["type"] for e in many] == ["object_appeared", "object_left"]
        assert without_wall_time(many) == without_wall_time(one)
        assert probe_video(tmp_path / "ray" / f"{name}.mp4")["count"] == 150
    assert [s.frames for s in remote[:2]] == [s.frames for s in local[:2]] == [150, 150]
    assert [s.keyframes for s in remote[:2]] == [s.keyframes for s in local[:2]]
    cam_one, cam_ray = read_events(tmp_path / "one" / "cam.jsonl"), read_events(tmp_path / "ray" / "cam.jsonl")
    assert [(e["type"], e["label"], e["bbox"]) for e in cam_ray] == [(e["type"], e["label"], e["bbox"]) for e in cam_one]
    assert remote[2].frames > 100 and probe_video(tmp_path / "ray" / "cam.mp4")["count"] == remote[2].frames
    for event in read_events(tmp_path / "ray" / "cam.jsonl"):
        event_validator.validate(event)
    assert wait_for(cluster_is_free, 10), "actors were left holding the cluster's CPUs"


@pytest.fixture(scope="module")
def reference(tiny_od, long_clip, tmp_path_factory):
    """The long clip in one process, every other frame a keyframe."""
    folder = tmp_path_factory.mktemp("reference")
    config = config_for(tiny_od, sampler={"every_n_frames": 2, "max_fps": None, "scene_threshold": None})
    single_process(config, [SourceSpec(str(long_clip), folder / "events.jsonl", None, name="long")])
    return config, read_events(folder / "events.jsonl")


def test_a_killed_source_actor_redoes_its_file_without_repeating_an_event(ray_head, long_clip, reference, tmp_path):
    config, expected = reference
    receiver = Receiver()
    try:
        config = config.model_copy(update={"webhooks": config.webhooks.model_copy(update={"urls": [receiver.url]}),
                                           "output": config.output.model_copy(update={"dir": tmp_path})})
        run = OnRay(config, [SourceSpec(str(long_clip), tmp_path / "events.jsonl", tmp_path / "out.mp4", name="long")])
        run.wait_frames(60)
        assert read_events(tmp_path / "events.jsonl"), "the first actor had logged nothing before the kill"
        ray.kill(run.pipeline.runs[0].handle, no_restart=False)
        [stats] = run.join()
        assert wait_for(lambda: len(receiver.requests) >= len(expected), 15)
        time.sleep(0.5)
        delivered = [json.loads(r["body"]) for r in receiver.requests]
    finally:
        receiver.close()
    assert without_wall_time(read_events(tmp_path / "events.jsonl")) == without_wall_time(expected)
    assert without_wall_time(delivered) == without_wall_time(expected), "an event was delivered twice or lost"
    assert stats.frames == LONG and probe_video(tmp_path / "out.mp4")["count"] == LONG
    assert "source actor restarted 1x" in " ".join(run.pipeline.status_lines())


def test_a_killed_worker_restarts_and_one_dead_for_good_hands_its_source_on_and_no_keyframe_is_lost(
        ray_head, long_clip, reference, tmp_path, event_validator):
    """Two sources, a worker each: worker-0 killed (Ray restarts it: its source notes `worker_restarted`),
    worker-1 killed for good (its source moves to worker-0: `worker_lost`, `moved_to`); no keyframe is lost."""
    config, expected = reference
    config = config.model_copy(update={"cluster": config.cluster.model_copy(update={"workers": 2})})
    run = OnRay(config, [SourceSpec(str(long_clip), tmp_path / f"{name}.jsonl", None, name=name) for name in "ab"])
    run.wait_frames(60, source=0)
    run.wait_frames(60, source=1)
    ray.kill(run.pipeline.workers[0].handle, no_restart=False)
    ray.kill(run.pipeline.workers[1].handle, no_restart=True)  # source b's own worker, gone for good
    stats = run.join()
    a, b = read_events(tmp_path / "a.jsonl"), read_events(tmp_path / "b.jsonl")
    restarted = [e for e in a if e["type"] == "worker_restarted"]
    assert [e["worker"] for e in restarted] == ["worker-0"]
    event_validator.validate(restarted[0])
    lost = [e for e in b if e["type"] == "worker_lost"]
    assert [(e["worker"], e["moved_to"]) for e in lost] == [("worker-1", "worker-0")]
    event_validator.validate(lost[0])

    def seen(events):  # what the video showed, whichever source's name it carries
        return [{k: v for k, v in e.items() if k != "source"} for e in without_wall_time(events)
                if not e["type"].startswith("worker_")]

    assert seen(a) == seen(expected) and seen(b) == seen(expected)
    assert [(s.frames, s.keyframes) for s in stats] == [(LONG, LONG // 2)] * 2
    assert "restarted 1x" in run.pipeline.status_lines()[0]


def test_the_readme_scale_out_command_runs_on_the_head(ray_head, tiny_od, tmp_path):
    # As the README has it, on this machine's head (2 CPUs: one source actor and one model worker, a CPU each).
    result = streamer("run", "--ray", "auto", "clips/street.mp4", "--model", tiny_od,
                      "--events", tmp_path / "events.jsonl", "--out-video", tmp_path / "annotated.mp4")
    assert result.returncode == 0, result.stderr
    assert "Ray cluster of 1 node (2 CPUs, 0 GPUs): 1 source actor, 1 model worker on CPU" in result.stderr
    assert "] source on node " in result.stderr
    assert "[worker-0] model worker on node" in result.stderr  # where each actor runs
    assert "frames 150 of 640x360" in result.stdout and "ray: [worker-0] up, keyframes 15" in result.stdout
    events = read_events(tmp_path / "events.jsonl")
    assert [e["type"] for e in events] == ["object_appeared", "object_left"]
    assert probe_video(tmp_path / "annotated.mp4")["count"] == 150
    # The source actor wrote the tracks of every frame beside the log, with the events' track.
    tracks = [row for _, row in tracks_rows(tmp_path / "events.tracks.jsonl")]
    assert {r["track_id"] for r in tracks if r["track_id"] >= 0} == {e["track_id"] for e in events}
    assert wait_for(cluster_is_free, 10), "the run left actors holding the cluster"


def test_more_than_the_cluster_can_place_is_one_line(ray_head, tiny_od, tmp_path):
    result = streamer("run", "--ray", "auto", f"a={CLIP}", f"b={CLIP}", "--model", tiny_od, "--no-video")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "streamer: error: the Ray cluster has 2 CPUs, but 2 sources x cluster.cpus_per_source 1 + 1 model workers "
        "x cluster.cpus_per_worker 1 need 3: lower those, or add nodes")


def test_an_offline_model_on_ray_is_one_line(ray_head, tmp_path):
    result = streamer("run", "--ray", "auto", CLIP, "--model", "nobody/not-cached", "--events", tmp_path / "e.jsonl",
                      "--no-video")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("streamer: error: model 'nobody/not-cached' is not in")
    assert "Traceback" not in result.stderr and not (tmp_path / "e.jsonl").exists()


def test_sigterm_on_the_driver_is_ctrl_c_closes_every_output_and_frees_the_cluster(ray_head, tiny_od, long_clip,
                                                                                    tmp_path):
    """SIGTERM, as a process manager or `timeout` sends it to the driver alone: Ray's own handler (exit 1, no
    summary) must not take it; Ctrl-C goes through the same handler."""
    log, video = tmp_path / "events.jsonl", tmp_path / "annotated.mp4"
    proc = subprocess.Popen([sys.executable, "-m", "streamer", "run", "--ray", "auto", long_clip, "--model", tiny_od,
                             "--events", log, "--out-video", video], cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert wait_for(lambda: read_events(log), 90), "no event was logged"
        os.kill(proc.pid, signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    frames = int(out.split("frames ")[1].split(" ")[0])
    assert 0 < frames < LONG and "(file, stopped early)" in out
    assert probe_video(video)["count"] == frames  # the MP4 was finalised, every frame read is in it
    assert [e["type"] for e in read_events(log)][-1] == "object_left"
    assert wait_for(cluster_is_free, 10)


class _Handle:
    """A model worker actor as a source's RemoteModel sees it: `silent` answers nothing, not even a ping (an
    actor Ray cannot restart because its node is gone); else every call is answered at once."""

    def __init__(self, silent: bool):
        import supervision as sv
        from concurrent.futures import Future

        self.calls = 0

        class Ref:
            def __init__(self, value=None):
                self._future = Future()
                if not silent:
                    self._future.set_result(value)

            def future(self):
                return self._future

        handle = self

        class Detect:
            def remote(self, wires):
                handle.calls += 1
                return Ref(([(sv.Detections.empty(), None) for _ in wires], "incarnation-1"))

        class Stats:
            def remote(self):
                return Ref({"incarnation": "incarnation-1", "keyframes": 0})

        self.detect, self.stats = Detect(), Stats()


def test_a_worker_silent_past_restart_timeout_s_loses_its_keyframes_to_the_next():
    """cluster.restart_timeout_s: no hang behind a worker that stays RESTARTING; the move is said once
    (worker_lost, moved_to), and with no worker left the keyframe fails instead of waiting forever."""
    import numpy as np

    from streamer.cluster.model_worker import RemoteModel
    from streamer.errors import StreamerError
    from streamer.records import Frame, Keyframe

    def keyframe(i):
        return Keyframe(Frame("cam", i, i / 25, 0.0, np.zeros((36, 64, 3), np.uint8)), "<OD>")

    lost, alive = _Handle(silent=True), _Handle(silent=False)
    model = RemoteModel([lost, alive], first=0, shrink=False, restart_timeout_s=0.5)
    started = time.monotonic()
    first = model.submit(keyframe(0)).result(timeout=10)
    assert 0.5 <= time.monotonic() - started < 5 and lost.calls == 1 and alive.calls == 1
    assert first.worker_change == ("worker_lost", {"worker": "worker-0", "moved_to": "worker-1"})
    assert model.submit(keyframe(1)).result(timeout=10).worker_change is None and lost.calls == 1  # stays moved
    alone = RemoteModel([_Handle(silent=True)], shrink=False, restart_timeout_s=0.3)
    with pytest.raises(StreamerError, match="every model worker of the cluster is gone"):
        alone.submit(keyframe(0)).result(timeout=10)
