"""A small threaded HTTP server for watching a run: metrics, health, live views and a page of the cameras.

- `/metrics`: Prometheus text format, read from the pipeline at scrape time (per source: frames in, keyframes,
  drops, reconnects, fps, frame-to-event latency histogram; worker: batch sizes, queue depth, inference time).
- `/healthz`: 200 when the model is loaded and every source is up; 503 naming the sources that are not.
- `/sources/<name>/mjpeg`: the annotated stream as MJPEG; frames are JPEG-encoded only while someone watches.
- `/api/events?after=N`: the latest events, for the page.
- `/api/search?q=WORDS`: events of the run's stores with every word in their label, text or caption, best first.
- `/api/find?phrase=PHRASE[&source=&from=&to=]`: `streamer find` with the run's model (its frames wait behind the
  cameras' keyframes), each hit an NDJSON line as it is found, with links to its keyframe and footage.
- `/api/events/<id>/clip.mp4`: the event's clip from the recordings (`streamer clip --event`), with Range requests.
- `/api/recordings/<source>`: the segments recorded (times, no paths); with `?from=&to=` (ISO-8601) that stretch
  as an MP4, with Range requests, so a browser plays and seeks any recorded moment.
- `/`: every camera's live view, a search box over what was seen (or, ticked, find in the footage), and the
  latest events, updating without reload.
Bound to 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import collections
import html
import json
import logging
import re
import shutil
import tempfile
import threading
import time
from collections import OrderedDict, deque
from pathlib import Path
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

import cv2
from prometheus_client import generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from streamer.auth import COOKIE, SESSION_S, Guard, is_loopback
from streamer.errors import StreamerError
from streamer.outputs.annotate import Annotator
from streamer.outputs.protocol import Output, Shown
from streamer.outputs.switches import SWITCHES
from streamer.pipeline.local import Pipeline
from streamer.records import Logged, iso_time
from streamer.sources import safe_name

log = logging.getLogger("streamer.web.server")


class _Feed:
    """One source's live view as its watchers get it: the latest frame drawn and encoded once, whoever watches
    (fifty watchers cost one JPEG a frame), with an annotator of its own (the source's belongs to its thread)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.annotator: Annotator | None = None
        self.count = 0
        self.jpeg: bytes | None = None


class LiveView(Output):
    """An output of every source: keeps each source's latest frame with its tracks (a camera's as it arrives) and
    the latest events. It only keeps references on the source's thread; drawing and encoding happen on the
    watchers' threads (`jpeg`), never on the source's state, so a watcher can neither slow nor break a camera."""

    immediate = True
    replays = True

    def __init__(self, keep_events: int = 200) -> None:
        self._frames: dict[str, tuple[int, object]] = {}
        self._feeds: dict[str, _Feed] = {}
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
            # the page gets no file names of the server: snapshots are served by the review page's URLs; `camera`:
            # the source's name on the pages (its row, its MJPEG path)
            self._events.append((self._seq, {**{k: v for k, v in logged.data.items() if k != "snapshot"},
                                             "camera": safe_name(logged.event.source)}))

    def jpeg(self, key: str, quality: int = 80) -> tuple[int, bytes | None]:
        """(frames seen, the latest one drawn as a JPEG) of a source; (0, None) before its first frame."""
        with self._lock:
            count, shown = self._frames.get(key, (0, None))
            feed = self._feeds.setdefault(key, _Feed())
        with feed.lock:
            if shown is not None and feed.count != count:
                if feed.annotator is None:
                    feed.annotator = shown.annotator.sibling()
                ok, jpeg = cv2.imencode(".jpg", shown.drawn_with(feed.annotator), [cv2.IMWRITE_JPEG_QUALITY, quality])
                if ok:
                    feed.count, feed.jpeg = count, jpeg.tobytes()
            return feed.count, feed.jpeg

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
            "still_keyframes": CounterMetricFamily("streamer_still_keyframes", "Keyframes sent while nothing moved "
                                                   "and no track was held (they wait behind others)",
                                                   labels=["source"]),
            "dropped": CounterMetricFamily("streamer_dropped_frames", "Stale live frames dropped", labels=["source"]),
            "reconnects": CounterMetricFamily("streamer_reconnects", "Reconnect attempts", labels=["source"]),
            "faults": CounterMetricFamily("streamer_source_faults", "Faults on a camera's path, each followed by a "
                                          "reconnect", labels=["source"]),
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
<html><head><meta charset="utf-8"><meta name="viewport" content="width=device-width"><title>streamer</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1em; background: #111; color: #eee; }}
.cams {{ display: grid; gap: 1em; grid-template-columns: repeat(auto-fill, minmax(min(100%, 380px), 1fr)); }}
figure {{ margin: 0; position: relative; min-width: 0; }} img {{ max-width: 100%; width: 100%; background: #222; }}
figure.down img {{ opacity: 0.25; filter: grayscale(1); }}
figure.down::after {{ content: "camera down"; position: absolute; left: 0; right: 0; top: 40%; text-align: center;
  font-size: 1.4em; color: #f88; }}
#search input[type=search] {{ max-width: 100%; box-sizing: border-box; }}
.thumb {{ position: relative; display: inline-block; width: 160px; vertical-align: middle; }}
.switches button {{ margin-left: 0.4em; background: #222; color: #888; border: 1px solid #444; border-radius: 3px;
  font-size: 0.8em; cursor: pointer; }}
.switches button[aria-pressed=true] {{ color: #8f8; border-color: #4a4; }}
.thumb img {{ display: block; width: 100%; }}
.thumb .mark {{ position: absolute; border: 2px solid #0f0; box-sizing: border-box; }}
#events {{ font-family: monospace; font-size: 0.85em; white-space: pre-wrap; max-height: 40vh; overflow-y: auto; }}
</style></head><body>
<h1>streamer</h1>
<p><a href="/review" style="color:#8cf">review the recordings</a>{signout}</p>
<div class="cams">{cameras}</div>
<h2>Search</h2>
<form id="search"><input id="words" type="search" placeholder="white van, AB 42, person ..." size="40">
<button type="submit">Search</button>
<label><input id="infootage" type="checkbox"> find in footage (Florence-2 looks at the kept frames)</label></form>
<div id="results"></div>
<h2>Latest events</h2>
<div id="events"></div>
<script>
function when(wall) {{  // the viewer's own clock and zone, not a raw UTC string
  const t = new Date(wall);
  return isNaN(t) ? (wall ?? '') : t.toLocaleString();
}}
function describe(e) {{
  return [when(e.wall_time), e.source, e.type, e.label ?? '', e.track_id ?? '', e.text ?? ''].join('  ');
}}
async function findInFootage(words, box) {{
  // Hits arrive one JSON line each, as the model finds them.
  const response = await fetch('/api/find?phrase=' + encodeURIComponent(words));
  if (!response.ok) {{ box.textContent = await response.text(); return; }}
  const reader = response.body.getReader(), decoder = new TextDecoder();
  let pending = '', hits = 0;
  const status = document.createElement('div');
  status.textContent = 'looking ...';
  box.append(status);
  for (;;) {{
    const {{ value, done }} = await reader.read();
    if (done) break;
    pending += decoder.decode(value, {{ stream: true }});
    const lines = pending.split('\\n');
    pending = lines.pop();
    for (const text of lines) {{
      if (!text) continue;
      const hit = JSON.parse(text);
      if (hit.done) {{ status.textContent = hit.hits ? `${{hit.hits}} found` : 'nothing found'; continue; }}
      if (hit.error) {{ status.textContent = hit.error; continue; }}
      hits += 1;
      const line = document.createElement('div');
      line.className = 'hit';
      line.textContent = [when(hit.wall_time), hit.source, 'conf ' + hit.confidence.toFixed(2)].join('  ') + '  ';
      if (hit.image) {{
        // The keyframe with the box the phrase was grounded on, drawn over it (the picture itself is as kept).
        const frame = document.createElement('span'), img = document.createElement('img');
        const mark = document.createElement('span');
        frame.className = 'thumb';
        mark.className = 'mark';
        img.onload = () => {{
          const [x1, y1, x2, y2] = hit.box, w = img.naturalWidth, h = img.naturalHeight;
          Object.assign(mark.style, {{left: 100 * x1 / w + '%', top: 100 * y1 / h + '%',
                                     width: 100 * (x2 - x1) / w + '%', height: 100 * (y2 - y1) / h + '%'}});
        }};
        img.src = hit.image;
        frame.append(img, mark);
        line.append(frame);
      }}
      if (hit.clip) {{
        const link = document.createElement('a');
        link.href = hit.clip;
        link.textContent = ' footage';
        link.style.color = '#8cf';
        line.append(link);
      }}
      box.insertBefore(line, status);
      status.textContent = `looking ... ${{hits}} found so far`;
    }}
  }}
}}
document.getElementById('search').addEventListener('submit', async (event) => {{
  event.preventDefault();
  const box = document.getElementById('results');
  const words = document.getElementById('words').value;
  if (document.getElementById('infootage').checked) {{
    box.replaceChildren();
    await findInFootage(words, box);
    return;
  }}
  const response = await fetch('/api/search?q=' + encodeURIComponent(words));
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
      line.textContent = describe(e) + '  ';
      if (e.wall_time && e.source) {{  // that moment of that camera on the review page
        const link = document.createElement('a');
        link.href = '/review?' + new URLSearchParams({{source: e.camera, at: e.wall_time}});
        link.textContent = 'footage';
        link.style.color = '#8cf';
        line.append(link);
      }}
      box.prepend(line);
    }}
  }} catch (err) {{}}
  setTimeout(poll, 1000);
}}
poll();
function toggles(figure, s) {{  // the camera's switches (detect, record, snapshots), as Home Assistant shows them
  let box = figure.querySelector('.switches');
  if (!box) {{
    box = document.createElement('span');
    box.className = 'switches';
    figure.querySelector('figcaption').append(box);
  }}
  for (const [name, on] of Object.entries(s.switches ?? {{}})) {{
    let button = box.querySelector(`button[data-switch="${{name}}"]`);
    if (!button) {{
      button = document.createElement('button');
      button.dataset.switch = name;
      button.addEventListener('click', async () => {{
        const turned = button.getAttribute('aria-pressed') !== 'true';
        const response = await fetch(`/api/switches/${{encodeURIComponent(s.name)}}/${{name}}`, {{method: 'POST',
          headers: {{'Content-Type': 'application/json'}}, body: JSON.stringify({{on: turned}})}});
        if (response.ok) show(button, (await response.json()).on);
      }});
      box.append(button);
    }}
    show(button, on);
  }}
}}
function show(button, on) {{
  button.setAttribute('aria-pressed', String(on));
  button.textContent = button.dataset.switch + (on ? ' on' : ' off');
}}
async function states() {{
  try {{
    const response = await fetch('/api/sources');
    for (const s of await response.json()) {{
      const line = document.querySelector(`.state[data-source="${{CSS.escape(s.name)}}"]`);
      if (!line) continue;
      const down = s.live && (s.state === 'down' || s.state === 'connecting');  // its picture is not the camera's now
      line.closest('figure').classList.toggle('down', down);
      line.textContent = down ? s.state : `${{s.state}}  ${{s.fps.toFixed(1)}} fps`;
      toggles(line.closest('figure'), s);
    }}
  }} catch (err) {{}}
  setTimeout(states, 2000);
}}
states();
</script></body></html>
"""


class _Clips:
    """Clips cut for the page, kept in a folder of the server's own (a few, newest kept) so seeking in one, a
    Range request each, does not cut it again; the folder goes when the server closes."""

    def __init__(self, keep: int = 8) -> None:
        self.keep = keep
        self._folder: Path | None = None
        self._made: OrderedDict[tuple, tuple[Path, object]] = OrderedDict()  # key -> (file, its `clip.Cut`)
        self._lock = threading.Lock()

    def cut(self, db, span):
        """(the clip's file, its `clip.Cut`), cut now or kept from before."""
        from streamer.outputs.store import recordings
        from streamer.recording.clip import cut

        held = () if span.run is not None else tuple(s.id for s in recordings(db, span.source, span.start, span.end))
        key = (str(db), span, held)
        with self._lock:
            if key in self._made and self._made[key][0].exists():
                self._made.move_to_end(key)
                return self._made[key]
            if self._folder is None:
                self._folder = Path(tempfile.mkdtemp(prefix="streamer-clips-"))
            path = self._folder / f"{len(self._made)}-{time.monotonic_ns()}.mp4"
            try:
                made = cut(db, span, path)
            except StreamerError as exc:
                if "cannot write" in str(exc):
                    raise StreamerError("cannot cut the clip here: the server's disk is full or read-only") from None
                raise
            self._made[key] = path, made
            while len(self._made) > self.keep:
                _, (old, _) = self._made.popitem(last=False)
                old.unlink(missing_ok=True)
            return path, made

    def close(self) -> None:
        with self._lock:
            if self._folder is not None:
                shutil.rmtree(self._folder, ignore_errors=True)
                self._folder = None


REVIEW = (Path(__file__).parent / "pages" / "review.html").read_text(encoding="utf-8")


def _linked(event: dict) -> dict:
    """An event of a store as the pages get it: what they can fetch, never where the server keeps it."""
    where = f"/api/events/{event['id']}/%s?store={event['store']}"
    out = {**event, "camera": safe_name(event["source"]), "clip": where % "clip.mp4", "tracks": where % "tracks.json"}
    if "snapshot" in event:
        out["snapshot"] = where % "snapshot.jpg"
    return out


def _item_links(item: dict) -> dict:
    """A review item as the pages get it: the URLs of its clip, its boxes and its snapshot."""
    where = f"/api/review/{item['id']}/%s?store={item['store']}"
    out = {**item, "clip": where % "clip.mp4", "tracks": where % "tracks.json"}
    shot = out.pop("snapshot_event")
    if shot is not None:
        out["snapshot"] = f"/api/events/{shot}/snapshot.jpg?store={item['store']}"
    return out


def _found(hit, store: int) -> dict:
    """A hit of find as the page gets it: links to its keyframe and its footage, never server paths."""
    from urllib.parse import quote, urlencode

    out = {"store": store, "source": hit.source, "frame_index": hit.frame_index, "wall_time": hit.wall_time,
           "box": hit.box, "confidence": hit.confidence, "pts": hit.pts}
    if hit.image:
        out["image"] = f"/api/keyframes/{store}/{quote(Path(hit.image).name)}"
    if hit.clip:
        out["clip"] = f"/api/recordings/{quote(safe_name(hit.source))}?" + urlencode(
            {"from": hit.clip["from"], "to": hit.clip["to"]})
    return out


def _login(guard: Guard, failed: bool = False, then: str = "/") -> str:
    """The page's own login form, with the fields the configured credentials need; `then`: the page to go back to."""
    auth = guard.auth
    fields = ""
    if auth is not None and auth.user:
        fields += ('<label>user <input name="user" autocomplete="username" autofocus></label><label>password <input '
                   'name="password" type="password" autocomplete="current-password"></label>')
    if auth is not None and auth.token:
        fields += '<label>token <input name="token" type="password"></label>'
    note = '<p class="failed">those credentials are not right</p>' if failed else ""
    return ('<!doctype html><html><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">'
            '<title>streamer: sign in</title><style>body { font-family: system-ui, sans-serif; background: #111; '
            'color: #eee; display: grid; place-items: center; min-height: 90vh; margin: 0; } form { display: grid; '
            'gap: 0.8em; background: #1b1b1b; padding: 1.5em; border-radius: 6px; min-width: 16em; } label { display: '
            'grid; gap: 0.3em; } input, button { font: inherit; padding: 0.4em; } .failed { color: #f88; }</style>'
            f'</head><body><main><h1>streamer</h1>{note}<form method="post" action="/login">{fields}'
            f'<input type="hidden" name="next" value="{html.escape(then)}"><button type="submit">Sign in</button>'
            '</form></main></body></html>')


def _local(path: str | None) -> str:
    """Where a sign-in may send the browser back to: a path on this server, never another site (`//host`,
    `/\\host`, a scheme, a control character); anything else is the live page."""
    if not path or not path.startswith("/") or path.startswith(("//", "/\\")) or "\\" in path:
        return "/"
    if any(ord(c) < 32 or c == "\x7f" for c in path) or urlsplit(path).netloc or urlsplit(path).scheme:
        return "/"
    return quote(path, safe="/?&=%:@+,;~!$'()*")  # a header is Latin-1: anything else percent-encoded


def _byte_range(header: str | None, size: int) -> tuple[int, int] | str | None:
    """The one byte range a Range header asks of `size` bytes (first, last), "unsatisfiable" (416), or None: no
    Range, or one this server ignores and answers with the whole file, as RFC 9110 lets it (another unit,
    several ranges, a malformed one). Numbers of any length are read without `int` on them whole."""
    match = re.fullmatch(r"\s*bytes\s*=\s*([0-9]*)\s*-\s*([0-9]*)\s*", header or "")
    if match is None or not (match.group(1) or match.group(2)):
        return None
    def number(digits: str) -> int:  # past 18 digits: more than any file holds
        return int(digits) if len(digits) <= 18 else 1 << 62
    if match.group(1):
        first = number(match.group(1))
        last = min(number(match.group(2)), size - 1) if match.group(2) else size - 1
        if match.group(2) and number(match.group(2)) < first:
            return None  # inverted: not a valid range, so ignored
        return (first, last) if first <= last else "unsatisfiable"
    suffix = number(match.group(2))
    return (max(0, size - suffix), size - 1) if suffix and size else "unsatisfiable"


def _stretches(spans: list[tuple[float, float]], gap_s: float = 1.5) -> list[tuple[float, float, int]]:
    """(start, end) spans, by start, joined where the next starts within `gap_s` of the last's end:
    (start, end, how many)."""
    out: list[list] = []
    for start, end in spans:
        if out and start <= out[-1][1] + gap_s:
            out[-1][1] = max(out[-1][1], end)
            out[-1][2] += 1
        else:
            out.append([start, end, 1])
    return [tuple(row) for row in out]


def _whole(text: str) -> bool:
    """A whole number as a client may send one: ASCII digits, at most 18 (`isdigit` takes '²' and other scripts'
    digits, which `int` refuses or reads, and `int` has no end)."""
    return re.fullmatch(r"[0-9]{1,18}", text) is not None


RATE_WINDOW_S = 10.0  # the live page's frame rate: over about this many seconds
PAGES = ("/", "/review")  # what a person opens: signed out, they are sent to the sign-in form and back
CLIENT_TIMEOUT_S = 30.0
MAX_CLIENTS = 256  # connections served at once (a thread each); more are closed at once


class _Server(ThreadingHTTPServer):
    """`http.server`'s threaded server with its clients bounded: at most `MAX_CLIENTS` connections at once (the
    next are closed unanswered), and a client's error (a reset, a timeout, a watcher gone mid-frame) ends that
    client quietly, in the debug log, never as a traceback on the console."""

    daemon_threads = True  # a client's thread never holds the process at a stop

    def __init__(self, address, handler) -> None:
        super().__init__(address, handler)
        self._slots = threading.BoundedSemaphore(MAX_CLIENTS)

    def process_request(self, request, client_address) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request, client_address) -> None:
        log.debug("HTTP client %s:%s", *client_address[:2], exc_info=True)


class StatusServer:
    def __init__(self, listen: str, pipeline: Pipeline, view: LiveView, mjpeg_fps: float = 10.0, auth=None,
                 metrics_public: bool = False) -> None:
        """`auth`: the config's `http.auth`, which every request must satisfy (see `auth`), and without which
        only a loopback host is served; `metrics_public`: /metrics and /healthz need none."""
        host, port = listen.rsplit(":", 1)
        if auth is None and not is_loopback(host):
            raise StreamerError(f"--http {listen} serves beyond this machine: set http.auth (a token, or a user and a "
                                "password hash from `streamer password`) first, or listen on 127.0.0.1")
        self.guard = Guard(auth)
        self.metrics_public = metrics_public
        self.pipeline, self.view, self.interval = pipeline, view, 1.0 / mjpeg_fps
        self.registry = pipeline.metrics.registry
        self.registry.register(_Counters(pipeline))
        self._closing = threading.Event()
        self.clips = _Clips()
        self._rates: dict[str, collections.deque] = {}  # source -> (monotonic, frames) samples, for `rate`
        self._rates_lock = threading.Lock()
        handler = self._handler()
        try:
            self.httpd = _Server((host, int(port)), handler)
        except OSError as exc:
            raise StreamerError(f"cannot listen on {listen}: {exc.strerror or exc}") from None
        self.address = f"http://{host}:{self.httpd.server_address[1]}"
        self.loopback = is_loopback(host)
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="http", daemon=True)

    def start(self) -> "StatusServer":
        self._thread.start()
        return self

    @property
    def model_name(self) -> str:
        """The run's model, as `find`'s cache knows its answers."""
        model = self.pipeline.config.model
        return str(model.path or model.id)

    @property
    def find_floor(self) -> float:
        return self.pipeline.config.model.min_confidence or 0.3

    def rate(self, name: str, stats) -> float:
        """A source's frame rate over the last `RATE_WINDOW_S` (samples taken as the pages ask), not the run's
        average: a camera that stalls or comes back shows it within seconds. The run's average until two samples."""
        now = time.monotonic()
        with self._rates_lock:
            samples = self._rates.setdefault(name, collections.deque())
            samples.append((now, stats.frames))
            while len(samples) > 2 and now - samples[1][0] >= RATE_WINDOW_S:
                samples.popleft()
            (first, counted), (last, frames) = samples[0], samples[-1]
        return (frames - counted) / (last - first) if last - first >= 1.0 else stats.fps_so_far

    def source_named(self, camera: str) -> str | None:
        """The run's source a page names `camera` (its `safe_name`: a file's stem, a URL's host and path), if any."""
        return next((st.source for st in (r.stats() for r in self.pipeline.runs) if safe_name(st.source) == camera),
                    None)

    def stores(self) -> list:
        """The event stores of the run's sources that exist."""
        return sorted({st.db_path for st in (r.stats() for r in self.pipeline.runs)
                       if st.db_path is not None and st.db_path.exists()})

    def close(self) -> None:
        self._closing.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.clips.close()

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            timeout = CLIENT_TIMEOUT_S  # a client silent (or not reading) this long is let go: slowloris included

            def log_message(self, *args) -> None:  # quiet: the console is for status lines
                pass

            def _send(self, code: int, body: bytes, content_type: str, headers=()) -> None:
                self.send_response(code)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                path, query = unquote(url.path), parse_qs(url.query)
                public = path == "/login" or (server.metrics_public and path in ("/metrics", "/healthz"))
                if not public and not server.guard.request(self.headers):
                    if path in PAGES and "Authorization" not in self.headers:  # a person: the form, then back
                        self._redirect("/login?" + urlencode({"next": _local(self.path)}))
                    else:  # a program: asked for credentials the standard way (RFC 9110 11.6.1)
                        self._send(401, b"sign in first: a bearer token, HTTP Basic, or the page's login\n",
                                   "text/plain", [("WWW-Authenticate", c) for c in server.guard.challenges()])
                    return
                for pattern, route in ROUTES:
                    match = pattern.fullmatch(path)
                    if match is not None:
                        route(self, query, *match.groups())
                        return
                self._send(404, b"not found\n", "text/plain")

            def _redirect(self, where: str, cookie: str | None = None) -> None:
                self.send_response(303)
                self.send_header("Location", where)
                if cookie is not None:
                    self.send_header("Set-Cookie", f"{COOKIE}={cookie}; HttpOnly; SameSite=Strict; Path=/; "
                                                   f"Max-Age={SESSION_S if cookie else 0}")
                self.send_header("Cache-Control", "no-store")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_POST(self) -> None:
                """The login form: a session cookie for whoever gives the credentials, one slow refusal else;
                `/logout`: the session ends (its cookie is refused from now on, wherever it was copied)."""
                path = urlsplit(self.path).path
                origin = self.headers.get("Origin")
                if origin is not None and urlsplit(origin).netloc != self.headers.get("Host"):
                    # another site's page posting to our login or logout: a browser always says whose page it is
                    self._send(403, b"a sign-in or sign-out from another site's page is refused\n", "text/plain")
                    return
                if path == "/logout":
                    server.guard.end(self.headers)
                    self._redirect("/login", cookie="")
                    return
                reviewed = re.fullmatch(r"/api/review/([0-9]{1,18})", path)
                if reviewed is not None:
                    self._mark(parse_qs(urlsplit(self.path).query), int(reviewed.group(1)))
                    return
                switch = re.fullmatch(r"/api/switches/([^/]+)/([a-z]+)", path)
                if switch is not None:
                    self._switch(*switch.groups())
                    return
                if path != "/login":
                    self._send(404, b"not found\n", "text/plain")
                    return
                length = self.headers.get("Content-Length", "")
                if not _whole(length) or int(length) > 4096:
                    self._send(400, b"a login form is a few fields\n", "text/plain")
                    return
                form = parse_qs(self.rfile.read(int(length)).decode("utf-8", "replace"))
                field = lambda name: form.get(name, [None])[0]  # noqa: E731
                then = _local(field("next"))
                if server.guard.credentials(field("token"), field("user"), field("password")):
                    self._redirect(then, cookie=server.guard.session())
                    return
                time.sleep(0.5)  # guessing stays slow
                self._send(401, _login(server.guard, failed=True, then=then).encode(), "text/html; charset=utf-8")

            def _flag(self, key: str) -> bool | None:
                """A signed-in write's `{"<key>": true}` or false; None (its answer sent) for anything else."""
                if not server.guard.request(self.headers):
                    self._send(401, b"sign in first\n", "text/plain",
                               [("WWW-Authenticate", c) for c in server.guard.challenges()])
                    return None
                length = self.headers.get("Content-Length", "")
                body = self.rfile.read(int(length)) if _whole(length) and int(length) <= 1024 else b""
                try:
                    value = json.loads(body)[key]
                except (ValueError, KeyError, TypeError):
                    value = None
                if not isinstance(value, bool):
                    self._send(400, f'send {{"{key}": true}} or {{"{key}": false}}\n'.encode(), "text/plain")
                    return None
                return value

            def _switch(self, camera: str, name: str) -> None:
                """A camera's switch turned from the live page (as from Home Assistant: MQTT says so too)."""
                on = self._flag("on")
                if on is None:
                    return
                switches, source = server.pipeline.switches, server.source_named(camera)
                if switches is None or source is None or name not in SWITCHES:
                    self._send(404, b"no such camera switch\n", "text/plain")
                    return
                if not switches.set(source, name, on):
                    self._send(409, f"{name} is off in the configuration, so it cannot be switched on\n".encode(),
                               "text/plain")
                    return
                self._send(200, json.dumps({"camera": camera, "switch": name, "on": on}).encode(), "application/json")

            def _mark(self, query, item_id: int) -> None:
                """`{"reviewed": true}` (or false) for a review item, kept in its store."""
                from streamer.web.review import NoItem, mark

                reviewed = self._flag("reviewed")
                if reviewed is None:
                    return
                for db in self._stores(query):
                    try:
                        mark(db, item_id, reviewed)
                    except NoItem:
                        continue
                    except StreamerError:
                        self._send(500, b"cannot write the event store\n", "text/plain")
                        return
                    self._send(200, json.dumps({"id": item_id, "reviewed": reviewed}).encode(), "application/json")
                    return
                self._send(404, b"no such review item\n", "text/plain")

            def _review_items(self, query) -> None:
                """The review items of the stores, newest first: those that began in the last `hours` (6), of a
                `source`, with a `label`, holding an event of a `type`, `reviewed` (1) or not (0); at most 500."""
                from streamer.web.review import items

                one = self._filters(query)
                if one is None:
                    return
                hours, seen = query.get("hours", ["6"])[0], query.get("reviewed", [None])[0]
                if not _whole(hours) or not 0 < int(hours) <= 24 * 31 or seen not in (None, "0", "1"):
                    self._send(400, b"hours: a whole number of hours (up to a month); reviewed: 0 or 1\n",
                               "text/plain")
                    return
                since = time.time() - 3600 * int(hours)
                try:
                    found = [{**i, "store": n} for n, db in enumerate(server.stores())
                             for i in items(db, one["source"], since)]
                except StreamerError:
                    self._send(500, b"cannot read the event store\n", "text/plain")
                    return
                found = [i for i in found if (one["label"] is None or one["label"] in i["labels"])
                         and (one["type"] is None or one["type"] in i["types"])
                         and (seen is None or i["reviewed"] == (seen == "1"))]
                found = sorted(found, key=lambda i: i["start"], reverse=True)[:500]
                self._send(200, json.dumps([_item_links(i) for i in found]).encode(), "application/json")

            def _item_clip(self, query, item_id: str, tracks: bool = False) -> None:
                """A review item's clip (or its boxes), from before its first object came to after its last left."""
                from streamer.web import review

                record = server.pipeline.config.record
                self._first_clip(query, lambda db: review.span(db, review.item(db, int(item_id)), record.pre_s,
                                                               record.post_s), tracks, b"no such review item\n")

            def _item_tracks(self, query, item_id: str) -> None:
                self._item_clip(query, item_id, tracks=True)

            def _login_page(self, query) -> None:
                then = _local(query.get("next", ["/"])[0])
                self._send(200, _login(server.guard, then=then).encode(), "text/html; charset=utf-8")

            def _event_clip(self, query, event_id: str, tracks: bool = False) -> None:
                """An event's clip from the recordings, as `streamer clip --event` cuts it (or its boxes)."""
                from streamer.recording.clip import event_range

                record = server.pipeline.config.record
                self._first_clip(query, lambda db: event_range(db, int(event_id), record.pre_s, record.post_s),
                                 tracks, b"no such event\n")

            def _first_clip(self, query, span_of, tracks: bool, missing: bytes) -> None:
                """The clip of `span_of(store)` from the first store (of those the request names) that has it."""
                for db in self._stores(query):
                    try:
                        span = span_of(db)
                    except StreamerError:
                        continue
                    self._clip(db, span, tracks)
                    return
                self._send(404, missing, "text/plain")

            def _recordings(self, query, source: str) -> None:
                """With `from` and `to` (ISO-8601): that stretch of a camera's recording as an MP4; without: the
                segments recorded (start, end, seconds, bytes), oldest first; with `stretches`: the stretches of
                footage without an outage instead (start, end, seconds, segments), what a timeline draws (a week
                of minute segments is a few rows, not 10,000)."""
                from streamer.outputs.store import epoch, recorded_spans, recordings
                from streamer.recording.clip import Span

                start, end = query.get("from", [None])[0], query.get("to", [None])[0]
                if start is None and end is None and "stretches" in query:
                    spans = sorted(span for db in server.stores() for span in recorded_spans(db, source))
                    listed = [{"start": iso_time(a), "end": iso_time(b), "seconds": round(b - a, 3), "segments": n}
                              for a, b, n in _stretches(spans)]
                    self._send(200 if spans else 404, json.dumps(listed).encode(), "application/json")
                    return
                held = {db: found for db in server.stores() if (found := recordings(db, source))}
                stores = list(held)
                if start is None and end is None:
                    listed = [{"start": iso_time(s.start_wall), "end": iso_time(s.end_wall),
                               "seconds": round(s.end_wall - s.start_wall, 3), "bytes": s.bytes}
                              for segments in held.values() for s in segments]
                    self._send(200 if stores else 404, json.dumps(listed).encode(), "application/json")
                    return
                try:
                    if start is None or end is None:
                        raise StreamerError("give both from and to (ISO-8601 times)")
                    span = epoch(start, "from"), epoch(end, "to")
                except StreamerError as exc:
                    self._send(400, f"{exc}\n".encode(), "text/plain")
                    return
                if not stores:
                    self._send(404, b"no recordings of that source\n", "text/plain")
                    return
                self._clip(stores[0], Span(source, *span), tracks="tracks" in query)

            def _clip(self, db, span, tracks: bool = False) -> None:
                """The clip of `span`, or with `tracks` the boxes on each of its frames (for the page to draw)."""
                from streamer.recording.clip import boxes_of

                try:
                    path, made = server.clips.cut(db, span)
                except StreamerError as exc:  # no footage there: the line says what there is (never a path)
                    self._send(404, f"{exc}\n".encode(), "text/plain")
                    return
                if not tracks:
                    self._file(path, "video/mp4")
                    return
                frames = [[{k: r[k] for k in ("track_id", "label", "bbox", "text")} for r in rows]
                          for rows in boxes_of(made.shown)]
                self._send(200, json.dumps({"fps": made.fps, "frames": frames}).encode(), "application/json")

            def _event_tracks(self, query, event_id: str) -> None:
                self._event_clip(query, event_id, tracks=True)

            def _history(self, query) -> None:
                """The stores' events, newest first (at most `limit`, 200), filtered by source, label and type,
                each with the URLs of its snapshot, clip and clip's boxes."""
                from streamer.outputs.store import query as find

                one = self._filters(query)
                if one is None:
                    return
                limit = query.get("limit", ["200"])[0]
                if not _whole(limit) or not 0 < int(limit) <= 10_000:
                    self._send(400, b"limit: a whole number from 1 to 10000\n", "text/plain")
                    return
                try:
                    found = [{**e, "store": n} for n, db in enumerate(server.stores())
                             for e in find(db, with_id=True, **one)]
                except StreamerError:
                    self._send(500, b"cannot read the event store\n", "text/plain")
                    return
                found = sorted(found, key=lambda e: e["wall_time"], reverse=True)[: int(limit)]
                self._send(200, json.dumps([_linked(e) for e in found]).encode(), "application/json")

            def _filters(self, query) -> dict | None:
                """The source, label and type a request filters by; None (a 400 sent) for a type there is not."""
                from streamer.records import EVENT_TYPES

                one = {key: query.get(key, [None])[0] or None for key in ("source", "label", "type")}
                if one["source"] is not None:  # a camera as the pages name it; a store's older source as it is
                    one["source"] = server.source_named(one["source"]) or one["source"]
                if one["type"] is not None and one["type"] not in EVENT_TYPES:
                    self._send(400, f"type: one of {', '.join(EVENT_TYPES)}\n".encode(), "text/plain")
                    return None
                return one

            def _sources(self, query) -> None:
                """Each source's state and frame rate, for the pages."""
                out = []
                switches = server.pipeline.switches
                for run in server.pipeline.runs:
                    st = run.stats()
                    name = safe_name(st.source)
                    out.append({"name": name, "live": st.live, "state": st.state,
                                "fps": round(server.rate(name, st), 1), "frames": st.frames,
                                "switches": {} if switches is None else {
                                    n: switches.on(st.source, n) for n in switches.names}})
                self._send(200, json.dumps(out).encode(), "application/json")

            def _review(self, query) -> None:
                self._send(200, REVIEW.replace("<!--signout-->", self._signout()).encode(), "text/html; charset=utf-8")

            def _file(self, path, content_type: str) -> None:
                """A file, whole or the byte range asked for (a browser's <video> seeks with Range requests)."""
                size = path.stat().st_size
                first, last = 0, size - 1
                asked = _byte_range(self.headers.get("Range"), size)
                if asked == "unsatisfiable":
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{size}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if asked:
                    first, last = asked
                self.send_response(206 if asked else 200)
                self.send_header("Content-Type", content_type)
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(last - first + 1))
                if asked:
                    self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
                self.end_headers()
                with path.open("rb") as f:
                    f.seek(first)
                    left = last - first + 1
                    try:
                        while left > 0:
                            chunk = f.read(min(left, 1 << 16))
                            if not chunk:
                                break
                            self.wfile.write(chunk)
                            left -= len(chunk)
                    except (BrokenPipeError, ConnectionResetError):
                        return

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
                if not _whole(after):
                    self._send(400, b"after: expected the seq of the last event seen, a whole number\n", "text/plain")
                    return
                self._send(200, json.dumps(server.view.events_after(int(after))).encode(), "application/json")

            def _page(self, query) -> None:
                names = [safe_name(r.stats().source) for r in server.pipeline.runs]
                cameras = "".join(
                    f'<figure><img alt="{html.escape(n)}" src="/sources/{html.escape(n)}/mjpeg">'
                    f'<figcaption>{html.escape(n)} <span class="state" data-source="{html.escape(n)}"></span>'
                    "</figcaption></figure>" for n in names
                )
                self._send(200, PAGE.format(cameras=cameras, signout=self._signout()).encode(),
                           "text/html; charset=utf-8")

            def _signout(self) -> str:
                """A sign-out button where a page was opened with a session (Basic and tokens have none to end)."""
                if not server.guard.on or "Authorization" in self.headers:
                    return ""
                return ('<form method="post" action="/logout" style="display:inline; margin-left:1em">'
                        '<button type="submit">sign out</button></form>')

            def _search(self, query) -> None:
                """The run's event stores searched (`store.query`), best matches first, at most 100, within the
                source, label and type asked for."""
                from streamer.outputs.store import match_words
                from streamer.outputs.store import query as find

                words = query.get("q", [""])[0]
                if not match_words(words):
                    self._send(400, b"q: no word to look for\n", "text/plain")
                    return
                one = self._filters(query)
                if one is None:
                    return
                try:
                    found = [{**e, "store": n} for n, db in enumerate(server.stores())
                             for e in find(db, search=words, with_id=True, **one)][:100]
                except StreamerError:
                    self._send(500, b"cannot read the event store\n", "text/plain")
                    return
                self._send(200, json.dumps([_linked(e) for e in found]).encode(), "application/json")

            def _find(self, query) -> None:
                """`streamer find` on the run's stores with the run's own model, hits as NDJSON lines the moment
                they are found (then a last line `{"done": ..., "hits": N}`), links instead of server paths."""
                from streamer.outputs.store import epoch
                from streamer.recording.find import OnWorker, find

                phrase = " ".join(query.get("phrase", [""])[0].split())
                worker = server.pipeline.worker
                if not phrase:
                    self._send(400, b"phrase: say what to look for\n", "text/plain")
                    return
                if worker is None:
                    self._send(503, b"find needs the run's own model (streamer find STORE PHRASE on Ray)\n",
                               "text/plain")
                    return
                try:
                    start, end = ((epoch(query[key][0], key) if query.get(key) else None) for key in ("from", "to"))
                except StreamerError as exc:
                    self._send(400, f"{exc}\n".encode(), "text/plain")
                    return
                source = query.get("source", [None])[0]
                self.send_response(200)
                self.send_header("Content-Type", "application/x-ndjson")
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                count = 0
                model = OnWorker(worker)
                try:
                    for n, db in enumerate(server.stores()):
                        def sent(hit, n=n):
                            nonlocal count
                            count += 1
                            self.wfile.write((json.dumps(_found(hit, n)) + "\n").encode())
                            self.wfile.flush()

                        try:
                            find(db, phrase, lambda: model, server.model_name, source=source, start=start, end=end,
                                 min_confidence=server.find_floor, on_hit=sent)
                        except StreamerError as exc:
                            if "nothing was kept" not in str(exc) and "keeps no keyframes" not in str(exc):
                                self.wfile.write((json.dumps({"error": str(exc)}) + "\n").encode())
                    self.wfile.write((json.dumps({"done": True, "hits": count}) + "\n").encode())
                except (BrokenPipeError, ConnectionResetError):
                    return

            def _keyframe(self, query, store: str, name: str) -> None:
                """A kept keyframe's JPEG (a hit of find), by its name in a store's keyframes/ folder."""
                stores = server.stores()
                path = stores[int(store)].parent / "keyframes" / name if int(store) < len(stores) else None
                if path is None or not path.is_file():
                    self._send(404, b"no such keyframe\n", "text/plain")
                    return
                self._file(path, "image/jpeg")

            def _snapshot(self, query, event_id: str) -> None:
                """An event's snapshot (a JPEG crop of its object)."""
                from streamer.outputs.store import snapshot_of

                for db in self._stores(query):
                    path = snapshot_of(db, int(event_id))
                    if path is not None:
                        self._file(path, "image/jpeg")
                        return
                self._send(404, b"no snapshot of that event\n", "text/plain")

            def _stores(self, query) -> list:
                """The stores a request names (`store`: its place in the run's list), or all of them."""
                stores = server.stores()
                asked = query.get("store", [None])[0]
                if asked is None:
                    return stores
                return [stores[int(asked)]] if _whole(asked) and int(asked) < len(stores) else []

            def _mjpeg(self, query, name: str) -> None:
                known = {safe_name(r.stats().source) for r in server.pipeline.runs}
                if name not in known:
                    self._send(404, b"no such source\n", "text/plain")
                    return
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                sent = -1
                while not server._closing.wait(server.interval):  # a stop ends every stream at once
                    count, data = server.view.jpeg(name)
                    if data is not None and count != sent:
                        # a watcher that went away or stalls past the socket's timeout ends its own stream here
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                         + str(len(data)).encode() + b"\r\n\r\n" + data + b"\r\n")
                        sent = count

        # path (a pattern, matched whole) -> what answers it, with the query's parameters and the pattern's groups
        ROUTES = [(re.compile(pattern), route) for pattern, route in (
            ("/", Handler._page), ("/login", Handler._login_page), ("/metrics", Handler._metrics), ("/healthz", Handler._healthz),
            ("/api/events", Handler._events), ("/api/search", Handler._search), ("/api/find", Handler._find),
            (r"/api/keyframes/([0-9]{1,4})/([A-Za-z0-9_-][A-Za-z0-9._-]{0,200}\.jpg)", Handler._keyframe),
            (r"/api/events/([0-9]{1,18})/clip\.mp4", Handler._event_clip),
            (r"/api/events/([0-9]{1,18})/snapshot\.jpg", Handler._snapshot),
            (r"/api/events/([0-9]{1,18})/tracks\.json", Handler._event_tracks), ("/api/history", Handler._history),
            ("/api/sources", Handler._sources), ("/api/review", Handler._review_items),
            (r"/api/review/([0-9]{1,18})/clip\.mp4", Handler._item_clip),
            (r"/api/review/([0-9]{1,18})/tracks\.json", Handler._item_tracks), ("/review", Handler._review), (r"/api/recordings/([^/]+)", Handler._recordings),
            (r"/sources/([^/]+)/mjpeg", Handler._mjpeg))]
        return Handler
