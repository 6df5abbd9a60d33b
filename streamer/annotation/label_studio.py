"""A Label Studio ML backend: Florence-2 pre-annotates a project's image tasks (`streamer serve-ml`).

Label Studio's side of the protocol (`label_studio_ml/api.py` of HumanSignal's SDK): `GET /health`, `POST /setup`
(the project, its labelling config, the server's address and a token to fetch images with) and `POST /predict`
(tasks; answered with one prediction per task, in order). A user adds the backend's URL in the project's
*Model* settings and gets predictions on opening a task or with *Retrieve predictions*.

What is predicted follows the labelling config: `<RectangleLabels>` on an `<Image>` get `<OD>` boxes whose label
is one of the config's (matched without case; other labels are left out, as Label Studio would refuse them);
with a per-region `<TextArea>` the image is also read (`<OCR_WITH_REGION>`): each text a `<Rectangle>` (or a
`RectangleLabels` label named `text`) with its words in the text area. Coordinates are percent of the picture,
as Label Studio stores them. The model answers through the same detector a run uses (`model.min_confidence`,
batches of `model.batch_size`), one request at a time.

Images are fetched from Label Studio with the token `/setup` gave (or `LABEL_STUDIO_API_KEY`), or read from
`--media-root` for local files (`/data/local-files/?d=PATH`), never outside it. An image that cannot be read
fails the request with its reason (a prediction of nothing would pass for "nothing there").
"""

from __future__ import annotations

import json
import logging
import os
import threading
import urllib.error
import urllib.parse
import urllib.request
import warnings
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import supervision as sv
from starlette.requests import Request  # resolved by name in the app's routes (annotations are strings here)

from streamer import __version__
from streamer.auth import Guard, is_loopback
from streamer.errors import StreamerError
from streamer.records import TEXT, Frame, Keyframe

log = logging.getLogger(__name__)
MAX_BODY = 20_000_000  # bytes of one request: tasks, not images
MAX_IMAGE = 50_000_000
MAX_PIXELS = 100_000_000  # an image's width x height: a few kB of PNG can claim billions (a decompression bomb)
FETCH_TIMEOUT_S = 30.0


class TaskError(Exception):
    """A task the backend cannot answer (its image unreadable, its config without boxes): the request fails."""


@dataclass
class Interface:
    """What a labelling config asks for on one image."""

    image: str  # the <Image>'s name (`to_name`)
    data_key: str  # the task data field holding its URL
    boxes: str | None = None  # <RectangleLabels> name
    labels: tuple[str, ...] = ()
    rectangle: str | None = None  # a <Rectangle> without labels, for text regions
    text: str | None = None  # a per-region <TextArea>


def interface(label_config: str) -> Interface:
    """The first image of the config with its box and text controls."""
    try:
        root = ET.fromstring(label_config or "")
    except ET.ParseError as exc:
        raise TaskError(f"the project's labelling config is not XML: {exc}") from None
    images = {e.get("name"): e.get("value", "").lstrip("$") for e in root.iter("Image") if e.get("name")}
    if not images:
        raise TaskError("the project's labelling config has no <Image>: this backend predicts boxes on images")
    found: Interface | None = None
    for control in root.iter():
        to = control.get("toName")
        if to not in images:
            continue
        found = found or Interface(to, images[to])
        if to != found.image:
            continue
        if control.tag == "RectangleLabels" and found.boxes is None:
            found.boxes = control.get("name")
            found.labels = tuple(e.get("value") for e in control.iter("Label") if e.get("value"))
        elif control.tag == "Rectangle" and found.rectangle is None:
            found.rectangle = control.get("name")
        elif control.tag == "TextArea" and control.get("perRegion", "").lower() == "true" and found.text is None:
            found.text = control.get("name")
    if found is None or (found.boxes is None and found.text is None):
        raise TaskError("the project's labelling config has no <RectangleLabels> (or per-region <TextArea>) on "
                        "its <Image>: nothing this backend predicts")
    return found


