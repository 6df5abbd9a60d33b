"""Live cameras against a real RTSP server (Debian's GStreamer): drops, hangs, refusals, several sources."""

import json
import threading
import time

import pytest

from streamer.config import Config
from streamer.outputs.protocol import Output
from streamer.pipeline.local import Pipeline, SourceSpec
from tests.helpers import read_events, strict_json
from tests.rtsp_server import LIVE, RtspServer, SilentServer, free_port, require_gstreamer, wait_for
from tests.scripted import ScriptedDetector

pytestmark = pytest.mark.live

FAST_LIVE = {"open_timeout_s": 2.0, "read_timeout_s": 2.0, "backoff_initial_s": 0.2, "backoff_max_s": 1.0}


@pytest.fixture(autouse=True)
def _gstreamer():
    require_gstreamer()


class Running:
    """A pipeline on a background thread, stopped (bounded) at the end of the test."""

    def __init__(self, specs, config=None, script=lambda i: [], shared=()):
        config = config or Config.model_validate({"live": FAST_LIVE})
        self.pipeline = Pipeline(config, lambda: ScriptedDetector(script), shared)
        self.result = {}
        self.thread = threading.Thread(target=self._run, args=(specs,), daemon=True)
        self.thread.start()
        assert wait_for(lambda: self.pipeline.runs and all(r.stats().state != "starting" for r in self.pipeline.runs), 15)

    def _run(self, specs):
        try:
            self.result["stats"] = self.pipeline.run_many(specs)
        except Exception as exc:
            self.result["error"] = exc

    def stats(self, i=0):
        return self.pipeline.runs[i].stats()

    def stop(self, within=10.0):
        started = time.monotonic()
        self.pipeline.stop()
        self.thread.join(timeout=within)
        assert not self.thread.is_alive(), "pipeline did not stop in time"
        return time.monotonic() - started


def test_server_killed_then_restarted_gives_down_then_up_and_frames_again(tmp_path, event_validator):
    log = tmp_path / "cam.jsonl"
    server = RtspServer().start()
    run = Running([SourceSpec(server.url(), log, tmp_path / "cam.mp4", name="cam")])
    try:
        assert wait_for(lambda: run.stats().frames >= 25, 15)
        server.kill()
        assert wait_for(lambda: any(e["type"] == "source_down" for e in read_events(log)), 10)
        before = run.stats().frames
        server.start()
        # Frames again within the backoff cap (1 s) plus a few seconds.
        assert wait_for(lambda: any(e["type"] == "source_up" for e in read_events(log)), 1.0 + 6)
        assert wait_for(lambda: run.stats().frames >= before + 25, 5)
    finally:
        run.stop()
        server.kill()
    events = read_events(log)
    kinds = [e["type"] for e in events if e["type"].startswith("source_")]
    assert kinds[:2] == ["source_down", "source_up"]
    up = next(e for e in events if e["type"] == "source_up")
    down = next(e for e in events if e["type"] == "source_down")
    assert up["gap_s"] > 0 and up["source"] == "cam"
    assert up["pts"] >= down["pts"] + up["gap_s"] - 0.5  # media time kept going through the outage
    for event in events:
        event_validator.validate(event)
    assert "error" not in run.result


def test_frozen_server_is_detected_within_the_read_timeout_and_recovers(tmp_path):
    log = tmp_path / "cam.jsonl"
    with RtspServer() as server:
        run = Running([SourceSpec(server.url(), log, None)])
        try:
            assert wait_for(lambda: run.stats().frames >= 25, 15)
            server.freeze()
            frozen_at = time.monotonic()
            took = wait_for(lambda: any(e["type"] == "source_down" for e in read_events(log)), 10)
            assert took is not None and time.monotonic() - frozen_at <= 2.0 + 1.5  # read timeout 2 s
            server.thaw()
            assert wait_for(lambda: any(e["type"] == "source_up" for e in read_events(log)), 10)
            frames = run.stats().frames
            assert wait_for(lambda: run.stats().frames >= frames + 10, 5)
        finally:
            server.thaw()
            run.stop()


