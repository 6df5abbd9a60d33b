"""A camera's faults are the camera's: whatever breaks on its path (a freeze whose decoder flush has no times, a
bug, an output that throws) is a `source_down` naming it and a reconnect, never the run's end, and the other
cameras never notice. Against the real RTSP server (Debian's GStreamer), as the CLI runs it where it can."""

import json
import math
import socket
import sqlite3
import struct
import subprocess
import sys
import threading
import time

import pytest

from streamer.config import Config
from streamer.outputs import Output
from streamer.pipeline import SourceSpec
from tests.helpers import OFFLINE, ROOT, probe_video, read_events
from tests.rtsp_server import LIVE, RtspServer, free_port, require_gstreamer, wait_for
from tests.test_live import FAST_LIVE, Running

pytestmark = pytest.mark.live


@pytest.fixture(autouse=True)
def _gstreamer():
    require_gstreamer()


def strict_events(path) -> list[dict]:
    """Every line of an event log as a strict JSON parser reads it (jq, jsonschema): NaN and Infinity refused."""
    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    return [json.loads(line, parse_constant=refuse) for line in path.read_text().splitlines()]


def test_a_camera_frozen_for_seconds_goes_down_and_up_and_every_time_stays_finite(tiny_od, tmp_path,
                                                                                   event_validator):
    """The issue's run: the server stopped (SIGSTOP) mid-stream for longer than the read timeout, then let go. The
    frames its decoder is flushed of have no time (PyAV: NaN); none may reach the log, the store or the clock."""
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps({"live": FAST_LIVE, "sampler": {"every_n_frames": 5, "max_fps": None}}))
    log, db = tmp_path / "e.jsonl", tmp_path / "s.db"
    with RtspServer() as server:
        proc = subprocess.Popen([sys.executable, "-m", "streamer", "run", f"cam={server.url()}", "--model",
                                 str(tiny_od), "--config", str(config), "--db", str(db), "--events", str(log),
                                 "--no-video", "--duration", "16"], cwd=ROOT, env=OFFLINE, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert wait_for(lambda: log.exists() and "object_appeared" in log.read_text(), 40)
            server.freeze()
            time.sleep(5)
            server.thaw()
            out, err = proc.communicate(timeout=60)
        finally:
            server.thaw()
            proc.kill()
    assert proc.returncode == 0, err
    events = strict_events(log)
    for event in events:
        event_validator.validate(event)
    types = [e["type"] for e in events]
    assert "source_down" in types and "source_up" in types[types.index("source_down"):], types
    pts = [e["pts"] for e in events]
    assert all(math.isfinite(p) for p in pts) and pts == sorted(pts)
    with sqlite3.connect(db) as store:
        assert store.execute("SELECT count(*) FROM events").fetchone()[0] == len(events)
    assert "Traceback" not in err


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
    # The first fault keeps the tracks; the second ends them and gives the car a new id, never an old one.
    left = [e for e in events_a if e["type"] == "object_left"]
    assert left[0]["reason"] == "source_restarted"
    appeared = [e["track_id"] for e in events_a if e["type"] == "object_appeared"]
    assert len(appeared) >= 2 and appeared == sorted(set(appeared))


class Watcher:
    """An MJPEG client on its own thread: `read` counts the JPEGs it gets; `hang_up` goes away mid-stream with an
    RST; `stall` never reads (a browser tab in the background), so the server's writes to it block."""

    def __init__(self, port: int, mode: str = "read") -> None:
        self.frames, self.mode = 0, mode
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        if mode == "stall":
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.sendall(b"GET /sources/cam/mjpeg HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        if self.mode == "stall":
            return
        seen = b""
        try:
            while data := self.sock.recv(65536):
                seen = seen[-16:] + data
                self.frames += (seen.count(b"--frame\r\n"))
                seen = seen[-16:].replace(b"--frame\r\n", b"")
                if self.mode == "hang_up" and self.frames >= 3:
                    self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.sock.close()
                    return
        except OSError:
            pass


def test_many_watchers_slow_and_gone_ones_neither_touch_the_camera_nor_delay_the_stop(tiny_od, tmp_path):
    """Three tabs on one camera's live view ended the run within seconds (its annotator drawn from the HTTP
    threads and the video writer at once). Now: ten watchers, three that hang up mid-frame, two that never read,
    three half-sent requests (slowloris); the run, its video and its recording go on, and it ends at --duration."""
    port = free_port()
    video = tmp_path / "cam.mp4"
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps({"live": FAST_LIVE, "sampler": {"every_n_frames": 3, "max_fps": None}}))
    with RtspServer() as server:
        started = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "streamer", "run", f"cam={server.url()}", "--model",
                                 str(tiny_od), "--config", str(config), "--out-video", str(video), "--events",
                                 str(tmp_path / "e.jsonl"), "--http", f"127.0.0.1:{port}", "--duration", "14"],
                                cwd=ROOT, env=OFFLINE, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert wait_for(lambda: (tmp_path / "e.jsonl").exists(), 40)
            watchers = [Watcher(port) for _ in range(10)] + [Watcher(port, "hang_up") for _ in range(3)]
            watchers += [Watcher(port, "stall") for _ in range(2)]
            slow = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
            for sock in slow:
                sock.sendall(b"GET /sources/cam/mjpeg HTTP/1.1\r\nHost: 1")
            out, err = proc.communicate(timeout=60)
        finally:
            proc.kill()
    took = time.monotonic() - started
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "error" not in err, err
    assert took < 14 + 25  # the model's load, then --duration: no watcher holds the stop
    assert all(w.frames >= 10 for w in watchers[:10]), [w.frames for w in watchers]
    assert probe_video(video)["count"] >= 100  # the camera's video went on while they watched
