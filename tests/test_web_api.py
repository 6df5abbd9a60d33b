"""The web side under the watchers a camera page gets: fifty at once, one that stops reading, one that never
finishes its request, a stop while they watch; and the API's description, behind the sign-in like the rest."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from types import SimpleNamespace

import numpy as np
import pytest

import streamer.serving as serving
import streamer.web.api.live as live
from streamer.config import Config
from streamer.outputs.annotate import Annotator
from streamer.outputs.protocol import Shown
from streamer.pipeline.local import Pipeline
from streamer.pipeline.stats import RunStats
from streamer.records import Frame
from streamer.web.live import LiveView
from streamer.web.server import StatusServer
from tests.chaos import Watcher

TOKEN = "a-token-of-some-length"


class Camera:
    """A source's frames into the live view at 25 fps, as the pipeline puts them there, each a new picture."""

    def __init__(self, view: LiveView, name: str = "cam", noise: bool = False) -> None:
        self.view, self.name, self.noise, self._stop = view, name, noise, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        annotator, index, rng = Annotator(), 0, np.random.default_rng(0)
        while not self._stop.wait(0.04):
            image = (rng.integers(0, 255, (480, 640, 3), np.uint8) if self.noise  # 200 kB a JPEG
                     else np.full((120, 160, 3), index % 250, np.uint8))
            image.setflags(write=False)
            self.view.frame(Shown(Frame(self.name, index, index / 25, time.time(), image), [], annotator))
            index += 1

    def stop(self) -> None:
        self._stop.set()
        self.thread.join()


def serve(monkeypatch, noise: bool = False):
    monkeypatch.setattr(live, "CLIENT_TIMEOUT_S", 2.0)
    monkeypatch.setattr(serving, "HEAD_TIMEOUT_S", 2.0)
    view = LiveView()
    pipeline = Pipeline(Config(), lambda: None)
    pipeline.runs = [SimpleNamespace(stats=lambda: RunStats(source="cam"))]  # the run's one source, as the pages see it
    return Camera(view, noise=noise), StatusServer("127.0.0.1:0", pipeline, view, mjpeg_fps=10.0).start()


@pytest.fixture
def served(monkeypatch):
    camera, server = serve(monkeypatch)
    yield server
    camera.stop()
    server.close()


@pytest.fixture
def served_large(monkeypatch):
    camera, server = serve(monkeypatch, noise=True)
    yield server
    camera.stop()
    server.close()


def test_fifty_watchers_and_a_slowloris_are_served_and_every_stream_ends_at_a_stop(served):
    server = served
    host, port = server.address.removeprefix("http://").split(":")
    slowloris = socket.create_connection((host, int(port)))
    slowloris.sendall(b"GET /metrics HTTP/1.1\r\nHo")
    watchers = [Watcher(server.address, "cam") for _ in range(50)]
    time.sleep(3.0)
    counts = [w.frames for w in watchers]
    assert min(counts) >= 10, counts  # about 30 each at 10 fps: every watcher is fed
    started = time.monotonic()
    with urllib.request.urlopen(server.address + "/api/sources", timeout=5) as response:
        assert json.loads(response.read())[0]["name"] == "cam"
    assert time.monotonic() - started < 1.0  # the pages still answer at once
    slowloris.settimeout(5)
    assert slowloris.recv(100) == b""  # the unfinished request let go (after 2 s here, 30 s in a run)
    started = time.monotonic()
    server.close()  # a stop ends every stream at once
    assert time.monotonic() - started < 5
    assert all(w.closed.wait(5) for w in watchers)


def test_a_watcher_that_stops_reading_is_let_go_and_holds_no_one_up(served_large):
    server = served_large
    stalled, other = Watcher(server.address, "cam", read=False), Watcher(server.address, "cam")
    time.sleep(8.0)  # not reading: the socket's buffers fill in about 2 s, then it has 2 s to take something
    stalled.sock.settimeout(2.0)
    deadline = time.monotonic() + 5
    try:
        while stalled.sock.recv(1 << 20):  # what was in its buffers, then the end (a stream let go on for ever)
            assert time.monotonic() < deadline, "the stalled watcher was never let go"
    except socket.timeout:
        pytest.fail("the stalled watcher's stream is neither going on nor closed")
    before = other.frames
    time.sleep(1.5)
    assert other.frames - before >= 5 and not other.closed.is_set()  # the one reading went on all along


