"""Events and search: the stores' events newest first and filtered, a full-text search over what was seen
(labels, texts read, captions), an event's snapshot, and a keyframe kept for `find`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path as At
from fastapi.responses import JSONResponse, Response

from streamer.errors import StreamerError
from streamer.sources import safe_name
from streamer.web.api.login import SignedIn
from streamer.web.files import MediaFile
from streamer.web.site import Here, Id, Store, whole

JPEG = {200: {"content": {"image/jpeg": {}}}}

router = APIRouter(tags=["events and search"], dependencies=SignedIn)


@router.get("/api/history")
def history(site: Here, limit: str = "200", source: str | None = None, label: str | None = None,
            type: str | None = None) -> JSONResponse:
    """The stores' events, newest first (at most `limit`), filtered by source, label and type, each with the URLs
    of its snapshot, clip and clip's boxes."""
    from streamer.outputs.store import query

    one = site.filters(source, label, type)
    if not whole(limit) or not 0 < int(limit) <= 10_000:
        raise HTTPException(400, "limit: a whole number from 1 to 10000")
    try:
        found = [{**e, "store": n} for n, db in enumerate(site.stores()) for e in query(db, with_id=True, **one)]
    except StreamerError:
        raise HTTPException(500, "cannot read the event store") from None
    found = sorted(found, key=lambda e: e["wall_time"], reverse=True)[: int(limit)]
    return JSONResponse([linked(e) for e in found])


@router.get("/api/search")
def search(site: Here, q: str = "", source: str | None = None, label: str | None = None,
           type: str | None = None) -> JSONResponse:
    """The run's event stores searched for every word of `q` (labels, texts, captions), best matches first, at
    most 100, within the source, label and type asked for."""
    from streamer.outputs.store import match_words, query

    if not match_words(q):
        raise HTTPException(400, "q: no word to look for")
    one = site.filters(source, label, type)
    try:
        found = [{**e, "store": n} for n, db in enumerate(site.stores())
                 for e in query(db, search=q, with_id=True, **one)][:100]
    except StreamerError:
        raise HTTPException(500, "cannot read the event store") from None
    return JSONResponse([linked(e) for e in found])


@router.get("/api/events/{event_id}/snapshot.jpg", response_class=MediaFile, responses=JPEG)
def snapshot(event_id: Id, site: Here, store: Store = None) -> Response:
    """An event's snapshot (a JPEG crop of its object)."""
    from streamer.outputs.store import snapshot_of

    for db in site.stores(store):
        path = snapshot_of(db, int(event_id))
        if path is not None:
            return MediaFile(path, media_type="image/jpeg")
    raise HTTPException(404, "no snapshot of that event")


@router.get("/api/keyframes/{store}/{name}", response_class=MediaFile, responses=JPEG)
def keyframe(store: Annotated[str, At(pattern=r"^[0-9]{1,4}$")],
             name: Annotated[str, At(pattern=r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,200}\.jpg$")], site: Here) -> Response:
    """A kept keyframe's JPEG (a hit of find), by its name in a store's keyframes/ folder."""
    stores = site.stores(store)
    path = stores[0].parent / "keyframes" / name if stores else None
    if path is None or not path.is_file():
        raise HTTPException(404, "no such keyframe")
    return MediaFile(path, media_type="image/jpeg")


def linked(event: dict) -> dict:
    """An event of a store as the pages get it: what they can fetch, never where the server keeps it."""
    where = f"/api/events/{event['id']}/%s?store={event['store']}"
    out = {**event, "camera": safe_name(event["source"]), "clip": where % "clip.mp4", "tracks": where % "tracks.json"}
    if "snapshot" in event:
        out["snapshot"] = where % "snapshot.jpg"
    return out
