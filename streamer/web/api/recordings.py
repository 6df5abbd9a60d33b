"""Review and recordings: the review page, review items (an activity each, marked reviewed in its store), the
clips of items and events with the boxes to draw on them, and any stretch of a camera's recording; every clip
and file with Range requests, so a browser plays and seeks it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from streamer.errors import StreamerError
from streamer.records import iso_time
from streamer.web.api.login import SignedIn, same_site, signout
from streamer.web.files import MediaFile
from streamer.web.site import Here, Id, Site, Store, flag, flag_body, whole

REVIEW = (Path(__file__).parent.parent / "pages" / "review.html").read_text(encoding="utf-8")
MP4 = {200: {"content": {"video/mp4": {}}}, 206: {"description": "the byte range asked for"}}

router = APIRouter(tags=["review and recordings"], dependencies=SignedIn)


@router.get("/review", response_class=HTMLResponse)
async def review_page(request: Request) -> HTMLResponse:
    """The review page: a timeline per camera, review items, events, search, and the player."""
    return HTMLResponse(REVIEW.replace("<!--signout-->", signout(request)))


@router.get("/api/review")
def review_items(site: Here, hours: str = "6", reviewed: str | None = None, source: str | None = None,
                 label: str | None = None, type: str | None = None) -> JSONResponse:
    """The review items of the stores, newest first: those that began in the last `hours` (up to a month), of a
    `source`, with a `label`, holding an event of a `type`, `reviewed` (1) or not (0); at most 500."""
    from streamer.web.review import items

    one = site.filters(source, label, type)
    if not whole(hours) or not 0 < int(hours) <= 24 * 31 or reviewed not in (None, "0", "1"):
        raise HTTPException(400, "hours: a whole number of hours (up to a month); reviewed: 0 or 1")
    since = time.time() - 3600 * int(hours)
    try:
        found = [{**i, "store": n} for n, db in enumerate(site.stores()) for i in items(db, one["source"], since)]
    except StreamerError:
        raise HTTPException(500, "cannot read the event store") from None
    found = [i for i in found if (one["label"] is None or one["label"] in i["labels"])
             and (one["type"] is None or one["type"] in i["types"])
             and (reviewed is None or i["reviewed"] == (reviewed == "1"))]
    found = sorted(found, key=lambda i: i["start"], reverse=True)[:500]
    return JSONResponse([_item_links(i) for i in found])


@router.post("/api/review/{item_id}", dependencies=[Depends(same_site)], openapi_extra=flag_body("reviewed"))
async def mark(item_id: Id, request: Request, site: Here, store: Store = None) -> JSONResponse:
    """`{"reviewed": true}` (or false) for a review item, kept in its store."""
    from streamer.web.review import NoItem, mark

    reviewed = await flag(request, "reviewed")
    for db in site.stores(store):
        try:
            mark(db, int(item_id), reviewed)
        except NoItem:
            continue
        except StreamerError:
            raise HTTPException(500, "cannot write the event store") from None
        return JSONResponse({"id": int(item_id), "reviewed": reviewed})
    raise HTTPException(404, "no such review item")


@router.get("/api/review/{item_id}/clip.mp4", response_class=MediaFile, responses=MP4)
def item_clip(item_id: Id, site: Here, store: Store = None) -> Response:
    """A review item's clip, from before its first object came to after its last left."""
    return _first_clip(site, store, _item_span(site, item_id), False, "no such review item")


@router.get("/api/review/{item_id}/tracks.json")
def item_tracks(item_id: Id, site: Here, store: Store = None) -> Response:
    """The boxes on each frame of a review item's clip, for the page to draw."""
    return _first_clip(site, store, _item_span(site, item_id), True, "no such review item")


@router.get("/api/events/{event_id}/clip.mp4", response_class=MediaFile, responses=MP4)
def event_clip(event_id: Id, site: Here, store: Store = None) -> Response:
    """An event's clip from the recordings, as `streamer clip --event` cuts it."""
    return _first_clip(site, store, _event_span(site, event_id), False, "no such event")


