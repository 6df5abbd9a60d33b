"""The review page in headless Chromium (Debian's, driven by Playwright): events with thumbnails, a clip that
plays with its boxes drawn over the video where the tracks say, and search hits that open their clip."""

from __future__ import annotations

import json
import re
import urllib.parse
import time
import urllib.request

import cv2
import numpy as np
import pytest

from streamer.config import Config
from streamer.pipeline.local import Pipeline, SourceSpec
from streamer.web.live import LiveView
from streamer.web.server import StatusServer
from tests.brokers import require
from tests.helpers import CLIP
from tests.scripted import ScriptedDetector
from tests.test_live_page import ARTIFACTS, CHROMIUM_FLAGS


READ = "AB 42 <img src=x onerror=window.pwned=1>"  # text the model read is shown as text, never run


def plate(index):
    x = 100 + 2 * index
    return [("car", (x, 150, x + 160, 250), READ)] if 20 <= index < 120 else []


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("review")
    config = Config.model_validate({"sampler": {"every_n_frames": 5, "max_fps": None, "scene_threshold": None},
                                    "events": {"snapshots": True}, "record": {"pre_s": 0.5, "post_s": 0.5}})
    view = LiveView()
    pipeline = Pipeline(config, lambda: ScriptedDetector(plate), [view])
    pipeline.run_many([SourceSpec(str(CLIP), tmp / "e.jsonl", None, name="street", db_path=tmp / "events.db",
                                  tracks_path=tmp / "t.jsonl")])
    served = StatusServer("127.0.0.1:0", pipeline, view).start()
    yield served
    served.close()


@pytest.fixture()
def page(server):
    chromium = require("chromium", "chromium")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS + ["--autoplay-policy=no-user-gesture-required"])
        page = browser.new_page(viewport={"width": 1200, "height": 1000})
        page.goto(server.address + "/review")
        yield page
        browser.close()


def test_the_events_are_listed_with_their_snapshots(page):
    page.select_option("#show", "events")
    page.wait_for_selector("#list li.event", timeout=10000)
    items = page.locator("#list li.event")
    texts = [items.nth(i).text_content() for i in range(items.count())]
    assert any("object_appeared" in t and "car" in t for t in texts) and any(READ in t for t in texts)
    assert page.evaluate("window.pwned") is None and page.locator("#list img[src='x']").count() == 0
    page.wait_for_function("() => [...document.querySelectorAll('#list img')].some((i) => i.naturalWidth > 0)",
                           timeout=10000)


def test_an_events_clip_plays_with_its_boxes_drawn_where_the_tracks_say(page, server):
    page.select_option("#show", "events")
    page.wait_for_selector("#list li.event", timeout=10000)
    page.locator("#list li.event", has_text="object_appeared").first.click()
    page.wait_for_function("() => document.getElementById('video').currentTime > 0.5", timeout=15000)
    page.wait_for_function("() => document.getElementById('video').readyState >= 2")
    src = page.evaluate("() => document.getElementById('video').src")
    tracks = json.loads(urllib.request.urlopen(src.replace("clip.mp4", "tracks.json"), timeout=10).read())
    frame = [n for n, boxes in enumerate(tracks["frames"]) if boxes][10]  # a moment the car is on
    page.evaluate("""(t) => new Promise((done) => { const v = document.getElementById('video'); v.pause();
                      v.addEventListener('seeked', done, {once: true}); v.currentTime = t; })""",
                  (frame + 0.5) / tracks["fps"])
    page.wait_for_timeout(300)  # a frame or two for the canvas
    [box] = [b["bbox"] for b in tracks["frames"][frame]]
    shot = cv2.imdecode(np.frombuffer(page.locator("#player").screenshot(), np.uint8), cv2.IMREAD_COLOR).astype(int)
    lime = (shot[..., 1] > 200) & (shot[..., 0] < 90) & (shot[..., 2] < 90)
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    top = lime[max(0, y1 - 2): y1 + 3, x1 + 5: x2 - 5].any(axis=0).mean()
    left = lime[y1 + 5: y2 - 5, max(0, x1 - 2): x1 + 3].any(axis=1).mean()
    assert top > 0.9 and left > 0.9, (top, left, box)
    assert not lime[y1 + 10: y2 - 10, x1 + 10: x2 - 10].any()  # only the outline: the footage stays untouched


