"""What every router of the web side reads: the run (its sources, stores, model and switches), the live view,
the sign-in guard, the clips cut for the pages and the frame rates they show. One per server, in the app's
state; a route asks for it as `site: Here`. Beside it, what routers share of a request: an id in a path (`Id`),
the store a query names (`Store`), a write's `{"<key>": bool}` body (`flag`)."""

from __future__ import annotations

import collections
import json
import threading
import time
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Query, Request

from streamer.auth import Guard
from streamer.pipeline.local import Pipeline
from streamer.serving import body_within, whole
from streamer.sources import safe_name
from streamer.web.files import Clips
from streamer.web.live import LiveView

RATE_WINDOW_S = 10.0  # the live page's frame rate: over about this many seconds


class Site:
    def __init__(self, pipeline: Pipeline, view: LiveView, guard: Guard, mjpeg_fps: float = 10.0,
                 metrics_public: bool = False) -> None:
        self.pipeline, self.view, self.guard = pipeline, view, guard
        self.interval = 1.0 / mjpeg_fps
        self.metrics_public = metrics_public
        self.closing = threading.Event()  # set first at a stop: every stream ends at once
        self.clips = Clips()
        self._rates: dict[str, collections.deque] = {}  # source -> (monotonic, frames) samples, for `rate`
        self._rates_lock = threading.Lock()

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

    def names(self) -> list[str]:
        """The run's sources as the pages name them (`safe_name`: a file's stem, a URL's host and path)."""
        return [safe_name(r.stats().source) for r in self.pipeline.runs]

    def source_named(self, camera: str) -> str | None:
        """The run's source a page names `camera`, if any."""
        return next((st.source for st in (r.stats() for r in self.pipeline.runs) if safe_name(st.source) == camera),
                    None)

    def stores(self, asked: str | None = None) -> list:
        """The event stores of the run's sources that exist; with `asked`, the one at that place in the list
        (as the pages name a store), or none."""
        stores = sorted({st.db_path for st in (r.stats() for r in self.pipeline.runs)
                         if st.db_path is not None and st.db_path.exists()})
        if asked is None:
            return stores
        return [stores[int(asked)]] if whole(asked) and int(asked) < len(stores) else []

    def filters(self, source: str | None, label: str | None, type: str | None) -> dict:
        """The source, label and type a request filters by (a camera as the pages name it; a store's older source
        as it is); a 400 for a type there is not."""
        from streamer.records import EVENT_TYPES

        one = {"source": source or None, "label": label or None, "type": type or None}
        if one["source"] is not None:
            one["source"] = self.source_named(one["source"]) or one["source"]
        if one["type"] is not None and one["type"] not in EVENT_TYPES:
            raise HTTPException(400, f"type: one of {', '.join(EVENT_TYPES)}")
        return one


async def current(request: Request) -> Site:
    return request.app.state.site


Here = Annotated[Site, Depends(current)]
Id = Annotated[str, Path(pattern=r"^[0-9]{1,18}$", description="an event's or review item's id")]
Store = Annotated[str | None, Query(description="the store's place in the run's list (all stores if not given)")]


async def flag(request: Request, key: str) -> bool:
    """A write's `{"<key>": true}` or false; a 400 for anything else."""
    try:
        value = json.loads(await body_within(request, 1024) or b"")[key]
    except (ValueError, KeyError, TypeError):
        value = None
    if not isinstance(value, bool):
        raise HTTPException(400, f'send {{"{key}": true}} or {{"{key}": false}}')
    return value


def flag_body(key: str) -> dict:
    """The OpenAPI description of a `{"<key>": true}` body (read by `flag`, which takes nothing but a boolean)."""
    schema = {"type": "object", "properties": {key: {"type": "boolean"}}, "required": [key]}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}
