"""`streamer serve-ml`, the Label Studio ML backend, spoken to as Label Studio speaks to it (the protocol of
HumanSignal's `label_studio_ml/api.py`); a real Label Studio server drives it in `bench/label_studio.py`.
The tiny Florence-2 answers one car at bins (100, 200, 500, 600) of 1000 whatever it sees."""

import functools
import http.server
import json
import logging
import threading
import urllib.error
import urllib.request

import cv2
import numpy as np
import pytest

from streamer.annotation.label_studio import Backend, MlServer
from streamer.cli import main
from streamer.config import Config
from streamer.model.worker import load_detector

CONFIG = ('<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image">'
          '<Label value="Car"/><Label value="person"/></RectangleLabels></View>')


class ImageServer:
    """Label Studio's side for images: `/data/upload/...` files that need its token."""

    def __init__(self, folder, token):
        seen = self.seen = []

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                seen.append(self.headers.get("Authorization"))
                if self.headers.get("Authorization") != f"Token {token}":
                    self.send_error(401)
                    return
                self.path = self.path.removeprefix("/data/upload")
                super().do_GET()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(folder)))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def backend(tiny_od, tmp_path_factory):
    media = tmp_path_factory.mktemp("media")
    (media / "uploads").mkdir()
    picture = np.full((300, 400, 3), 90, np.uint8)
    cv2.imwrite(str(media / "uploads" / "street.jpg"), picture)
    cv2.imwrite(str(media / "local.png"), picture)
    (media / "notes.txt").write_text("not an image")
    (media / "bomb.png").write_bytes(_png_header(12_000, 10_000))
    (media / "huge.png").write_bytes(_png_header(100_000, 100_000))
    images = ImageServer(media / "uploads", token="t0ken")
    model = Config.model_validate({"model": {"path": str(tiny_od), "device": "cpu"}}).model
    server = MlServer("127.0.0.1:0").start(Backend(load_detector(model), "tiny", media_root=media))
    yield server.address, images
    server.stop()
    images.close()


def call(url, body=None, headers=None):
    request = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def predict(address, images, tasks, config=CONFIG):
    assert call(f"{address}/setup", {"project": "1.1733", "schema": config, "hostname": images.url,
                                     "access_token": "t0ken"})[0] == 200
    return call(f"{address}/predict", {"tasks": tasks, "project": "1.1733", "label_config": config, "params": {}})


def test_health_and_setup_say_the_model(backend):
    address, images = backend
    assert call(f"{address}/health") == (200, {"status": "UP", "model_class": "Florence-2",
                                               "model_version": call(f"{address}/")[1]["model_version"]})
    status, body = call(f"{address}/setup", {"project": "1.1733", "schema": CONFIG, "hostname": images.url,
                                             "access_token": "t0ken"})
    assert status == 200 and "tiny" in body["model_version"]


def test_predictions_are_label_studio_rectangles_in_percent_with_the_projects_labels(backend):
    address, images = backend
    tasks = [{"id": 7, "data": {"image": "/data/upload/street.jpg"}},
             {"id": 8, "data": {"image": "/data/local-files/?d=local.png"}}]
    status, body = predict(address, images, tasks)
    assert status == 200 and len(body["results"]) == 2  # one prediction per task, in order
    assert "Token t0ken" in images.seen  # fetched from Label Studio with the token /setup gave
    for prediction in body["results"]:
        [region] = prediction["result"]
        assert region["type"] == "rectanglelabels" and region["from_name"] == "label" and region["to_name"] == "image"
        assert region["value"]["rectanglelabels"] == ["Car"]  # the model's "car" as the project spells it
        assert (region["original_width"], region["original_height"]) == (400, 300)
        value = region["value"]
        assert [value["x"], value["y"], value["width"], value["height"]] == pytest.approx([10, 20, 40, 40], abs=0.2)
        assert 0 < region["score"] <= 1 and prediction["model_version"] == body["model_version"]


