"""A chaos run: `streamer run` on several cameras, as a user runs it (recording, retention, the store, MQTT with
Home Assistant discovery, a webhook, the live view with watchers coming and going), while seeded random faults
hit every part; then what came out is checked. `bench/chaos.py` runs an accelerated day of it; the test suite a
short one (`tests/test_chaos.py`).

Cameras: GStreamer RTSP test servers, each behind a `FaultProxy`, and one HTTP MPEG-TS camera that loops a clip
(its pts jump back at every loop; a stream that ends flushes the decoder, whose frames have no time). Faults:
each class of the proxy (stall, half-open, reset, trickle, flipped bytes, refused), the server frozen (SIGSTOP)
or restarted at another resolution, a camera that answers RTSP but sends no video, the broker and the webhook
receiver down for a while, and the disk under the recordings nearly full (a small tmpfs, where it can be mounted).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import av

from tests.brokers import Mosquitto, Subscriber
from tests.faultproxy import FaultProxy
from tests.helpers import CLIP, OFFLINE, ROOT, SCHEMA, strict_json
from tests.rtsp_server import RtspServer, free_port, wait_for

LIVE = {"open_timeout_s": 3.0, "read_timeout_s": 3.0, "backoff_initial_s": 0.5, "backoff_max_s": 4.0}
RECOVER_S = LIVE["backoff_max_s"] + 5  # a camera is up again this soon after its fault ended
PROXY = ("stall", "blackhole", "reset", "trickle", "flip", "refuse")
SERVER = ("freeze", "resize", "mute")
CAMERA_FAULTS = PROXY + SERVER
PROCESS_FAULTS = ("broker", "webhook", "disk")
_SIZES = ((320, 240), (352, 288), (256, 192))


def pattern(width: int, height: int, mute: bool = False) -> str:
    """A live test pattern; `mute`: the server answers RTSP but its video never reaches the payloader."""
    return (f"videotestsrc is-live=true pattern=ball ! video/x-raw,width={width},height={height},framerate=25/1 ! "
            "x264enc tune=zerolatency speed-preset=ultrafast key-int-max=25 ! "
            + ("valve drop=true ! " if mute else "") + "rtph264pay name=pay0 pt=96 config-interval=1")


class TsCamera:
    """An HTTP camera streaming MPEG-TS: the bundled clip again and again at its real rate (times `speed`) in one
    response without a length, so its pts go back to the start at every loop; after `loops` (None: never) the
    response ends, cut as a dropped connection is."""

    def __init__(self, folder: Path, loops: int | None = None, speed: float = 1.0) -> None:
        self.ts = folder / "loop.ts"
        with av.open(str(CLIP)) as src, av.open(str(self.ts), "w", format="mpegts") as dst:
            out = dst.add_stream_from_template(src.streams.video[0])
            seconds = float(src.duration) / 1e6 if src.duration else 6.0
            for packet in src.demux(video=0):
                if packet.dts is not None:
                    packet.stream = out
                    dst.mux(packet)
        data = self.ts.read_bytes()
        rate = len(data) / seconds * speed
        camera = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "video/mp2t")
                self.end_headers()
                try:
                    played = 0
                    while not camera.closed and (loops is None or played < loops):
                        played += 1
                        for i in range(0, len(data), 18800):
                            self.wfile.write(data[i:i + 18800])
                            time.sleep(18800 / rate)
                except OSError:
                    return

        self.closed = False
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.closed = True
        self.httpd.shutdown()
        self.httpd.server_close()


class Hook:
    """A webhook receiver on a fixed port that can go away (its port closed: connections refused) and come back;
    keeps every body it was given."""

    def __init__(self) -> None:
        self.port = free_port()
        self.bodies: list[bytes] = []
        self.httpd: ThreadingHTTPServer | None = None
        self.up()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def up(self) -> None:
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                hook.bodies.append(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        ThreadingHTTPServer.allow_reuse_address = True
        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def down(self) -> None:
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None


@dataclass
class Camera:
    name: str
    proxy: FaultProxy
    server: RtspServer | TsCamera
    size: tuple[int, int] = _SIZES[0]

    @property
    def url(self) -> str:
        if isinstance(self.server, TsCamera):
            return f"http://127.0.0.1:{self.proxy.port}/cam.ts"
        return self.proxy.url("/live")


@dataclass
class Fault:
    kind: str
    target: str  # a camera's name, or "process"
    start: float  # wall clock
    seconds: float
    end: float = 0.0
    recovered_s: float | None = None  # for a camera: how long after the end it was up with frames again


@dataclass
class Sample:
    at: float
    rss_mb: float
    files: int
    threads: int


@dataclass
class Report:
    faults: list[Fault] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    returncode: int | None = None
    alive_to_the_end: bool = False
    stderr: str = ""
    stdout: str = ""
    late_s: float = 0.0  # how long after its --duration the run ended (watchers, stalled ones included, connected)
    problems: list[str] = field(default_factory=list)
    figures: dict = field(default_factory=dict)
    steps: list[tuple[float, float]] = field(default_factory=list)  # the wall clock's steps: (wall time, seconds)

    recover_s: float = RECOVER_S

    def lines(self) -> list[str]:
        f = self.figures
        by_kind = Counter(fault.kind for fault in self.faults)
        lost = [x for x in self.faults if x.target != "process" and x.recovered_s is None]
        out = [f"faults injected {len(self.faults)}: " + ", ".join(f"{k} {n}" for k, n in sorted(by_kind.items())),
               f"faults survived {len(self.faults) - len(lost)} of {len(self.faults)} (process alive: "
               f"{self.alive_to_the_end}, exit {self.returncode}; every camera up with frames within "
               f"{self.recover_s:g} s of its fault's end)",
               "recovery after a fault's end (s): " + _spread([x.recovered_s for x in self.faults
                                                                if x.recovered_s is not None])]
        out.append(f"ended {self.late_s:+.1f} s after its --duration, with every watcher still connected")
        if self.steps:
            out.append("the wall clock stepped " + ", ".join(f"{s:+.1f} s" for _, s in self.steps) + " (NTP)")
        out += [f"{k}: {v}" for k, v in f.items()]
        if self.samples:
            first, last = self.samples[0], self.samples[-1]
            out.append(f"rss_mb start {first.rss_mb:.0f} end {last.rss_mb:.0f} "
                       f"(growth {100 * (last.rss_mb / first.rss_mb - 1):+.1f}%), open files {first.files} -> "
                       f"{last.files}, threads {first.threads} -> {last.threads}")
        out.append(f"tracebacks on stderr: {self.stderr.count('Traceback')}")
        out.append("problems: " + ("none" if not self.problems else "; ".join(self.problems[:20])))
        return out


def _spread(values: list[float]) -> str:
    if not values:
        return "-"
    values = sorted(values)
    return (f"median {values[len(values) // 2]:.1f}, p95 {values[min(len(values) - 1, int(len(values) * 0.95))]:.1f}"
            f", max {values[-1]:.1f}")


class Chaos:
    """`cameras` RTSP cameras (and one MPEG-TS one), `seconds` of run, a fault every `every_s` per camera on
    average (each lasting up to `longest_s`), process-wide faults every `process_every_s`."""

    def __init__(self, folder: Path, model: Path, cameras: int = 2, seconds: float = 60.0, every_s: float = 15.0,
                 longest_s: float = 30.0, process_every_s: float = 60.0, seed: int = 0, watchers: int = 2,
                 disk_mb: int = 256, sample_after_s: float = 20.0, recover_s: float = RECOVER_S) -> None:
        self.folder, self.model = Path(folder), Path(model)
        self.n, self.seconds, self.every_s, self.longest_s = cameras, seconds, every_s, longest_s
        self.process_every_s, self.watchers, self.disk_mb = process_every_s, watchers, disk_mb
        self.sample_after_s = sample_after_s
        self.recover_s = recover_s  # the bar: up again with frames this soon after a fault's end
        self.random = random.Random(seed)
        self.seed = seed
        self.report = Report(recover_s=recover_s)
        self._lock = threading.Lock()
        self._done = threading.Event()

    # -- the run ----------------------------------------------------------------------------------------------

    def run(self) -> Report:
        self.folder.mkdir(parents=True, exist_ok=True)
        data = self.folder / "data"
        data.mkdir(exist_ok=True)
        self.disk = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={self.disk_mb}m", "tmpfs", str(data)],
                                   capture_output=True).returncode == 0
        broker = Mosquitto(self.folder / "mosquitto").start()
        subscriber = Subscriber(broker.port, "#")
        hook = Hook()
        cams: list[Camera] = []
        proc = None
        try:
            for i in range(self.n):
                server = RtspServer({"/live": pattern(*_SIZES[0])}).start()
                cams.append(Camera(f"cam{i}", FaultProxy(server.port, seed=self.seed * 100 + i), server))
            ts = TsCamera(self.folder)
            cams.append(Camera(f"ts{self.n}", FaultProxy(ts.port, seed=self.seed * 100 + self.n), ts))
            self.cams = cams
            port = free_port()
            self.http = f"http://127.0.0.1:{port}"
            config = {
                "model": {"path": str(self.model)},
                "live": LIVE,
                "sampler": {"every_n_frames": 10, "max_fps": 2},
                "sources": [{"name": c.name, "url": c.url, "live": True} for c in cams],
                "output": {"dir": str(data / "runs"), "db": str(data / "store.db")},
                "record": {"segment_s": 4, "retain_gb": round(self.disk_mb / 4 / 1024, 4), "min_free_gb":
                           round(self.disk_mb / 8 / 1024, 4)},
                "mqtt": {"url": broker.url},
                "webhooks": {"urls": [hook.url], "backoff_max_s": 4, "timeout_s": 2},
                "http": {"listen": f"127.0.0.1:{port}", "metrics_public": True},
            }
            (self.folder / "chaos.yaml").write_text(json.dumps(config))
            with open(self.folder / "stdout.txt", "w") as stdout, open(self.folder / "stderr.txt", "w") as stderr:
                proc = subprocess.Popen([sys.executable, "-m", "streamer", "run", "--config",
                                         str(self.folder / "chaos.yaml"), "--duration", str(self.seconds)], cwd=ROOT,
                                        env=OFFLINE, stdout=stdout, stderr=stderr, start_new_session=True)
            self.proc = proc
            if wait_for(lambda: self._metrics().get("up") and all(self._metrics()["up"].get(c.name) for c in cams),
                        90) is None:
                raise RuntimeError(f"the cameras did not come up: {self._metrics()}")
            self.started, self.started_mono = time.time(), time.monotonic()
            threads = [threading.Thread(target=self._camera_faults, args=(cam, i), daemon=True)
                       for i, cam in enumerate(cams)]
            threads += [threading.Thread(target=self._process_faults, args=(broker, hook), daemon=True),
                        threading.Thread(target=self._watch, daemon=True),
                        threading.Thread(target=self._sample, daemon=True),
                        threading.Thread(target=self._wall_clock, daemon=True)]
            for thread in threads:
                thread.start()
            end = time.monotonic() + self.seconds + 60
            while proc.poll() is None and time.monotonic() < end:
                time.sleep(0.2)
            self.report.late_s = self._elapsed() - self.seconds
            self.report.alive_to_the_end = proc.poll() is not None and proc.returncode == 0
            self._done.set()
            for thread in threads:
                thread.join(timeout=self.longest_s + 30)
            self.report.returncode = proc.returncode
        finally:
            self._done.set()
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(10)
            time.sleep(2)  # what the broker and the hook still had in flight
            for cam in cams:
                cam.proxy.close()
                cam.server.thaw() if isinstance(cam.server, RtspServer) else None
                cam.server.kill() if isinstance(cam.server, RtspServer) else cam.server.close()
            self.mqtt = list(subscriber.messages)
            self.hooked = list(hook.bodies)
            subscriber.close()
            broker.stop()
            hook.down()
        try:
            self.report.stderr = (self.folder / "stderr.txt").read_text()
            self.report.stdout = (self.folder / "stdout.txt").read_text()
            self._check(data)
        finally:
            shutil.copytree(data / "runs", self.folder / "runs", dirs_exist_ok=True)  # the logs, off the small disk
            if self.disk:
                subprocess.run(["umount", "-l", str(data)], capture_output=True)
        return self.report

    def _elapsed(self) -> float:
        """Seconds since the cameras were all up. Every schedule and bar of the run is on the monotonic clock: a
        fresh machine's wall clock is stepped by NTP in its first minutes (22 s once, in CI), which ended the
        faults early and made the run look late."""
        return time.monotonic() - self.started_mono

    def _wall_clock(self) -> None:
        """Steps of the wall clock against the monotonic one (NTP setting a fresh machine's clock), so that a
        hole in the wall times of the recordings that is the step is told from a hole in the footage."""
        offset = time.time() - time.monotonic()
        while not self._done.wait(0.25):
            now = time.time() - time.monotonic()
            if abs(now - offset) > 1.0:
                self.report.steps.append((time.time(), now - offset))
                offset = now

    def _metrics(self) -> dict:
        """The run's /metrics, as {"up": {source: 1.0}, "frames": {source: n}}; {} while it does not answer."""
        try:
            with urllib.request.urlopen(f"{self.http}/metrics", timeout=5) as response:
                text = response.read().decode()
        except OSError:
            return {}
        out: dict = {"up": {}, "frames": {}}
        for key, name in (("up", "streamer_source_up"), ("frames", "streamer_frames_total")):
            for source, value in re.findall(rf'^{name}{{source="([^"]+)"}} (\S+)$', text, re.M):
                out[key][source] = float(value)
        return out

    # -- the faults -------------------------------------------------------------------------------------------

    def _duration(self, rng: random.Random, kind: str) -> float:
        """Most faults are short (1-5 s), some long (up to `longest_s`); a camera refused for up to four times
        that (minutes, in a long run); a reset is a moment."""
        if kind == "reset":
            return 0.0
        short = min(5.0, self.longest_s)
        seconds = rng.uniform(1.0, short) if rng.random() < 0.7 else rng.uniform(short, self.longest_s)
        if kind == "freeze":  # past the read timeout: the decoder is flushed of frames that have no time
            seconds = max(seconds, LIVE["read_timeout_s"] + 1.5)
        return seconds * (4 if kind == "refuse" and self.longest_s >= 10 else 1)

    def _camera_faults(self, cam: Camera, index: int) -> None:
        """A fault every `every_s` on average (start to start), never before the last one was recovered from.
        Each class once in every round; the first round in a fixed order, each camera starting three classes
        further on (the MPEG-TS one with the proxy's fourth), so the first three faults of the cameras together
        are every class there is, however slowly a loaded machine gets through them; later rounds seeded."""
        rng = random.Random(self.random.random())
        rtsp = isinstance(cam.server, RtspServer)
        kinds = list(SERVER + PROXY) if rtsp else list(PROXY)
        shift = 3 * index if rtsp else 3
        order = list(reversed(kinds[shift % len(kinds):] + kinds[:shift % len(kinds)]))
        next_at = self._elapsed() + rng.uniform(0.2, 1.0) * self.every_s
        while not self._done.wait(max(0.0, next_at - self._elapsed())):
            if not order:
                order = rng.sample(kinds, len(kinds))
            kind = order.pop()
            seconds = self._duration(rng, kind)
            if self._elapsed() + seconds > self.seconds - self.recover_s - 10:
                return  # every fault ends, and is recovered from, inside the run
            fault, began = Fault(kind, cam.name, time.time(), seconds), self._elapsed()
            self._inject(cam, kind, seconds)
            fault.end = time.time()
            with self._lock:
                self.report.faults.append(fault)
            before = self._metrics().get("frames", {}).get(cam.name, 0)
            took = wait_for(lambda: (m := self._metrics()) and m["up"].get(cam.name) == 1.0
                            and m["frames"].get(cam.name, 0) > before, self.recover_s + 20, 0.25)
            fault.recovered_s = None if took is None or took > self.recover_s else took
            next_at = max(began + rng.uniform(0.5, 1.5) * self.every_s, self._elapsed() + 1.0)

    def _inject(self, cam: Camera, kind: str, seconds: float) -> None:
        """Make the fault, and return when it is over."""
        proxy, server = cam.proxy, cam.server
        if kind == "reset":
            proxy.reset()
        elif kind in PROXY:
            getattr(proxy, kind)(seconds)
            time.sleep(seconds)
        elif kind == "freeze":
            server.freeze()
            time.sleep(seconds)
            server.thaw()
        elif kind in ("resize", "mute"):
            server.kill()
            size = cam.size if kind == "mute" else self.random.choice([s for s in _SIZES if s != cam.size])
            server.mounts = {"/live": pattern(*size, mute=kind == "mute")}
            server.start()
            time.sleep(seconds)
            if kind == "mute":
                server.kill()
                server.mounts = {"/live": pattern(*size)}
                server.start()
            cam.size = size

    def _process_faults(self, broker: Mosquitto, hook: Hook) -> None:
        rng = random.Random(self.random.random())
        kinds = [k for k in PROCESS_FAULTS if k != "disk" or self.disk]
        order = list(reversed(kinds))  # the first round in a fixed order, later ones seeded
        while not self._done.wait(rng.uniform(0.5, 1.5) * self.process_every_s):
            if not order:
                order = rng.sample(kinds, len(kinds))
            kind = order.pop()
            seconds = rng.uniform(2.0, max(2.0, self.longest_s))
            if self._elapsed() + seconds > self.seconds - 15:
                return
            fault = Fault(kind, "process", time.time(), seconds)
            if kind == "broker":
                broker.stop()
                time.sleep(seconds)
                broker.start()
            elif kind == "webhook":
                hook.down()
                time.sleep(seconds)
                hook.up()
            else:  # the disk nearly full: free space below the storage guard's floor by half the footage
                ballast = self.folder / "data" / "ballast"
                stat = os.statvfs(ballast.parent)
                floor = self.disk_mb / 8 * 1e9 / 1024  # min_free_gb in bytes
                footage = sum(p.stat().st_size for p in (ballast.parent / "recordings").rglob("*.mp4"))
                size = max(0, int(stat.f_bavail * stat.f_frsize - floor + footage / 2))
                with open(ballast, "wb") as f:
                    f.truncate(0)
                    f.write(b"\0" * size)
                time.sleep(seconds)
                ballast.unlink()
            fault.end = time.time()
            fault.recovered_s = 0.0
            with self._lock:
                self.report.faults.append(fault)

    def _watch(self) -> None:
        """Watchers of the live view: `watchers` that stay on one camera (whose video is drawn at the same time),
        one that never reads (a tab in the background), a request never finished (slowloris), and one more now
        and then that comes and goes, half of them with a reset."""
        rng = random.Random(self.random.random())
        names = [c.name for c in self.cams]
        stay = [Watcher(self.http, names[0]) for _ in range(self.watchers)]
        stalled = Watcher(self.http, names[0], read=False)
        host, port = self.http.removeprefix("http://").split(":")
        slow = socket.create_connection((host, int(port)), timeout=10)
        slow.sendall(f"GET /sources/{names[0]}/mjpeg HTTP/1.1\r\nHo".encode())
        while not self._done.wait(rng.uniform(1, 5)):
            try:
                watcher = Watcher(self.http, rng.choice(names))
            except OSError:  # the run has ended
                break
            time.sleep(rng.uniform(0.5, 4))
            watcher.close(rst=rng.random() < 0.5)
        for watcher in stay:
            self.report.figures.setdefault("watcher_frames", []).append(watcher.frames)
            watcher.close()
        stalled.close()
        slow.close()

    def _sample(self) -> None:
        if self._done.wait(self.sample_after_s):
            return
        while True:
            sample = _process_sample(self.proc.pid)
            if sample is None:
                return
            with self._lock:
                if self.proc.poll() is None:
                    self.report.samples.append(sample)
            if self._done.wait(2.0) or self._elapsed() > self.seconds - 3:
                return

    # -- the checks -------------------------------------------------------------------------------------------

    def _check(self, data: Path) -> None:
        import jsonschema

        report, problems = self.report, self.report.problems
        if report.returncode != 0:
            problems.append(f"exit {report.returncode}")
        if report.late_s > 15:
            problems.append(f"ended {report.late_s:.0f} s after its --duration")
        lost = [f"{f.kind} on {f.target} at {f.start - self.started:.0f} s" for f in report.faults
                if f.target != "process" and f.recovered_s is None]
        if lost:
            problems.append("not up again in time: " + ", ".join(lost))
        schema = jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text()), format_checker=jsonschema.FormatChecker())
        logs = {}
        for path in sorted((data / "runs").glob("*/events.jsonl")):
            name = next(c.name for c in self.cams if path.parent.name.startswith(c.name + "-"))
            logs[name] = path
        events: dict[str, list[dict]] = {}
        bad = 0
        for name, path in logs.items():
            events[name] = []
            for line in path.read_text().splitlines():
                try:
                    event = strict_json(line)
                    schema.validate(event)
                    events[name].append(event)
                except (ValueError, jsonschema.ValidationError):
                    bad += 1
        total = sum(len(e) for e in events.values())
        report.figures["event_lines"] = f"{total}, {bad} not valid strict JSON against the schema"
        if bad:
            problems.append(f"{bad} event lines invalid")
        outages, unpaired = 0, []
        for name, evs in events.items():
            states = [e for e in evs if e["type"] in ("source_down", "source_up")]
            kinds = [e["type"] for e in states]
            wrong = next((i for i, e in enumerate(states) if e["type"] != ("source_down", "source_up")[i % 2]
                          or e.get("gap_s", 1) <= 0), None)
            if wrong is not None:
                unpaired.append(f"{name} at its status {wrong}: " + ", ".join(
                    f"{e['type'][7:]} {e['wall_time'][11:19]} {e.get('reason') or e.get('gap_s')}"
                    for e in states[max(0, wrong - 2):wrong + 2]))
            outages += kinds.count("source_up")
        gaps = [e["gap_s"] for evs in events.values() for e in evs if e["type"] == "source_up"]
        report.figures["outages"] = (f"{outages} as source_down/source_up pairs, gap_s {_spread(gaps)}"
                                     + (f"; not paired on {unpaired}" if unpaired else ""))
        if unpaired:
            problems.append(f"down/up not paired on {unpaired}")
        with sqlite3.connect(data / "store.db") as store:
            stored = Counter(line for (line,) in store.execute("SELECT line FROM events"))
            segments = store.execute("SELECT source, path, start_wall, end_wall, bytes FROM segments "
                                     "WHERE original = 0 ORDER BY source, start_wall").fetchall()
        logged = Counter(json.dumps(e, ensure_ascii=False) for evs in events.values() for e in evs)
        agree = stored == logged
        report.figures["store"] = f"{sum(stored.values())} events, {'the same as' if agree else 'NOT the same as'} the logs"
        if not agree:
            problems.append(f"store and logs differ: {len(stored - logged)} only stored, {len(logged - stored)} only logged")
        self._check_recordings(data, segments, events)
        self._check_delivery(events)

    def _check_recordings(self, data: Path, segments, events) -> None:
        report = self.report
        cap = self.disk_mb / 4 * 2**20 / 1.073741824  # retain_gb in bytes (GB = 1e9)
        on_disk = sum(p.stat().st_size for p in (data / "recordings").rglob("*.mp4"))
        report.figures["recordings"] = (f"{len(segments)} segments indexed, {on_disk / 2**20:.1f} MiB on disk, "
                                        f"cap {cap / 2**20:.1f} MiB")
        if on_disk > cap + 4 * 2**20:
            report.problems.append(f"recordings {on_disk / 2**20:.1f} MiB over the cap")
        # Contiguous outside the outages: a hole between two consecutive segments of one connection's numbering
        # lies inside an outage (down .. up), or inside a fault too short to be one (a freeze under the read
        # timeout: the camera sent nothing, there is nothing to record), or is the wall clock's step.
        holes, in_faults, in_steps, unexplained = 0, 0, 0, []
        for name, evs in events.items():
            downs = [e for e in evs if e["type"] == "source_down"]
            ups = [e for e in evs if e["type"] == "source_up"]
            outages = [(_epoch(d["wall_time"]) - LIVE["read_timeout_s"] - 2, _epoch(u["wall_time"]) + 3)
                       for d, u in zip(downs, ups)]
            faults = [(f.start - 1, f.end + (f.recovered_s or 0) + 3) for f in report.faults if f.target == name]
            rows = [s for s in segments if s[0] == name]
            for a, b in zip(rows, rows[1:]):
                if not _consecutive(a[1], b[1]) or b[2] - a[3] <= 1.5:
                    continue
                holes += 1
                if any(lo <= a[3] and b[2] <= hi for lo, hi in outages):
                    continue
                if any(lo <= a[3] and b[2] <= hi for lo, hi in faults):
                    in_faults += 1
                    continue
                stepped = sum(s for at, s in report.steps if a[3] - 10 <= at <= b[2] + 10)
                if b[2] - a[3] - stepped <= 1.5:
                    in_steps += 1  # the footage goes on; its wall times jumped with the clock
                    continue
                unexplained.append(f"{name} {a[3] - self.started:.0f}-{b[2] - self.started:.0f} s")
        report.figures["recording_holes"] = (f"{holes}: {holes - in_faults - in_steps - len(unexplained)} in outages, "
                                             f"{in_faults} in faults too short to be one, {in_steps} at the wall "
                                             f"clock's steps, {len(unexplained)} elsewhere")
        deleted = sum(int(n) for n in re.findall(r"recorded \d+ segments, (\d+) deleted", report.stdout))
        report.figures["recordings"] += f", {deleted} deleted by retention and the storage guard"
        if unexplained:
            report.problems.append("recording holes outside outages: " + ", ".join(unexplained[:5]))

    def _check_delivery(self, events) -> None:
        report = self.report
        logged = {json.dumps(e, ensure_ascii=False) for evs in events.values() for e in evs}
        sent = {payload for topic, payload, _ in self.mqtt if topic.endswith("/events")}
        hooked = {body.decode() for body in self.hooked}
        missing_mqtt, missing_hook = len(logged - sent), len(logged - hooked)
        discovery = sum(1 for topic, _, _ in self.mqtt if topic.startswith("homeassistant/"))
        report.figures["delivered"] = (f"MQTT {len(logged) - missing_mqtt} of {len(logged)} events "
                                       f"({discovery} discovery messages), webhook {len(logged) - missing_hook} "
                                       f"of {len(logged)}")
        if missing_mqtt or missing_hook:
            report.problems.append(f"not delivered: MQTT {missing_mqtt}, webhook {missing_hook}")