def test_one_car_is_one_review_item_that_plays_whole_is_marked_reviewed_and_new_activity_appears_live(page, server):
    """Frigate's review items: the car's appearing, its plate read and its leaving are one row (not three), with
    its snapshot and the text read; playing it marks it reviewed in the store (a reload shows it so), and
    activity written after the page opened appears without a reload."""
    from streamer.outputs.store import EventStore
    from streamer.records import Event, Logged

    page.wait_for_selector("#list li.item", timeout=10000)
    assert page.locator("#list li.item").count() == 1
    row = page.locator("#list li.item").first
    assert "car" in row.text_content() and READ in row.text_content() and "street" in row.text_content()
    assert page.evaluate("window.pwned") is None
    page.wait_for_function("() => document.querySelector('#list li.item img').naturalWidth > 0", timeout=10000)
    [item] = json.loads(urllib.request.urlopen(server.address + "/api/review", timeout=10).read())
    assert item["labels"] == {"car": 1} and item["texts"] == [READ] and not item["reviewed"]
    row.click()
    page.wait_for_function("() => document.getElementById('video').currentTime > 0.3", timeout=15000)
    assert page.evaluate("() => document.getElementById('video').src").endswith(item["clip"])
    tracks = json.loads(urllib.request.urlopen(server.address + item["tracks"], timeout=10).read())
    seen = [n for n, boxes in enumerate(tracks["frames"]) if boxes]
    assert seen and seen[0] > 0 and seen[-1] < len(tracks["frames"]) - 1  # the whole car, with a margin each side
    page.wait_for_selector("#list li.item.reviewed", timeout=5000)
    page.reload()
    page.wait_for_selector("#list li.item.reviewed", timeout=10000)
    page.select_option("#show", "unreviewed")
    page.wait_for_function("() => document.getElementById('list').textContent.includes('nothing going on')",
                           timeout=10000)
    # a new activity, as a camera writes it: on the page within a poll
    db = server.site.stores()[0]
    store = EventStore(db)
    now = time.time()
    for kind in ("object_appeared", "object_left"):
        extra = {"dwell_s": 1.0, "reason": "lost"} if kind == "object_left" else {}
        store.write(Logged.of(Event(kind, "street", 500, 20.0, now, track_id=99, label="person", bbox=(1, 2, 30, 40),
                                    confidence=0.9, extra=extra)), db.parent, run="later")
    store.close()
    page.wait_for_selector("#list li.item.fresh", timeout=12000)
    assert "person" in page.locator("#list li.item.fresh").first.text_content()


def test_a_search_hit_opens_its_clip(page):
    page.select_option("#type", "text_read")  # the filters hold for a search too
    page.wait_for_load_state("networkidle")
    page.fill("#words", "ab 42")
    page.click("#search button")
    page.wait_for_function("() => [...document.querySelectorAll('#list li.event')].length > 0 && "
                           "[...document.querySelectorAll('#list li.event')].every((li) => "
                           "li.textContent.includes('text_read'))", timeout=10000)
    page.locator("#list li.event", has_text="AB 42").first.click()
    page.wait_for_function("() => document.getElementById('video').currentTime > 0.3", timeout=15000)
    assert "/clip.mp4" in page.evaluate("() => document.getElementById('video').src")