def get(url: str, **headers):
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read()


def test_the_api_is_described_behind_the_sign_in_and_every_path_it_lists_is_served(monkeypatch):
    auth = Config.model_validate({"http": {"auth": {"token": TOKEN}}}).http.auth
    view = LiveView()
    server = StatusServer("127.0.0.1:0", Pipeline(Config(), lambda: None), view, auth=auth).start()
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    try:
        for path in ("/openapi.json", "/docs"):
            status, headers, _ = get(server.address + path)
            assert status == 401 and "Bearer" in headers["WWW-Authenticate"], path
        status, _, body = get(server.address + "/docs", **bearer)
        assert status == 200 and b"swagger" in body.lower() and b"/openapi.json" in body
        assert b"https://" not in body  # Swagger UI's files come from the run, not a CDN
        status, headers, script = get(server.address + "/docs/swagger-ui-bundle.js", **bearer)
        assert status == 200 and "javascript" in headers["Content-Type"] and len(script) > 100_000
        assert get(server.address + "/docs/swagger-ui-bundle.js")[0] == 401
        assert get(server.address + "/docs/core.py", **bearer)[0] == 404  # its files, no others beside them
        status, _, body = get(server.address + "/openapi.json", **bearer)
        described = json.loads(body)
        paths = described["paths"]
        for expected in ("/", "/review", "/api/review", "/api/events/{event_id}/clip.mp4", "/api/recordings/{source}",
                         "/api/find", "/api/search", "/sources/{name}/mjpeg", "/metrics", "/healthz", "/login"):
            assert expected in paths, expected
        assert described["info"]["title"] == "streamer" and len(paths) >= 20
        # each GET the document lists answers, signed in, with what it says (no path it lists is missing)
        for path, ops in paths.items():
            if "get" not in ops or "{" in path or path in ("/api/find",):
                continue
            status, _, _ = get(server.address + path, **bearer)
            assert status in (200, 303, 400, 404, 503) and status != 500, (path, status)
            if status == 404:
                assert path.startswith("/api/recordings"), path
        # parameters that are not what the document says are one line, not a traceback
        status, headers, body = get(server.address + "/api/events/abc/clip.mp4", **bearer)
        assert status == 404 and headers["Content-Type"].startswith("text/plain") and body.count(b"\n") == 1
    finally:
        server.close()


def test_a_find_whose_client_leaves_stops_at_the_batch_in_hand(monkeypatch, tmp_path):
    """A phrase seen nowhere sends nothing until find ends: a client that leaves meanwhile stops it after the batch
    the model has in hand, rather than the model being asked about every kept keyframe for nobody."""
    from streamer.web.site import Site
    from tests.rtsp_server import wait_for

    batches = []

    def slow_find(store, phrase, detector, model_name, *, on_progress=None, **_):
        for n in range(200):
            time.sleep(0.05)  # a batch of kept keyframes through the model
            batches.append(n)
            if on_progress is not None:
                on_progress(4 * (n + 1), 800)
        return []

    monkeypatch.setattr("streamer.recording.find.find", slow_find)
    monkeypatch.setattr(Site, "stores", lambda self, asked=None: [tmp_path / "events.db"])
    pipeline = Pipeline(Config(), lambda: None)
    pipeline.worker = SimpleNamespace()  # the run's model; never asked, find being scripted
    server = StatusServer("127.0.0.1:0", pipeline, LiveView()).start()
    try:
        host, port = server.address.removeprefix("http://").split(":")
        client = socket.create_connection((host, int(port)), timeout=5)
        client.sendall(b"GET /api/find?phrase=zebra HTTP/1.1\r\nHost: x\r\n\r\n")
        assert wait_for(lambda: len(batches) >= 3, 5)
        client.close()
        time.sleep(1.0)
        stopped = len(batches)
        time.sleep(1.0)
        assert len(batches) == stopped < 60
    finally:
        server.close()