@router.get("/api/events/{event_id}/tracks.json")
def event_tracks(event_id: Id, site: Here, store: Store = None) -> Response:
    """The boxes on each frame of an event's clip, for the page to draw."""
    return _first_clip(site, store, _event_span(site, event_id), True, "no such event")


@router.get("/api/recordings/{source}", response_class=MediaFile, responses=MP4)
def recordings(source: str, site: Here, start: Annotated[str | None, Query(alias="from")] = None,
               end: Annotated[str | None, Query(alias="to")] = None, stretches: str | None = None,
               tracks: str | None = None) -> Response:
    """With `from` and `to` (ISO-8601): that stretch of a camera's recording as an MP4 (with `tracks`, its boxes);
    without: the segments recorded (start, end, seconds, bytes), oldest first; with `stretches`: the stretches
    of footage without an outage instead (start, end, seconds, segments), what a timeline draws (a week of
    minute segments is a few rows, not 10,000)."""
    from streamer.outputs.store import epoch, recorded_spans, recordings
    from streamer.recording.clip import Span

    if start is None and end is None and stretches is not None:
        spans = sorted(span for db in site.stores() for span in recorded_spans(db, source))
        listed = [{"start": iso_time(a), "end": iso_time(b), "seconds": round(b - a, 3), "segments": n}
                  for a, b, n in _stretches(spans)]
        return JSONResponse(listed, 200 if spans else 404)
    held = {db: found for db in site.stores() if (found := recordings(db, source))}
    if start is None and end is None:
        listed = [{"start": iso_time(s.start_wall), "end": iso_time(s.end_wall),
                   "seconds": round(s.end_wall - s.start_wall, 3), "bytes": s.bytes}
                  for segments in held.values() for s in segments]
        return JSONResponse(listed, 200 if held else 404)
    try:
        if start is None or end is None:
            raise StreamerError("give both from and to (ISO-8601 times)")
        span = epoch(start, "from"), epoch(end, "to")
    except StreamerError as exc:
        raise HTTPException(400, str(exc)) from None
    if not held:
        raise HTTPException(404, "no recordings of that source")
    return _clip(site, next(iter(held)), Span(source, *span), tracks is not None)


def _item_span(site: Site, item_id: str):
    from streamer.web import review

    record = site.pipeline.config.record
    return lambda db: review.span(db, review.item(db, int(item_id)), record.pre_s, record.post_s)


def _event_span(site: Site, event_id: str):
    from streamer.recording.clip import event_range

    record = site.pipeline.config.record
    return lambda db: event_range(db, int(event_id), record.pre_s, record.post_s)


def _first_clip(site: Site, store: str | None, span_of, tracks: bool, missing: str) -> Response:
    """The clip of `span_of(store)` from the first store (of those the request names) that has it."""
    for db in site.stores(store):
        try:
            span = span_of(db)
        except StreamerError:
            continue
        return _clip(site, db, span, tracks)
    raise HTTPException(404, missing)


def _clip(site: Site, db, span, tracks: bool = False) -> Response:
    """The clip of `span`, or with `tracks` the boxes on each of its frames (for the page to draw)."""
    from streamer.recording.clip import boxes_of

    try:
        path, made = site.clips.cut(db, span)
    except StreamerError as exc:  # no footage there: the line says what there is (never a path)
        raise HTTPException(404, str(exc)) from None
    if not tracks:
        return MediaFile(path, media_type="video/mp4")
    frames = [[{k: r[k] for k in ("track_id", "label", "bbox", "text")} for r in rows] for rows in boxes_of(made.shown)]
    return JSONResponse({"fps": made.fps, "frames": frames})


def _item_links(item: dict) -> dict:
    """A review item as the pages get it: the URLs of its clip, its boxes and its snapshot."""
    where = f"/api/review/{item['id']}/%s?store={item['store']}"
    out = {**item, "clip": where % "clip.mp4", "tracks": where % "tracks.json"}
    shot = out.pop("snapshot_event")
    if shot is not None:
        out["snapshot"] = f"/api/events/{shot}/snapshot.jpg?store={item['store']}"
    return out


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
