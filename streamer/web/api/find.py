"""Find in the footage: `streamer find` on the run's stores with the run's own model (its frames wait behind the
cameras' keyframes), each hit an NDJSON line the moment it is found."""

from __future__ import annotations

import json
import queue
import threading
from pathlib import Path
from typing import Annotated
from urllib.parse import quote, urlencode

import anyio.to_thread
from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import StreamingResponse

from streamer.errors import StreamerError
from streamer.sources import safe_name
from streamer.web.api.login import SignedIn
from streamer.web.site import Here, Site

router = APIRouter(tags=["find"], dependencies=SignedIn)


class _Gone(Exception):
    """The client went away: find stops at its next batch or hit."""


@router.get("/api/find", response_class=StreamingResponse,
            responses={200: {"content": {"application/x-ndjson": {}}}})
def find_in_footage(site: Here, phrase: str = "", source: str | None = None,
                    start: Annotated[str | None, Query(alias="from")] = None,
                    end: Annotated[str | None, Query(alias="to")] = None) -> StreamingResponse:
    """The kept keyframes where `phrase` is seen (grounded by the model), between `from` and `to` (ISO-8601), of a
    `source`: a JSON line per hit with links to its keyframe and footage, then `{"done": true, "hits": N}`."""
    from streamer.outputs.store import epoch

    phrase = " ".join(phrase.split())
    if not phrase:
        raise HTTPException(400, "phrase: say what to look for")
    if site.pipeline.worker is None:
        raise HTTPException(503, "find needs the run's own model (streamer find STORE PHRASE on Ray)")
    try:
        span = tuple(epoch(value, key) if value else None for key, value in (("from", start), ("to", end)))
    except StreamerError as exc:
        raise HTTPException(400, str(exc)) from None
    return StreamingResponse(_hits(site, phrase, source, *span), media_type="application/x-ndjson")


async def _hits(site: Site, phrase: str, source: str | None, start: float | None, end: float | None):
    """The lines of the answer, from find running on a thread of its own. A client that leaves stops it after the
    batch of keyframes the model has in hand: Starlette cancels this generator when the client disconnects, even
    while it waits for a line that may not come (a phrase seen nowhere sends nothing until the end)."""
    from streamer.recording.find import OnWorker, find

    lines: queue.Queue[str | None] = queue.Queue()
    gone = threading.Event()
    model = OnWorker(site.pipeline.worker)

    def still_wanted(*_) -> None:
        if gone.is_set():
            raise _Gone()

    def run() -> None:
        count = 0

        def sent(hit, n: int) -> None:
            nonlocal count
            still_wanted()
            count += 1
            lines.put(json.dumps(_found(hit, n)) + "\n")

        try:
            for n, db in enumerate(site.stores()):
                try:
                    find(db, phrase, lambda: model, site.model_name, source=source, start=start, end=end,
                         min_confidence=site.find_floor, on_hit=lambda hit, n=n: sent(hit, n),
                         on_progress=still_wanted)
                except StreamerError as exc:
                    if "nothing was kept" not in str(exc) and "keeps no keyframes" not in str(exc):
                        lines.put(json.dumps({"error": str(exc)}) + "\n")
            lines.put(json.dumps({"done": True, "hits": count}) + "\n")
        except _Gone:
            pass
        finally:
            lines.put(None)

    threading.Thread(target=run, name="find", daemon=True).start()
    try:
        while (line := await anyio.to_thread.run_sync(lines.get, abandon_on_cancel=True)) is not None:
            yield line
    finally:
        gone.set()


def _found(hit, store: int) -> dict:
    """A hit of find as the page gets it: links to its keyframe and its footage, never server paths."""
    out = {"store": store, "source": hit.source, "frame_index": hit.frame_index, "wall_time": hit.wall_time,
           "box": hit.box, "confidence": hit.confidence, "pts": hit.pts}
    if hit.image:
        out["image"] = f"/api/keyframes/{store}/{quote(Path(hit.image).name)}"
    if hit.clip:
        out["clip"] = f"/api/recordings/{quote(safe_name(hit.source))}?" + urlencode(
            {"from": hit.clip["from"], "to": hit.clip["to"]})
    return out