def test_the_api_page_works_in_a_browser_without_internet():
    """/docs in Chromium (no internet here, as on many cameras' networks): Swagger UI renders every operation from
    the run's own files, and nothing is asked of another host."""
    from tests.brokers import require
    from tests.test_live_page import CHROMIUM_FLAGS

    chromium = require("chromium", "chromium")
    sync_api = pytest.importorskip("playwright.sync_api")
    auth = Config.model_validate({"http": {"auth": {"token": TOKEN}}}).http.auth
    server = StatusServer("127.0.0.1:0", Pipeline(Config(), lambda: None), LiveView(), auth=auth).start()
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
            page = browser.new_context(extra_http_headers={"Authorization": f"Bearer {TOKEN}"}).new_page()
            elsewhere = []
            page.on("request", lambda r: None if r.url.startswith(server.address) else elsewhere.append(r.url))
            page.goto(server.address + "/docs")
            page.wait_for_selector(".opblock", timeout=15000)
            assert page.locator(".opblock").count() >= 20
            assert page.locator(".opblock-summary-path", has_text="/api/find").count() == 1
            assert not elsewhere, elsewhere
            browser.close()
    finally:
        server.close()


def status_of(address: str, head: str, body: bytes = b"") -> int:
    """The status line's code of one raw request (`head` without its blank line)."""
    host, port = address.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(head.encode("utf-8") + b"\r\n\r\n" + body)
        return int(conn.recv(4096).split(b" ", 2)[1])


def chunked(data: bytes, size: int = 1000) -> bytes:
    parts = [data[i : i + size] for i in range(0, len(data), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


def test_every_body_a_client_sends_is_bounded_sent_whole_or_in_chunks(monkeypatch):
    """A login form, a switch and serve-ml's JSON each take a body up to their bound: one said to be longer, one
    whose length is not in ASCII digits, or one sent in chunks that runs past it is refused, never read whole;
    within the bound, chunks are read as a body is."""
    import streamer.annotation.label_studio as label_studio
    from streamer.annotation.label_studio import MlServer

    monkeypatch.setattr(label_studio, "MAX_BODY", 10_000)
    auth = Config.model_validate({"http": {"auth": {"token": TOKEN}}}).http.auth
    server = StatusServer("127.0.0.1:0", Pipeline(Config(), lambda: None), LiveView(), auth=auth).start()
    def never(body):
        raise AssertionError("a body past the bound reached the model")

    ml = MlServer("127.0.0.1:0").start(SimpleNamespace(version="v", setup=never, predict=never))
    form = "POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded"
    try:
        assert status_of(server.address, form + "\r\nContent-Length: 5000", b"token=" + b"a" * 4994) == 400
        assert status_of(server.address, form + "\r\nContent-Length: \u00b2") == 400
        assert status_of(server.address, form + "\r\nTransfer-Encoding: chunked", chunked(b"a" * 100_000)) == 400
        assert status_of(server.address, form + "\r\nTransfer-Encoding: chunked",
                         chunked(f"token={TOKEN}".encode(), 7)) == 303  # signed in
        switch = f"POST /api/switches/cam/detect HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}"
        assert status_of(server.address, switch + "\r\nTransfer-Encoding: chunked", chunked(b" " * 5000)) == 400
        # read, so the camera is looked for (there is none)
        assert status_of(server.address, switch + "\r\nTransfer-Encoding: chunked", chunked(b'{"on": true}')) == 404
        predict = "POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
        assert status_of(ml.address, predict + "\r\nTransfer-Encoding: chunked", chunked(b" " * 50_000)) == 413
        assert status_of(ml.address, predict + "\r\nContent-Length: 99999999999") == 413
        assert status_of(ml.address, "POST /webhook HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked",
                         chunked(b'{"action": "x"}')) == 201
    finally:
        ml.stop()
        server.close()