def test_refused_and_silent_servers_are_retried_without_hanging(tmp_path):
    silent = SilentServer()
    refused = f"rtsp://127.0.0.1:{free_port()}/cam"
    logs = [tmp_path / "refused.jsonl", tmp_path / "silent.jsonl"]
    try:
        run = Running([SourceSpec(refused, logs[0], None, name="refused"),
                       SourceSpec(f"rtsp://127.0.0.1:{silent.port}/cam", logs[1], None, name="silent")])
        assert wait_for(lambda: run.stats(0).reconnects >= 2 and run.stats(1).reconnects >= 1, 15)
        assert run.stop() < 5.0
    finally:
        silent.close()
    for log in logs:
        downs = [e for e in read_events(log) if e["type"] == "source_down"]
        assert len(downs) == 1 and downs[0]["reason"]
    assert "error" not in run.result


def test_one_dead_camera_does_not_slow_the_other(tmp_path):
    with RtspServer() as a, RtspServer() as b:
        run = Running([SourceSpec(a.url(), tmp_path / "a.jsonl", None, name="a"),
                       SourceSpec(b.url(), tmp_path / "b.jsonl", None, name="b")])
        try:
            assert wait_for(lambda: run.stats(0).frames >= 25 and run.stats(1).frames >= 25, 15)
            a.freeze()
            start_frames, started = run.stats(1).frames, time.monotonic()
            time.sleep(3.0)
            rate = (run.stats(1).frames - start_frames) / (time.monotonic() - started)
            assert rate >= 20, f"the healthy camera fell to {rate:.1f} fps"
        finally:
            a.thaw()
            run.stop()


def test_a_live_source_never_builds_latency_behind_a_slow_model(tmp_path):
    def slow(index):
        time.sleep(0.3)  # a model slower than real time
        return [("car", (10, 10, 60, 60), None)]

    with RtspServer() as server:
        run = Running([SourceSpec(server.url(), tmp_path / "cam.jsonl", None)], script=slow)
        try:
            assert wait_for(lambda: run.stats().frames >= 100, 20)
            assert run.stats().latency_ms < 300 + 3 * 40 + 200
            keyframes = run.stats().keyframes
            assert keyframes < run.stats().frames / 5  # keyframes were skipped, frames were not held back
        finally:
            run.stop()


def _cli(*args, timeout=60):
    import os
    import subprocess
    import sys

    from tests.helpers import ROOT

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "streamer", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_credentials_never_appear_in_output_events_or_file_names(tiny_od, tmp_path, capfd):
    from tests.helpers import streamer_here

    with RtspServer(user="admin:s3cret") as server:  # what FFmpeg itself prints included (captured at the fd)
        result = streamer_here(capfd, "run", server.url(credentials="admin:s3cret"), "--model", tiny_od, "--duration", "4",
                      "--config", _fast_config(tmp_path))
    assert result.returncode == 0, result.stderr
    written = [p for p in (tmp_path / "runs").rglob("*")]
    assert written, "no run folder was written"
    everything = result.stdout + result.stderr + "".join(str(p) for p in written)
    everything += "".join(p.read_text(errors="replace") for p in written if p.suffix == ".jsonl")
    assert "s3cret" not in everything and "admin" not in everything
    events = [json.loads(l) for p in written if p.suffix == ".jsonl" for l in p.read_text().splitlines()]
    assert events and all(e["source"] == server.url() for e in events)


def test_wrong_path_or_password_is_one_clear_line_without_the_password(tiny_od, tmp_path):
    with RtspServer(user="admin:s3cret") as server:
        for url in (server.url("/nope", "admin:s3cret"), server.url(credentials="admin:wrong")):
            result = _cli("run", url, "--model", tiny_od, "--config", _fast_config(tmp_path))
            lines = result.stderr.strip().splitlines()
            assert result.returncode == 1 and len(lines) == 1, result.stderr
            assert ("404" in lines[0] or "401" in lines[0]) and "s3cret" not in lines[0] and "wrong" not in lines[0]


