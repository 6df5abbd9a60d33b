"""The live page in headless Chromium (Debian's, driven by Playwright): moving video and events appear."""

import json
import os
import threading
from pathlib import Path

import pytest

from streamer.config import Config
from streamer.outputs.switches import Switches
from streamer.pipeline.local import Pipeline, SourceSpec
from streamer.web.live import LiveView
from streamer.web.server import StatusServer
from tests.brokers import require
from tests.helpers import ROOT, read_events
from tests.rtsp_server import RtspServer, require_gstreamer, wait_for
from tests.scripted import ScriptedDetector

ARTIFACTS = Path(os.environ.get("STREAMER_ARTIFACTS", ROOT / "test-artifacts"))
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]


def test_live_page_shows_a_moving_camera_and_new_events(tmp_path):
    require_gstreamer()
    chromium = require("chromium", "chromium")
    sync_api = pytest.importorskip("playwright.sync_api")

    def car(index):
        return [("car", (10 + index, 60, 90 + index, 120), None)] if index >= 40 else []

    with RtspServer() as camera, RtspServer() as gate:
        view = LiveView()
        config = Config.model_validate({"sampler": {"every_n_frames": 5, "max_fps": None},
                                        "output": {"save_keyframes": True},
                                        "live": {"read_timeout_s": 2.0, "backoff_max_s": 2.0}})
        switches = Switches(config)
        pipeline = Pipeline(config, lambda: ScriptedDetector(car), [view], switches)
        server = StatusServer("127.0.0.1:0", pipeline, view).start()
        spec = SourceSpec(camera.url(), tmp_path / "e.jsonl", None, name="cam", db_path=tmp_path / "e.db")
        other = SourceSpec(gate.url(), tmp_path / "g.jsonl", None, name="gate")
        thread = threading.Thread(target=pipeline.run_many, args=([spec, other],))
        thread.start()
        try:
            with sync_api.sync_playwright() as p:
                browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.goto(server.address + "/")
                boxes = [page.locator(f'figure:has(img[alt="{n}"])').bounding_box() for n in ("cam", "gate")]
                assert boxes[0]["y"] == boxes[1]["y"] and boxes[0]["x"] < boxes[1]["x"]  # side by side, a grid
                image = page.locator('img[alt="cam"]')
                page.wait_for_function("() => document.querySelector('img[alt=\"cam\"]').naturalWidth > 0",
                                       timeout=15000)
                first = image.screenshot()
                page.wait_for_timeout(1000)
                second = image.screenshot()
                assert first != second, "the live view did not change"
                page.wait_for_selector("#events .event:has-text('object_appeared')", timeout=15000)
                assert page.locator("#events .event a[href^='/review?source=cam&at=']").count() >= 1  # its footage
                # Find in the footage: the run's own model grounds the phrase on the kept keyframes, hits come in
                # as they are found, each with its keyframe served by the page (no server path anywhere).
                page.fill("#words", "a car")
                page.check("#infootage")
                page.click("#search button")
                hit = page.wait_for_selector("#results .hit img", timeout=20000)
                page.wait_for_function("hit => hit.complete && hit.naturalWidth > 0", arg=hit, timeout=10000)
                # The grounded box is drawn over the thumbnail where it is in the keyframe.
                thumb, mark = hit.bounding_box(), page.locator("#results .hit .mark").first.bounding_box()
                rows = hit.evaluate("img => img.naturalHeight")
                assert abs((mark["y"] - thumb["y"]) / thumb["height"] - 60 / rows) < 0.02  # the car's y1 and y2
                assert abs(mark["height"] / thumb["height"] - 60 / rows) < 0.02
                assert thumb["x"] < mark["x"] and mark["x"] + mark["width"] < thumb["x"] + thumb["width"]
                import urllib.request

                with urllib.request.urlopen(server.address + "/api/find?phrase=car", timeout=30) as reply:
                    lines = [json.loads(line) for line in reply.read().splitlines()]
                assert lines[-1]["done"] and lines[-1]["hits"] == len(lines) - 1 >= 1
                assert str(tmp_path) not in json.dumps(lines) and lines[0]["image"].startswith("/api/keyframes/0/")
                # A camera that goes down is shown as down (its last picture greyed, no stale frame rate).
                gate.kill()
                page.wait_for_selector('figure.down:has(img[alt="gate"])', timeout=15000)
                assert "fps" not in page.locator('.state[data-source="gate"]').text_content()
                assert page.locator("figure.down").count() == 1
                # The camera's switches, as Home Assistant has them: detection off from the page ends its tracks
                detect = page.locator('figure:has(img[alt="cam"]) button[data-switch="detect"]')
                assert detect.text_content() == "detect on"
                assert page.locator('figure:has(img[alt="cam"]) button[data-switch="snapshots"]').count() == 0
                detect.click()
                page.wait_for_function("b => b.textContent === 'detect off'", arg=detect.element_handle(),
                                       timeout=5000)
                assert not switches.on("cam", "detect")
                assert wait_for(lambda: any(e.get("reason") == "detect_off" for e in read_events(spec.events_path)),
                                10)
                page.set_viewport_size({"width": 390, "height": 844})  # a phone: one column, nothing overflows
                page.wait_for_timeout(300)
                assert page.evaluate("document.documentElement.scrollWidth") <= 390
                ARTIFACTS.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(ARTIFACTS / "live-view-phone.png"), full_page=True)
                page.set_viewport_size({"width": 1280, "height": 900})
                shot = ARTIFACTS / "live-view.png"
                page.screenshot(path=str(shot), full_page=True)
                print(f"\nlive page screenshot: {shot}")
                browser.close()
        finally:
            pipeline.stop()
            thread.join(timeout=15)
            server.close()


