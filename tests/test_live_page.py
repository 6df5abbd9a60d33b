"""The live page in headless Chromium (Debian's, driven by Playwright): moving video and events appear."""

import os
import threading
from pathlib import Path

import pytest

from streamer.config import Config
from streamer.pipeline import Pipeline, SourceSpec
from streamer.server import LiveView, StatusServer
from tests.brokers import require
from tests.helpers import ROOT
from tests.rtsp_server import RtspServer, require_gstreamer
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

    with RtspServer() as camera:
        view = LiveView()
        config = Config.model_validate({"sampler": {"every_n_frames": 5, "max_fps": None}})
        pipeline = Pipeline(config, lambda: ScriptedDetector(car), [view], [view])
        server = StatusServer("127.0.0.1:0", pipeline, view).start()
        thread = threading.Thread(target=pipeline.run_many,
                                  args=([SourceSpec(camera.url(), tmp_path / "e.jsonl", None, name="cam")],))
        thread.start()
        try:
            with sync_api.sync_playwright() as p:
                browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
                page = browser.new_page()
                page.goto(server.address + "/")
                image = page.locator('img[alt="cam"]')
                page.wait_for_function("() => document.querySelector('img[alt=\"cam\"]').naturalWidth > 0",
                                       timeout=15000)
                first = image.screenshot()
                page.wait_for_timeout(1000)
                second = image.screenshot()
                assert first != second, "the live view did not change"
                page.wait_for_selector("#events .event:has-text('object_appeared')", timeout=15000)
                ARTIFACTS.mkdir(parents=True, exist_ok=True)
                shot = ARTIFACTS / "live-view.png"
                page.screenshot(path=str(shot), full_page=True)
                print(f"\nlive page screenshot: {shot}")
                browser.close()
        finally:
            pipeline.stop()
            thread.join(timeout=15)
            server.close()