def test_sigterm_while_the_camera_is_frozen_closes_outputs_within_seconds(tiny_od, tmp_path):
    import signal
    import subprocess
    import sys

    from tests.helpers import ROOT, probe_video

    from streamer.outputs.store import query

    video, log, db = tmp_path / "cam.mp4", tmp_path / "cam.jsonl", tmp_path / "cam.db"
    with RtspServer() as server:
        proc = subprocess.Popen([sys.executable, "-m", "streamer", "run", server.url(), "--model", str(tiny_od),
                                 "--out-video", str(video), "--events", str(log), "--db", str(db),
                                 "--config", str(_fast_config(tmp_path))],
                                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert wait_for(lambda: video.exists(), 30)
            time.sleep(3.0)  # about 75 frames
            server.freeze()
            time.sleep(0.5)
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=20)
            # The read timeout (2 s) and the flush; a loaded CI machine has taken 11 s, a hang takes forever.
            assert time.monotonic() - started < 15
        finally:
            server.thaw()
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 130
    assert probe_video(video)["count"] > 10
    for line in log.read_text().splitlines():
        json.loads(line)
    assert query(db) == read_events(log) != []  # the store holds exactly the log's events


def _fast_config(tmp_path):
    path = tmp_path / "live.yaml"
    live = ", ".join(f"{k}: {v}" for k, v in FAST_LIVE.items())
    path.write_text(f"live: {{{live}, status_interval_s: 1.0}}\noutput: {{dir: {tmp_path / 'runs'}}}\n")
    return path


def strict_events(path) -> list[dict]:
    return [strict_json(line) for line in path.read_text().splitlines()]


class Throws(Output):
    """A shared output that throws on the given frames of one camera, as an output with a bug would."""

    def __init__(self, source: str, on: set[int]) -> None:
        self.source, self.on, self.seen = source, on, 0

    def frame(self, shown) -> None:
        if shown.source == self.source:
            self.seen += 1
            if self.seen in self.on:
                raise RuntimeError(f"the output broke on frame {self.seen}")


def test_an_output_that_throws_is_that_cameras_reconnect_and_the_other_camera_never_notices(tmp_path,
                                                                                        event_validator):
    car = lambda i: [("car", (40.0, 40.0, 120.0, 120.0), None)]  # noqa: E731 - always there
    config = Config.model_validate({"live": FAST_LIVE, "sampler": {"every_n_frames": 5, "max_fps": None},
                                    "tracker": {"min_hits": 1}})
    throws = Throws("a", {40, 80})  # twice within a minute: the second starts a's tracking over
    logs = {name: tmp_path / f"{name}.jsonl" for name in "ab"}
    with RtspServer({"/a": LIVE, "/b": LIVE}) as server:
        run = Running([SourceSpec(server.url(f"/{n}"), logs[n], None, name=n) for n in "ab"], config, car, [throws])
        try:
            assert wait_for(lambda: sum(e["type"] == "source_up" for e in read_events(logs["a"])) >= 2, 40), \
                read_events(logs["a"])
            frames_b = run.stats(1).frames
            frames_a = run.stats(0).frames
            assert wait_for(lambda: run.stats(0).frames >= frames_a + 25, 10)
            assert wait_for(lambda: run.stats(1).frames >= frames_b + 25, 10)
        finally:
            run.stop()
    assert "error" not in run.result, run.result
    [a, b] = run.result["stats"]
    assert a.error is None and a.faults == 2 and b.faults == 0
    events_a, events_b = strict_events(logs["a"]), strict_events(logs["b"])
    for event in events_a + events_b:
        event_validator.validate(event)
    downs = [e for e in events_a if e["type"] == "source_down"]
    assert [d["reason"] for d in downs] == [f"internal error: RuntimeError: the output broke on frame {n}"
                                            for n in (40, 80)]
    assert not [e for e in events_b if e["type"].startswith("source_")]
    # The second fault ends the tracks (source_restarted) and the car comes back with a new id, never an old one.
    types = [e["type"] for e in events_a]
    restarted = next(i for i, e in enumerate(events_a) if e.get("reason") == "source_restarted")
    assert "object_appeared" in types[restarted:]
    appeared = [e["track_id"] for e in events_a if e["type"] == "object_appeared"]
    assert len(appeared) >= 2 and appeared == sorted(set(appeared))