def test_labels_the_project_does_not_have_are_left_out_and_the_log_says_why_once(backend, caplog):
    address, images = backend
    config = CONFIG.replace('"Car"', '"bicycle"')
    with caplog.at_level(logging.INFO, logger="streamer.annotation.label_studio"):
        for _ in range(2):
            status, body = predict(address, images, [{"id": 1, "data": {"image": "/data/upload/street.jpg"}}], config)
            assert status == 200 and body["results"][0]["result"] == []
    said = [r.getMessage() for r in caplog.records if "none is the same word" in r.getMessage()]
    assert len(said) == 1 and "the model saw car" in said[0] and "bicycle" in said[0]
    assert any('"POST /predict HTTP/1.1" 200' in r.getMessage() for r in caplog.records)  # requests, under --debug


@pytest.mark.parametrize("url, says", [
    ("/data/upload/missing.jpg", "/data/upload/missing.jpg answered HTTP 404"),
    ("/data/local-files/?d=../../etc/passwd", "outside --media-root"),
    ("/data/local-files/?d=notes.txt", "is not an image"),
    ("/data/local-files/?d=bomb.png", "claims 12000 x 10000 pixels, more than 100,000,000: refused unread"),
    ("/data/local-files/?d=huge.png", "claims more than 100,000,000 pixels: refused unread"),
    ("s3://bucket/a.jpg", "s3:// images are not fetched here"),
    ("file:///etc/passwd", "file:// images are not fetched here"),
])
def test_an_image_it_cannot_read_fails_the_request_with_the_reason(backend, url, says):
    address, images = backend
    status, body = predict(address, images, [{"id": 3, "data": {"image": url}}])
    assert status == 500 and says in body["error"]


def _png_header(width: int, height: int) -> bytes:
    """A PNG's signature and header claiming `width` x `height` pixels, and nothing to decode: a few bytes that
    would ask a decoder for gigabytes."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    idat = zlib.compress(b"\0" * 4096)  # the first rows; a decoder would go on asking for the rest
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)) + chunk(
        b"IDAT", idat)


class Host:
    """Another HTTP host: records what it is asked; with `to`, answers every request with a redirect there."""

    def __init__(self, to: str | None = None):
        seen = self.seen = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                seen.append(self.path)
                self.send_response(302 if to else 404)
                if to:
                    self.send_header("Location", f"{to}/latest/meta-data")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_images_are_fetched_only_from_label_studio_never_from_another_host(backend):
    """A task naming another host (a metadata service, an admin page inside the network) is refused unfetched,
    and a redirect from Label Studio's address to another host is not followed."""
    address, images = backend
    inside = Host()
    try:
        status, body = predict(address, images, [{"id": 4, "data": {"image": f"{inside.url}/latest/meta-data"}}])
        assert status == 500 and f"is not on Label Studio ({images.url[7:]})" in body["error"] and inside.seen == []
        redirecting = Host(to=inside.url)  # answers in Label Studio's name
        try:
            assert call(f"{address}/setup", {"project": "1.1733", "schema": CONFIG, "hostname": redirecting.url,
                                             "access_token": "t0ken"})[0] == 200
            status, body = call(f"{address}/predict", {"tasks": [{"id": 5, "data": {"image": "/data/upload/a.jpg"}}],
                                                       "project": "1.1733", "label_config": CONFIG, "params": {}})
        finally:
            redirecting.close()
        assert status == 500 and "redirects to another host" in body["error"]
        assert redirecting.seen == ["/data/upload/a.jpg"] and inside.seen == []
    finally:
        inside.close()


def test_a_config_without_boxes_is_refused_at_setup(backend):
    address, _ = backend
    status, body = call(f"{address}/setup", {"project": "2", "schema": '<View><Image name="i" value="$i"/>'
                                             '<Choices name="c" toName="i"><Choice value="a"/></Choices></View>'})
    assert status == 400 and "no <RectangleLabels>" in body["error"]


def test_beyond_this_machine_only_with_credentials(tmp_path, capsys):
    assert main(["serve-ml", "--listen", "0.0.0.0:9090", "--model", str(tmp_path / "no-model")]) == 1
    assert "set http.auth" in capsys.readouterr().err
    server = MlServer("127.0.0.1:0", Config.model_validate({"http": {"auth": {"token": "s" * 20}}}).http.auth)
    server.start(Backend(None, "none"))
    try:
        assert call(f"{server.address}/health")[0] == 401
        assert call(f"{server.address}/health", headers={"Authorization": f"Bearer {'s' * 20}"})[0] == 200
    finally:
        server.stop()
