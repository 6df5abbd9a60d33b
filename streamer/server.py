"""A small threaded HTTP server for watching a run: metrics, health, live views and a page of the cameras.

- `/metrics`: Prometheus text format, read from the pipeline at scrape time (per source: frames in, keyframes,
  drops, reconnects, fps, frame-to-event latency histogram; worker: batch sizes, queue depth, inference time).
- `/healthz`: 200 when the model is loaded and every source is up; 503 naming the sources that are not.
- `/sources/<name>/mjpeg`: the annotated stream as MJPEG; frames are JPEG-encoded only while someone watches.
- `/api/events?after=N`: the latest events, for the page.
- `/api/search?q=WORDS`: events of the run's stores with every word in their label, text or caption, best first.
- `/`: every camera's live view, a search box over what was seen, and the latest events, updating without reload.
Bound to 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import html
import ipaddress
import json
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import cv2
from prometheus_client import generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from streamer.errors import StreamerError
from streamer.outputs import Output, Shown
from streamer.pipeline import Pipeline
from streamer.records import Logged
from streamer.sources import safe_name


class LiveView(Output):
    """An output of every source: keeps each source's latest annotated frame (a camera's as it arrives) and the
    latest events."""

    immediate = True
    replays = True

    def __init__(self, keep_events: int = 200) -> None:
        self._frames: dict[str, tuple[int, object]] = {}
        self._events: deque[tuple[int, dict]] = deque(maxlen=keep_events)
        self._seq = 0
        self._lock = threading.Lock()

    def frame(self, shown: Shown) -> None:
        key = safe_name(shown.source)
        with self._lock:
            count = self._frames.get(key, (0, None))[0] + 1
            self._frames[key] = (count, shown)  # drawn only when someone watches

    def event(self, logged: Logged) -> None:
        with self._lock:
            self._seq += 1
            self._events.append((self._seq, logged.data))

    def latest(self, key: str):
        """(frames seen, the latest one drawn) of a source; (0, None) before its first frame."""
        with self._lock:
            count, shown = self._frames.get(key, (0, None))
        return count, None if shown is None else shown.annotated

    def events_after(self, after: int) -> list[dict]:
        with self._lock:
            return [{"seq": seq, **e} for seq, e in self._events if seq > after]


class _Counters:
    """A prometheus_client collector over counters the pipeline keeps anyway, read at scrape time (histograms are
    observed as they happen, in `pipeline.metrics`)."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

    def collect(self):
        per_source = {
            "frames": CounterMetricFamily("streamer_frames", "Frames processed", labels=["source"]),
            "keyframes": CounterMetricFamily("streamer_keyframes", "Keyframes sent to the model", labels=["source"]),
            "dropped": CounterMetricFamily("streamer_dropped_frames", "Stale live frames dropped", labels=["source"]),
            "reconnects": CounterMetricFamily("streamer_reconnects", "Reconnect attempts", labels=["source"]),
            "events": CounterMetricFamily("streamer_events", "Events emitted", labels=["source"]),
            "questions_asked": CounterMetricFamily("streamer_questions_asked", "Per-object questions asked",
                                                   labels=["source"]),
            "questions_answered": CounterMetricFamily("streamer_questions_answered", "Per-object questions answered",
                                                      labels=["source"]),
            "questions_dropped": CounterMetricFamily("streamer_questions_dropped",
                                                     "Per-object questions dropped (track ended, or failed)",
                                                     labels=["source"]),
            "segments": CounterMetricFamily("streamer_recorded_segments", "Recorded segments closed and indexed",
                                            labels=["source"]),
            "segments_deleted": CounterMetricFamily("streamer_recorded_segments_deleted",
                                                    "Recorded segments deleted by retention or the storage guard",
                                                    labels=["source"]),
        }
        fps = GaugeMetricFamily("streamer_fps", "Frames per second since the source started", labels=["source"])
        up = GaugeMetricFamily("streamer_source_up", "1 when the source delivers frames", labels=["source"])
        for run in self.pipeline.runs:
            st = run.stats()
            for key, family in per_source.items():
                family.add_metric([st.source], getattr(st, key))
            fps.add_metric([st.source], st.fps_so_far)
            up.add_metric([st.source], 1.0 if st.up else 0.0)
        yield from per_source.values()
        yield from (fps, up)
        worker = self.pipeline.worker
        if worker is not None:
            yield CounterMetricFamily("streamer_worker_batches", "Model calls", value=worker.batches)
            yield CounterMetricFamily("streamer_worker_keyframes", "Keyframes answered", value=worker.keyframes)
            yield CounterMetricFamily("streamer_worker_inference_seconds", "Time in the model", value=worker.busy_s)
            yield GaugeMetricFamily("streamer_worker_queue_depth", "Keyframes waiting", value=worker.queue_depth)


PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>streamer</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1em; background: #111; color: #eee; }}
.cams {{ display: flex; flex-wrap: wrap; gap: 1em; }}
figure {{ margin: 0; }} img {{ max-width: 640px; width: 100%; background: #222; }}
#events {{ font-family: monospace; font-size: 0.85em; white-space: pre; max-height: 40vh; overflow-y: auto; }}
</style></head><body>
<h1>streamer</h1>
<div class="cams">{cameras}</div>
<h2>Search</h2>
<form id="search"><input id="words" type="search" placeholder="white van, AB 42, person ..." size="40">
<button type="submit">Search</button></form>
<div id="results"></div>
<h2>Latest events</h2>
<div id="events"></div>
<script>
function describe(e) {{
  return [e.wall_time, e.source, e.type, e.label ?? '', e.track_id ?? '', e.text ?? '', e.snapshot ?? ''].join('  ');
}}
document.getElementById('search').addEventListener('submit', async (event) => {{
  event.preventDefault();
  const box = document.getElementById('results');
  const response = await fetch('/api/search?q=' + encodeURIComponent(document.getElementById('words').value));
  box.replaceChildren();
  if (!response.ok) {{ box.textContent = await response.text(); return; }}
  const found = await response.json();
  for (const e of found) {{
    const line = document.createElement('div');
    line.className = 'found';
    line.textContent = describe(e);
    box.append(line);
  }}
  if (!found.length) box.textContent = 'nothing found';
}});
let after = 0;
async function poll() {{
  try {{
    const response = await fetch('/api/events?after=' + after);
    const events = await response.json();
    const box = document.getElementById('events');
    for (const e of events) {{
      after = Math.max(after, e.seq);
      const line = document.createElement('div');
      line.className = 'event';
      line.textContent = describe(e);
      box.prepend(line);
    }}
  }} catch (err) {{}}
  setTimeout(poll, 1000);
}}
poll();
</script></body></html>
"""


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


class StatusServer:
    def __init__(self, listen: str, pipeline: Pipeline, view: LiveView, mjpeg_fps: float = 10.0) -> None:
        host, port = listen.rsplit(":", 1)
        self.pipeline, self.view, self.interval = pipeline, view, 1.0 / mjpeg_fps
        self.registry = pipeline.metrics.registry
        self.registry.register(_Counters(pipeline))
        self._closing = threading.Event()
        handler = self._handler()
        try:
            self.httpd = ThreadingHTTPServer((host, int(port)), handler)
        except OSError as exc:
            raise StreamerError(f"cannot listen on {listen}: {exc.strerror or exc}") from None
        self.httpd.daemon_threads = True
        self.address = f"http://{host}:{self.httpd.server_address[1]}"
        self.loopback = _is_loopback(host)
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="http", daemon=True)

    def start(self) -> "StatusServer":
        self._thread.start()
        return self

    def close(self) -> None:
        self._closing.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet: the console is for status lines
                pass

            def _send(self, code: int, body: bytes, content_type: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                path, query = unquote(url.path), parse_qs(url.query)
                route = ROUTES.get(path)
                if route is not None:
                    route(self, query)
                elif path.startswith("/sources/") and path.endswith("/mjpeg"):
                    self._mjpeg(path[len("/sources/"):-len("/mjpeg")])
                else:
                    self._send(404, b"not found\n", "text/plain")

            def _metrics(self, query) -> None:
                self._send(200, generate_latest(server.registry), "text/plain; version=0.0.4; charset=utf-8")

            def _healthz(self, query) -> None:
                down = [st.source for st in (r.stats() for r in server.pipeline.runs) if not st.up]
                ok = server.pipeline.model_loaded and not down and server.pipeline.runs
                body = {"status": "ok" if ok else "unavailable", "model_loaded": server.pipeline.model_loaded,
                        "down": down}
                self._send(200 if ok else 503, json.dumps(body).encode(), "application/json")

            def _events(self, query) -> None:
                after = query.get("after", ["0"])[0] or "0"
                if not after.isdigit():
                    self._send(400, b"after: expected the seq of the last event seen, a whole number\n", "text/plain")
                    return
                self._send(200, json.dumps(server.view.events_after(int(after))).encode(), "application/json")

            def _page(self, query) -> None:
                names = [safe_name(r.stats().source) for r in server.pipeline.runs]
                cameras = "".join(
                    f'<figure><img alt="{html.escape(n)}" src="/sources/{html.escape(n)}/mjpeg">'
                    f"<figcaption>{html.escape(n)}</figcaption></figure>" for n in names
                )
                self._send(200, PAGE.format(cameras=cameras).encode(), "text/html; charset=utf-8")

            def _search(self, query) -> None:
                """The run's event stores searched (`store.query`), best matches first, at most 100."""
                from streamer.store import match_words
                from streamer.store import query as find

                words = query.get("q", [""])[0]
                if not match_words(words):
                    self._send(400, b"q: no word to look for\n", "text/plain")
                    return
                stores = {st.db_path for st in (r.stats() for r in server.pipeline.runs) if st.db_path is not None}
                try:
                    found = [e for db in sorted(stores) if db.exists() for e in find(db, search=words)][:100]
                except StreamerError as exc:
                    self._send(500, f"{exc}\n".encode(), "text/plain")
                    return
                self._send(200, json.dumps(found).encode(), "application/json")

            def _mjpeg(self, name: str) -> None:
                known = {safe_name(r.stats().source) for r in server.pipeline.runs}
                if name not in known:
                    self._send(404, b"no such source\n", "text/plain")
                    return
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                sent = -1
                try:
                    while not server._closing.is_set():
                        count, image = server.view.latest(name)
                        if image is not None and count != sent:
                            ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 80])
                            if ok:
                                data = jpeg.tobytes()
                                self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                                 + str(len(data)).encode() + b"\r\n\r\n" + data + b"\r\n")
                                sent = count
                        time.sleep(server.interval)
                except (BrokenPipeError, ConnectionResetError):
                    return

        # path -> what answers it (with the query's parameters); /sources/<name>/mjpeg is matched on its own
        ROUTES = {"/": Handler._page, "/metrics": Handler._metrics, "/healthz": Handler._healthz,
                  "/api/events": Handler._events, "/api/search": Handler._search}
        return Handler
