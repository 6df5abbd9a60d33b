"""The HTTP server behind credentials: nothing without them, the page's own login, no server path in any answer."""

from __future__ import annotations

import base64
import json
import socket
import urllib.error
from urllib.parse import urlencode
import urllib.request

import pytest

from streamer.auth import hash_password
from streamer.cli import main
from streamer.config import Config
from streamer.pipeline.local import Pipeline, SourceSpec
from streamer.web.live import LiveView
from streamer.web.server import StatusServer
from tests.brokers import require
from tests.helpers import CLIP
from tests.scripted import ScriptedDetector
from tests.test_live_page import CHROMIUM_FLAGS

TOKEN = "a-token-of-some-length"
PROTECTED = ["/", "/api/events?after=0", "/api/search?q=car", "/sources/street/mjpeg", "/api/events/1/clip.mp4",
             "/api/events/1/snapshot.jpg", "/api/recordings/street", "/api/review", "/api/review/1/clip.mp4",
             "/metrics", "/healthz"]


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def get(url, data=None, **headers):
    request = urllib.request.Request(url, data=data, headers=headers)
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(request, timeout=5) as response:
            return response.status, response.headers, response.read(2_000_000 if "mjpeg" not in url else 100)
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A file run with snapshots and a store, served behind a token and a user."""
    tmp = tmp_path_factory.mktemp("served")
    config = Config.model_validate({"sampler": {"every_n_frames": 5, "max_fps": None, "scene_threshold": None},
                                    "events": {"snapshots": True}})
    view = LiveView()
    pipeline = Pipeline(config, lambda: ScriptedDetector(lambda i: [("car", (10, 60, 90, 120), "AB 42")]), [view])
    pipeline.run_many([SourceSpec(str(CLIP), tmp / "e.jsonl", None, name="street", db_path=tmp / "events.db")])
    auth = Config.model_validate({"http": {"auth": {"token": TOKEN, "user": "ann",
                                                    "password_hash": hash_password("correct horse")}}}).http.auth
    server = StatusServer("127.0.0.1:0", pipeline, view, auth=auth).start()
    yield server, tmp
    server.close()


def test_nothing_is_served_without_credentials(served):
    server, tmp = served
    for path in PROTECTED:
        status, headers, body = get(server.address + path)
        if path == "/":  # a page: to the sign-in form
            assert status == 303 and headers["Location"].startswith("/login?next="), path
            continue
        assert status == 401, path
        assert b"AB 42" not in body and str(tmp).encode() not in body
    assert get(server.address + "/", Authorization="Bearer wrong-token-wrong")[0] == 401
    wrong = base64.b64encode(b"ann:battery staple").decode()
    assert get(server.address + "/api/events?after=0", Authorization=f"Basic {wrong}")[0] == 401


def test_a_token_or_a_user_opens_everything_and_no_answer_names_a_server_path(served):
    server, tmp = served
    user = "Basic " + base64.b64encode(b"ann:correct horse").decode()
    for credentials in (f"Bearer {TOKEN}", user):
        status, _, body = get(server.address + "/api/search?q=AB", Authorization=credentials)
        assert status == 200
        found = json.loads(body)
        assert found and str(tmp) not in body.decode()
        status, headers, jpeg = get(server.address + found[0]["snapshot"], Authorization=credentials)
        assert status == 200 and headers["Content-Type"] == "image/jpeg" and jpeg[:2] == b"\xff\xd8"
        assert get(server.address + "/metrics", Authorization=credentials)[0] == 200


def test_the_pages_own_login_gives_a_session(served):
    server, _ = served
    status, headers, _ = get(server.address + "/review?source=street")  # a page: sent to sign in, and back
    assert status == 303 and headers["Location"] == "/login?next=%2Freview%3Fsource%3Dstreet"
    status, _, page = get(server.address + headers["Location"])
    assert status == 200 and b'action="/login"' in page and b'name="token"' in page and b'name="user"' in page
    assert b'name="next" value="/review?source=street"' in page
    assert get(server.address + "/login", data=b"token=guess")[0] == 401
    status, headers, _ = get(server.address + "/login", data=f"token={TOKEN}&next=%2Freview".encode())
    assert status == 303 and headers["Location"] == "/review"
    assert "HttpOnly" in headers["Set-Cookie"] and "SameSite=Strict" in headers["Set-Cookie"]
    cookie = headers["Set-Cookie"].split(";")[0]
    assert get(server.address + "/api/events?after=0", Cookie=cookie)[0] == 200
    assert get(server.address + "/api/events?after=0", Cookie=cookie[:-2] + "00")[0] == 401  # a forged one


@pytest.mark.parametrize("then", ["//evil.example/x", "/\\evil.example", "https://evil.example/", "/%0d%0aX: y",
                                  "javascript:alert(1)", "/\r\nSet-Cookie: a=b", "/review?source=\u20ac"])
def test_a_sign_in_never_sends_the_browser_to_another_site(served, then):
    server, _ = served
    status, headers, _ = get(server.address + "/login", data=urlencode({"token": TOKEN, "next": then}).encode())
    where = headers["Location"]
    assert status == 303 and where.startswith("/") and not where.startswith("//") and "\\" not in where
    assert "evil" not in where and not set("\r\n ") & set(where) and where.isascii()


def test_a_program_is_asked_for_the_credentials_it_may_give(served):
    server, _ = served
    status, headers, _ = get(server.address + "/api/history")
    assert status == 401
    assert headers.get_all("WWW-Authenticate") == ['Basic realm="streamer", charset="UTF-8"', 'Bearer realm="streamer"']


def test_signing_out_ends_the_session_everywhere_it_was_copied(served):
    server, _ = served
    _, headers, _ = get(server.address + "/login", data=f"token={TOKEN}".encode())
    cookie = headers["Set-Cookie"].split(";")[0]
    _, other, _ = get(server.address + "/login", data=f"token={TOKEN}".encode())
    kept = other["Set-Cookie"].split(";")[0]
    status, page, body = get(server.address + "/", Cookie=cookie)
    assert status == 200 and b'action="/logout"' in body
    status, headers, _ = get(server.address + "/logout", data=b"", Cookie=cookie)
    assert status == 303 and headers["Location"] == "/login" and "Max-Age=0" in headers["Set-Cookie"]
    assert get(server.address + "/api/history", Cookie=cookie)[0] == 401  # a copy of the cookie too
    assert get(server.address + "/api/history", Cookie=kept)[0] == 200  # another browser stays signed in
    assert get(server.address + "/logout", data=b"", Cookie=kept, Origin="http://evil.example")[0] == 403


def raw(server, request: bytes) -> bytes:
    """The status line a raw request gets (b"" when the connection was dropped unanswered). HTTP/1.1 requires a
    Host header (a request without one is a 400, RFC 9112 3.2): it is added after the request line."""
    port = int(server.address.rsplit(":", 1)[1])
    line, _, rest = request.partition(b"\r\n")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(line + f"\r\nHost: 127.0.0.1:{port}\r\n".encode() + rest)
        return s.makefile("rb").readline().strip()


def test_hostile_credentials_and_numbers_are_answered_not_dropped(served):
    server, _ = served
    bearer = f"Authorization: Bearer {TOKEN}\r\n".encode()
    for request, status in [
        (b"GET /api/history HTTP/1.1\r\nCookie: streamer_session=1.\xe9\xe9\r\n\r\n", b"401"),  # Latin-1 text
        (b"GET /api/history HTTP/1.1\r\nAuthorization: Bearer \xe9\r\n\r\n", b"401"),
        (b"GET /api/history?limit=%C2%B2 HTTP/1.1\r\n" + bearer + b"\r\n", b"400"),  # '2' squared is no limit
        (b"GET /api/events/%D9%A1/snapshot.jpg HTTP/1.1\r\n" + bearer + b"\r\n", b"404"),  # Arabic-Indic 1
        (b"GET /api/events/1/snapshot.jpg?store=%C2%B9 HTTP/1.1\r\n" + bearer + b"\r\n", b"404"),
        (b"GET /api/keyframes/0/..%2F..%2Fetc%2Fpasswd HTTP/1.1\r\n" + bearer + b"\r\n", b"404"),
        (b"GET /api/recordings/x'%20OR%201=1-- HTTP/1.1\r\n" + bearer + b"\r\n", b"404"),
    ]:
        assert raw(server, request).split(b" ")[1:2] == [status], request


def test_a_login_posted_from_another_sites_page_gets_no_session(served):
    server, _ = served
    host = server.address.split("//")[1]
    status, headers, _ = get(server.address + "/login", data=f"token={TOKEN}".encode(), Origin="http://evil.example")
    assert status == 403 and "Set-Cookie" not in headers
    status, headers, _ = get(server.address + "/login", data=f"token={TOKEN}".encode(), Origin=f"http://{host}")
    assert status == 303 and "Set-Cookie" in headers


def test_marking_a_review_item_needs_credentials_and_a_page_of_our_own(served):
    """A POST that writes to the store: refused signed out and from another site's page; kept when allowed."""
    server, _ = served
    bearer = f"Bearer {TOKEN}"
    [item] = json.loads(get(server.address + "/api/review", Authorization=bearer)[2])
    where, body = server.address + f"/api/review/{item['id']}", json.dumps({"reviewed": True}).encode()
    assert get(where, body)[0] == 401
    assert get(where, body, Authorization=bearer, Origin="https://evil.example")[0] == 403
    assert get(where, b'{"reviewed": "yes"}', Authorization=bearer)[0] == 400
    assert get(server.address + "/api/review/999999", body, Authorization=bearer)[0] == 404
    assert not json.loads(get(server.address + "/api/review", Authorization=bearer)[2])[0]["reviewed"]
    host = server.address.split("//")[1]
    assert get(where, body, Authorization=bearer, Origin=f"http://{host}")[0] == 200
    [item] = json.loads(get(server.address + "/api/review?reviewed=1", Authorization=bearer)[2])
    assert item["reviewed"] and json.loads(get(server.address + "/api/review?reviewed=0", Authorization=bearer)[2]) == []
    assert get(server.address + "/api/review?reviewed=yes", Authorization=bearer)[0] == 400
    # a camera's switch: the same guard (this run has no switches: no such switch, once signed in)
    switch, on = server.address + "/api/switches/street/detect", json.dumps({"on": False}).encode()
    assert get(switch, on)[0] == 401
    assert get(switch, on, Authorization=bearer, Origin="https://evil.example")[0] == 403
    assert get(switch, b'{"on": 0}', Authorization=bearer)[0] == 400
    assert get(switch, on, Authorization=bearer)[0] == 404