class Watcher:
    """An MJPEG client counting the frames it gets (`closed` once its stream ended); with `read=False`, one that
    never reads (its socket's buffer made small before it connects, so the server's writes to it block)."""

    def __init__(self, base: str, name: str, read: bool = True) -> None:
        host, port = base.removeprefix("http://").split(":")
        self.frames, self.closed = 0, threading.Event()
        self.sock = socket.socket()
        if not read:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.settimeout(10)
        self.sock.connect((host, int(port)))
        self.sock.sendall(f"GET /sources/{name}/mjpeg HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        self.sock.settimeout(None)  # a camera down for minutes sends nothing new: the watcher waits, as a browser does
        if read:
            threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            while data := self.sock.recv(65536):
                self.frames += data.count(b"--frame\r\n")
        except OSError:
            pass
        self.closed.set()

    def close(self, rst: bool = False) -> None:
        if rst:
            import struct

            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()


def _process_sample(pid: int) -> Sample | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        files = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None
    rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024
    threads = int(re.search(r"Threads:\s+(\d+)", status).group(1))
    return Sample(time.time(), rss, files, threads)


def _consecutive(a: str, b: str) -> bool:
    """Two segments of one recorder, the second right after the first (`<HHMMSS>-<run><n:05d>.mp4`)."""
    ma, mb = (re.search(r"-([0-9a-f]{8}-)?(\d{5})\.mp4$", path) for path in (a, b))
    return bool(ma and mb and ma.group(1) == mb.group(1) and int(mb.group(2)) == int(ma.group(2)) + 1)


def _epoch(iso: str) -> float:
    import datetime as dt

    return dt.datetime.fromisoformat(iso).timestamp()