def test_the_page_finds_what_was_read(tmp_path):
    chromium = require("chromium", "chromium")
    sync_api = pytest.importorskip("playwright.sync_api")

    def plate(index):
        return [("car", (10 + index, 60, 90 + index, 120), "AB 42")] if index >= 20 else []

    view = LiveView()
    config = Config.model_validate({"sampler": {"every_n_frames": 5, "max_fps": None, "scene_threshold": None}})
    pipeline = Pipeline(config, lambda: ScriptedDetector(plate), [view])
    spec = SourceSpec(str(ROOT / "clips" / "street.mp4"), tmp_path / "e.jsonl", None, name="street",
                      db_path=tmp_path / "events.db")
    pipeline.run_many([spec])
    server = StatusServer("127.0.0.1:0", pipeline, view).start()
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
            page = browser.new_page()
            page.goto(server.address + "/", wait_until="domcontentloaded")  # the ended file's view never loads
            page.fill("#words", "ab 42")
            page.click("#search button")
            found = page.wait_for_selector("#results .found", timeout=10000)
            assert "text_read" in found.text_content() and "AB 42" in found.text_content()
            page.fill("#words", "zebra")
            page.click("#search button")
            page.wait_for_function("() => document.getElementById('results').textContent === 'nothing found'",
                                   timeout=10000)
            browser.close()
    finally:
        server.close()


def test_a_search_without_words_is_a_400(tmp_path):
    import urllib.error
    import urllib.request

    pipeline = Pipeline(Config(), lambda: ScriptedDetector(lambda i: []))
    server = StatusServer("127.0.0.1:0", pipeline, LiveView()).start()
    try:
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(server.address + "/api/search?q=%21%21", timeout=5)
        assert refused.value.code == 400
        with urllib.request.urlopen(server.address + "/api/search?q=van", timeout=5) as response:
            assert response.read() == b"[]"  # no store yet: nothing found, no error
    finally:
        server.close()


def test_a_live_event_names_its_camera_as_the_pages_do():
    """The live page links an event to its camera's row on the review page by the name the pages use (a file's
    stem, a URL's host and path without credentials), given by the server, not worked out again in the page."""
    from streamer.records import Event, Logged
    from streamer.web.live import LiveView

    view = LiveView()
    for source in ("clips/street.mp4", "rtsp://user:secret@192.0.2.10:554/stream1"):
        view.event(Logged.of(Event("source_up", source, 0, 0.0, 1767225600.0, extra={"gap_s": 1.0})))
    assert [e["camera"] for e in view.events_after(0)] == ["street", "192.0.2.10_554_stream1"]