def test_range_headers_a_server_may_ignore_get_the_whole_file(served):
    server, _ = served
    auth = {"Authorization": f"Bearer {TOKEN}"}
    url = server.address + "/api/events/1/snapshot.jpg"
    status, _, whole = get(url, **auth)
    assert status == 200
    size = len(whole)
    for asked in ["bytes=0-1,5-6", "bytes=" + ",".join(f"{i}-{i}" for i in range(300)), "items=0-5", "bytes=9-2"]:
        status, headers, body = get(url, Range=asked, **auth)
        assert (status, body) == (200, whole), asked
    status, headers, body = get(url, Range="bytes=-5", **auth)
    assert status == 206 and body == whole[-5:] and headers["Content-Range"] == f"bytes {size - 5}-{size - 1}/{size}"
    status, _, body = get(url, Range="bytes=0-" + "9" * 5000, **auth)  # int() refuses past 4,300 digits
    assert status == 206 and body == whole
    for unsatisfiable in ["bytes=-0", f"bytes={size}-", "bytes=" + "9" * 5000 + "-"]:
        status, headers, _ = get(url, Range=unsatisfiable, **auth)
        assert status == 416 and headers["Content-Range"] == f"bytes */{size}", unsatisfiable


def test_the_login_holds_in_a_browser(served):
    chromium = require("chromium", "chromium")
    sync_api = pytest.importorskip("playwright.sync_api")
    server, _ = served
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        page = browser.new_page()
        assert page.request.get(server.address + "/api/search?q=AB").status == 401  # (goto: a Basic prompt)
        page.goto(server.address + "/review", wait_until="domcontentloaded")  # the form, styled as the pages
        assert page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(17, 17, 17)"
        page.fill("input[name=user]", "ann")
        page.fill("input[name=password]", "correct horse")
        page.click("button[type=submit]")
        page.wait_for_selector("#timeline", timeout=10000)  # back on the page asked for, signed in
        assert page.url == server.address + "/review"
        assert page.goto(server.address + "/api/search?q=AB").status == 200
        page.goto(server.address + "/", wait_until="domcontentloaded")
        page.click("form[action='/logout'] button")
        page.wait_for_selector("input[name=user]", timeout=10000)
        assert page.request.get(server.address + "/api/search?q=AB").status == 401
        # a tool that holds a user and password answers the 401's Basic challenge by itself
        context = browser.new_context(http_credentials={"username": "ann", "password": "correct horse"})
        assert context.new_page().goto(server.address + "/api/search?q=AB").status == 200
        browser.close()


def test_metrics_can_be_public_for_scrapers(tmp_path):
    auth = Config.model_validate({"http": {"auth": {"token": TOKEN}}}).http.auth
    pipeline = Pipeline(Config(), lambda: ScriptedDetector(lambda i: []))
    server = StatusServer("127.0.0.1:0", pipeline, LiveView(), auth=auth, metrics_public=True).start()
    try:
        assert get(server.address + "/metrics")[0] == 200
        assert get(server.address + "/api/events?after=0")[0] == 401
    finally:
        server.close()


def test_listening_beyond_this_machine_needs_credentials(capsys):
    assert main(["run", str(CLIP), "--http", "0.0.0.0:0"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "serves beyond this machine: set http.auth" in err