@pytest.mark.live
def test_a_click_on_a_cameras_timeline_plays_that_moment_and_the_live_page_shows_its_state(tmp_path):
    from tests.rtsp_server import RtspServer, require_gstreamer

    require_gstreamer()
    chromium = require("chromium", "chromium")
    sync_api = pytest.importorskip("playwright.sync_api")
    config = Config.model_validate({"sampler": {"every_n_frames": 5, "max_fps": None, "scene_threshold": None},
                                    "record": {"segment_s": 2}, "output": {"write_video": False}})
    view = LiveView()
    pipeline = Pipeline(config, lambda: ScriptedDetector(lambda i: [("ball", (100, 60, 180, 140), None)]), [view])
    with RtspServer() as camera:
        pipeline.run_many([SourceSpec(camera.url(), tmp_path / "e.jsonl", None, name="cam", db_path=tmp_path / "e.db",
                                      tracks_path=tmp_path / "t.jsonl")], duration_s=7)
    served = StatusServer("127.0.0.1:0", pipeline, view).start()
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium,
                                        args=CHROMIUM_FLAGS + ["--autoplay-policy=no-user-gesture-required"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(served.address + "/", wait_until="domcontentloaded")  # its MJPEG never ends loading
            page.wait_for_function("() => /^ended +[0-9.]+ fps/.test(document.querySelector('.state').textContent)",
                                   timeout=10000)  # the run is over: its camera's state as the server has it
            page.goto(served.address + "/review?hours=24")  # a bookmarked window opens at it
            assert page.input_value("#hours") == "24"
            page.select_option("#hours", "1")
            assert page.url.endswith("/review?hours=1")  # the choice kept in the address, for a reload
            page.wait_for_load_state("networkidle")  # the timeline drawn for the hour, not the one before
            page.wait_for_selector("#timeline .seg", timeout=10000)
            box = page.locator("#timeline .seg").last.bounding_box()
            page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            page.wait_for_function("() => document.getElementById('video').currentTime > 0.5", timeout=15000)
            assert "/api/recordings/cam?from=" in page.evaluate("() => document.getElementById('video').src")
            # What a Frigate user expects of a timeline: a row per camera, times along it, where now is, and
            # seven seconds of footage in an hour's window drawn wide enough to click (fit to the footage).
            assert page.locator('#timeline .row[data-source="cam"] .now').count() == 1
            labels = page.locator("#timeline .axis .label").all_text_contents()
            assert len(labels) >= 3 and all(re.search(r"\d:\d\d", t) for t in labels), labels
            track = page.locator('#timeline .row[data-source="cam"] .track').bounding_box()
            covered = sum(b["width"] for b in (s.bounding_box() for s in page.locator("#timeline .seg").all()))
            assert covered > 0.3 * track["width"], (covered, track)
            # the player says which camera and what time it shows
            assert re.search(r"^cam \u00b7 .*\d:\d\d", page.locator("#showing").text_content())
            page.mouse.move(track["x"] + track["width"] * 0.5, track["y"] + 10)
            page.mouse.wheel(0, 400)  # out: the footage narrower
            page.wait_for_timeout(200)
            wider = sum(b["width"] for b in (s.bounding_box() for s in page.locator("#timeline .seg").all()))
            assert wider < covered
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "review-timeline.png"))
            # the live page's link to a moment: that camera's footage plays from there
            listed = json.loads(urllib.request.urlopen(served.address + "/api/recordings/cam", timeout=10).read())
            [stretch] = json.loads(urllib.request.urlopen(served.address + "/api/recordings/cam?stretches=1",
                                                          timeout=10).read())  # no outage: one stretch
            assert stretch["segments"] == len(listed) >= 2 and stretch["start"] == listed[0]["start"]
            assert stretch["end"] == listed[-1]["end"]
            first = listed[0]
            at = first["start"]
            page.goto(served.address + "/review?" + urllib.parse.urlencode({"source": "cam", "at": at}))
            page.wait_for_function("() => document.getElementById('video').currentTime > 0.3", timeout=15000)
            assert "/api/recordings/cam?from=" in page.evaluate("() => document.getElementById('video').src")
            assert page.locator("#showing").text_content().startswith("cam \u00b7 ")
            page.set_viewport_size({"width": 390, "height": 844})  # a phone: nothing wider than the screen
            page.wait_for_timeout(300)
            assert page.evaluate("document.documentElement.scrollWidth") <= 390
            page.screenshot(path=str(ARTIFACTS / "review-phone.png"), full_page=True)
            browser.close()
    finally:
        served.close()


def test_a_camera_the_pages_name_by_its_files_stem_filters_its_own_events_and_activity(tmp_path):
    """A source given as a path (no name=) is `street` on the pages; its events say the path. The camera filter
    of the activity, the events and the search finds them by the pages' name (it found nothing before)."""
    config = Config.model_validate({"sampler": {"every_n_frames": 5, "max_fps": None, "scene_threshold": None}})
    view = LiveView()
    pipeline = Pipeline(config, lambda: ScriptedDetector(plate), [view])
    pipeline.run_many([SourceSpec(str(CLIP), tmp_path / "e.jsonl", None, db_path=tmp_path / "events.db")])
    server = StatusServer("127.0.0.1:0", pipeline, view).start()
    try:
        def get(path):
            return json.loads(urllib.request.urlopen(server.address + path, timeout=10).read())

        [camera] = get("/api/sources")
        assert camera["name"] == "street"
        [item] = get("/api/review?source=street")
        assert item["source"] == str(CLIP) and item["labels"] == {"car": 1}
        events = get("/api/history?source=street")
        assert events and {e["camera"] for e in events} == {"street"}
        assert get("/api/search?q=AB+42&source=street") and get("/api/review?source=elsewhere") == []
    finally:
        server.close()