class Backend:
    """The model's side: setups remembered per project, predictions made one request at a time."""

    def __init__(self, detector, model_name: str, media_root: Path | None = None, batch: int = 4) -> None:
        self.detector = detector
        self.version = f"streamer-{__version__} {model_name}"
        self.media_root = Path(media_root).resolve() if media_root else None
        self.batch = max(1, batch)
        self._projects: dict[str, dict] = {}
        self._lock = threading.Lock()
        self._told: set[tuple[str, ...]] = set()  # labeling configs whose labels the model was seen not to give

    def setup(self, body: dict) -> dict:
        project = str(body.get("project", "")).split(".", 1)[0]
        self._projects[project] = {"hostname": str(body.get("hostname") or ""),
                                   "token": str(body.get("access_token") or "")}
        if body.get("schema"):
            interface(str(body["schema"]))  # a config with nothing to predict is said at once
        return {"model_version": self.version}

    def predict(self, body: dict) -> dict:
        tasks = body.get("tasks")
        if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
            raise TaskError("`tasks` should be a list of tasks")
        ui = interface(str(body.get("label_config") or ""))
        server = self._projects.get(str(body.get("project", "")).split(".", 1)[0], {})
        images = [self._image(task, ui, server) for task in tasks]
        with self._lock:  # one model, one request at a time
            boxes = self._answers(images, "<OD>") if ui.boxes else [None] * len(images)
            texts = self._answers(images, "<OCR_WITH_REGION>") if ui.text else [None] * len(images)
        results = [self._prediction(ui, image, b, t) for image, b, t in zip(images, boxes, texts)]
        self._unmatched(ui, boxes, results)
        return {"results": results, "model_version": self.version}

    def _unmatched(self, ui: Interface, boxes: list, results: list[dict]) -> None:
        """Say once per labeling config when the model saw things but none under the config's labels: empty
        predictions with no word why leave a user guessing."""
        seen = sorted({str(n) for b in boxes if b is not None for n in b.data.get("class_name", [])})
        labels = tuple(sorted(ui.labels))
        if not seen or not ui.boxes or labels in self._told:
            return
        if any(r["type"] == "rectanglelabels" for result in results for r in result["result"]):
            return
        self._told.add(labels)
        log.warning("serve-ml: the model saw %s, and the labeling config's labels are %s: none is the same word, "
                    "so predictions stay empty; name the labels as the model does (Florence-2 uses plain words: "
                    "car, person, ...), or fine-tune it on yours (streamer finetune)",
                    ", ".join(seen[:10]), ", ".join(labels) or "none")

    def _answers(self, images: list[np.ndarray], task: str) -> list:
        out = []
        for start in range(0, len(images), self.batch):
            keyframes = [Keyframe(Frame("label-studio", start + i, 0.0, 0.0, image), task)
                         for i, image in enumerate(images[start : start + self.batch])]
            out += [answer.detections for answer in self.detector.detect(keyframes)]
        return out

    def _prediction(self, ui: Interface, image: np.ndarray, boxes, texts) -> dict:
        height, width = image.shape[:2]
        result, scores = [], []
        by_name = {label.lower(): label for label in ui.labels}

        def region(kind: str, name: str, xyxy, value: dict, score: float | None) -> dict:
            x1, y1, x2, y2 = (float(v) for v in xyxy)
            entry = {"id": f"r{len(result)}", "from_name": name, "to_name": ui.image, "type": kind,
                     "original_width": width, "original_height": height, "image_rotation": 0,
                     "value": {"x": 100 * x1 / width, "y": 100 * y1 / height, "width": 100 * (x2 - x1) / width,
                               "height": 100 * (y2 - y1) / height, "rotation": 0, **value}}
            if score is not None:
                entry["score"] = score
                scores.append(score)
            result.append(entry)
            return entry

        if boxes is not None:
            names = boxes.data.get("class_name", [])
            for i, xyxy in enumerate(_clipped(boxes.xyxy, width, height)):
                label = by_name.get(str(names[i]).lower()) if i < len(names) else None
                if label is not None and xyxy is not None:
                    region("rectanglelabels", ui.boxes, xyxy, {"rectanglelabels": [label]}, _score(boxes, i))
        if texts is not None:
            words = texts.data.get(TEXT, [])
            text_label = by_name.get("text")
            for i, xyxy in enumerate(_clipped(texts.xyxy, width, height)):
                said = str(words[i]) if i < len(words) else ""
                if xyxy is None or not said or not (ui.rectangle or (ui.boxes and text_label)):
                    continue
                if ui.rectangle:
                    box = region("rectangle", ui.rectangle, xyxy, {}, _score(texts, i))
                else:
                    box = region("rectanglelabels", ui.boxes, xyxy, {"rectanglelabels": [text_label]}, _score(texts, i))
                region("textarea", ui.text, xyxy, {"text": [said]}, None)["id"] = box["id"]
        return {"result": result, "score": float(np.mean(scores)) if scores else 0.0, "model_version": self.version}

    def _image(self, task: dict, ui: Interface, server: dict) -> np.ndarray:
        url = (task.get("data") or {}).get(ui.data_key)
        name = f"task {task.get('id', '?')}"
        if not isinstance(url, str) or not url:
            raise TaskError(f"{name} has no image in data.{ui.data_key}")
        data = self._bytes(url, server, name)
        _check_pixels(data, f"{name}: {_shown(url)}")
        picture = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if picture is None:
            raise TaskError(f"{name}: {_shown(url)} is not an image")
        return picture

    def _bytes(self, url: str, server: dict, name: str) -> bytes:
        parsed = urllib.parse.urlparse(url)
        local = urllib.parse.parse_qs(parsed.query).get("d")
        if self.media_root is not None and parsed.path.rstrip("/").endswith("/data/local-files") and local:
            path = (self.media_root / local[0]).resolve()
            if not path.is_relative_to(self.media_root):
                raise TaskError(f"{name}: {local[0]} lies outside --media-root")
            try:
                with path.open("rb") as f:
                    return f.read(MAX_IMAGE + 1)[:MAX_IMAGE]
            except OSError as exc:
                raise TaskError(f"{name}: cannot read {path}: {exc.strerror or exc}") from None
        host = server.get("hostname") or os.environ.get("LABEL_STUDIO_URL", "")
        if not parsed.scheme:
            if not host:
                raise TaskError(f"{name}: {_shown(url)} is relative and Label Studio sent no hostname in /setup "
                                "(set LABEL_STUDIO_URL, or --media-root for local files)")
            url = host.rstrip("/") + "/" + url.lstrip("/")
        elif parsed.scheme not in ("http", "https"):
            raise TaskError(f"{name}: {parsed.scheme}:// images are not fetched here (serve them over HTTP)")
        elif not host or _origin(url) != _origin(host):
            raise TaskError(f"{name}: {_shown(url)} is not on Label Studio"
                            + (f" ({_origin(host)[1]})" if host else " (it sent no hostname in /setup)")
                            + ": images are fetched only from the Label Studio that set this backend up, or "
                            "under --media-root (for cloud storage, turn its pre-signed URLs off)")
        headers = {}
        token = os.environ.get("LABEL_STUDIO_API_KEY") or server.get("token")
        if token:  # the URL is Label Studio's by now (checked above), and so is any redirect followed
            headers["Authorization"] = f"Token {token}"
        try:
            with _SAME_ORIGIN.open(urllib.request.Request(url, headers=headers), timeout=FETCH_TIMEOUT_S) as reply:
                data = reply.read(MAX_IMAGE + 1)
        except TaskError as exc:  # a redirect off Label Studio
            raise TaskError(f"{name}: {exc}") from None
        except urllib.error.HTTPError as exc:
            raise TaskError(f"{name}: {_shown(url)} answered HTTP {exc.code}"
                            + (" (the token Label Studio gave is refused: set LABEL_STUDIO_API_KEY)"
                               if exc.code in (401, 403) else "")) from None
        except (urllib.error.URLError, OSError) as exc:
            raise TaskError(f"{name}: cannot fetch {_shown(url)}: {getattr(exc, 'reason', exc)}") from None
        if len(data) > MAX_IMAGE:
            raise TaskError(f"{name}: {_shown(url)} is larger than {MAX_IMAGE} bytes")
        return data


def _origin(url: str) -> tuple[str, str]:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


class _SameOrigin(urllib.request.HTTPRedirectHandler):
    """Redirects are followed on the server asked only: one to another host (where Label Studio, or whatever
    answers in its name, would send the fetch of a machine inside the network) is refused."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if _origin(newurl) != _origin(req.full_url):
            raise TaskError(f"{_shown(req.full_url)} redirects to another host ({_origin(newurl)[1]}): not followed")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_SAME_ORIGIN = urllib.request.build_opener(_SameOrigin)


def _check_pixels(data: bytes, what: str) -> None:
    """Refuse an image whose header claims more than `MAX_PIXELS` before anything decodes it."""
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():  # PIL's own warning above 89 MP: ours is the word that counts
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as header:  # reads the header only
                width, height = header.size
    except Image.DecompressionBombError:  # past PIL's own bound, which is above ours
        raise TaskError(f"{what} claims more than {MAX_PIXELS:,} pixels: refused unread") from None
    except (UnidentifiedImageError, OSError, ValueError):
        return  # not an image PIL knows: the decoder says what it is
    if width * height > MAX_PIXELS:
        raise TaskError(f"{what} claims {width} x {height} pixels, more than {MAX_PIXELS:,}: refused unread")


def _clipped(xyxy: np.ndarray, width: int, height: int) -> list:
    """Each box inside the picture, None where nothing is left of it."""
    boxes = sv.clip_boxes(np.asarray(xyxy, dtype=float).reshape(-1, 4), (width, height))
    return [tuple(map(float, b)) if b[2] > b[0] and b[3] > b[1] else None for b in boxes]


def _score(detections, i: int) -> float:
    return 1.0 if detections.confidence is None else float(detections.confidence[i])


def _shown(url: str) -> str:
    """A URL as it may appear in an error: no query (a signed link's signature), no credentials."""
    from streamer.sources import display_name

    return display_name(url.split("?", 1)[0]) if "://" in url else url.split("?", 1)[0]


class MlServer:
    """The backend over HTTP (FastAPI on uvicorn, on a thread of its own); `stop` ends it."""

    def __init__(self, listen: str, auth=None) -> None:
        """Bound at once (a port in use is said before the model loads); served from `start`."""
        from streamer.serving import Served

        host, _ = listen.rsplit(":", 1)
        if auth is None and not is_loopback(host):
            raise StreamerError(f"serve-ml on {listen} is open beyond this machine: set http.auth (Label Studio "
                                "sends a user and password with 'Use basic auth') first, or listen on 127.0.0.1")
        self._app = _app(Guard(auth))
        self._served = Served(self._app, listen, "serve-ml")
        self.address = self._served.address

    def start(self, backend: Backend) -> "MlServer":
        self._app.state.backend = backend
        self._served.start()
        return self

    def stop(self) -> None:
        self._served.close()


class _Refused(Exception):
    """A request without the credentials `http.auth` asks for."""


def _app(guard: Guard):
    """Label Studio's ML backend protocol: `/health`, `/setup`, `/predict`, `/webhook` (`/train` refused: streamer
    fine-tunes from an export). Every request needs the credentials; each is logged under --debug."""
    from fastapi import Depends, FastAPI
    from fastapi.responses import JSONResponse, Response
    from starlette.exceptions import HTTPException

    from streamer.serving import admitted

    async def allowed(request: Request) -> None:
        if not await admitted(guard, request.headers):
            raise _Refused()

    app = FastAPI(title="streamer serve-ml", version=__version__, openapi_url=None, docs_url=None, redoc_url=None,
                  dependencies=[Depends(allowed)])
    app.add_exception_handler(_Refused, lambda request, exc: Response(
        status_code=401, headers={"WWW-Authenticate": 'Basic realm="streamer"'}))
    app.add_exception_handler(HTTPException, lambda request, exc: JSONResponse({"error": str(exc.detail).lower()},
                                                                               exc.status_code))  # "not found"

    @app.middleware("http")
    async def logged(request: Request, call_next):
        response = await call_next(request)
        log.info('serve-ml: "%s %s HTTP/%s" %s', request.method, request.url.path,
                 request.scope.get("http_version", "1.1"), response.status_code)  # each request, under --debug
        return response

    @app.get("/")
    @app.get("/health")
    def health(request: Request) -> dict:
        return {"status": "UP", "model_class": "Florence-2", "model_version": request.app.state.backend.version}

    @app.get("/metrics")
    def metrics() -> dict:
        return {}

    @app.post("/train")
    def train() -> JSONResponse:
        return JSONResponse({"error": "streamer does not train from Label Studio: export the corrected project and "
                                      "run `streamer finetune` on it"}, 400)

    @app.post("/setup")
    async def setup(request: Request) -> JSONResponse:
        return await _answer(request, "/setup", request.app.state.backend.setup)

    @app.post("/predict")
    async def predict(request: Request) -> JSONResponse:
        return await _answer(request, "/predict", request.app.state.backend.predict)

    @app.post("/webhook")
    async def webhook(request: Request) -> JSONResponse:
        return await _answer(request, "/webhook", lambda body: {}, 201)

    return app


async def _answer(request: Request, path: str, route, status: int = 200):
    """The JSON object a route takes, answered by the backend on a worker thread (the model is slow)."""
    from fastapi.concurrency import run_in_threadpool
    from fastapi.responses import JSONResponse

    from streamer.serving import body_within

    body = await body_within(request, MAX_BODY)
    if body is None:
        return JSONResponse({"error": f"a request of {MAX_BODY} bytes at most"}, 413)
    try:
        body = json.loads(body or b"{}")
        if not isinstance(body, dict):
            raise ValueError("not an object")
    except ValueError as exc:
        return JSONResponse({"error": f"the request is not a JSON object: {exc}"}, 400)
    try:
        return JSONResponse(await run_in_threadpool(route, body), status)
    except TaskError as exc:
        log.warning("serve-ml: %s", exc)
        return JSONResponse({"error": str(exc)}, 500 if path == "/predict" else 400)
    except Exception as exc:  # a bug: said to Label Studio and in the log, the server goes on
        log.exception("serve-ml: %s failed", path)
        return JSONResponse({"error": f"{type(exc).__name__}: {exc}"}, 500)
