"""The live side: the page of every camera, each camera's annotated stream as MJPEG (encoded only while someone
watches, once for all of them), the latest events, the sources' states, and the cameras' switches."""

from __future__ import annotations

import html
from pathlib import Path

import anyio
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse

from streamer.outputs.switches import SWITCHES
from streamer.sources import safe_name
from streamer.web.api.login import SignedIn, same_site, signout
from streamer.web.site import Here, Site, flag, flag_body, whole

PAGE = (Path(__file__).parent.parent / "pages" / "live.html").read_text(encoding="utf-8")
CLIENT_TIMEOUT_S = 30.0  # a watcher that takes no frame this long (a tab asleep, a dead peer) is let go

router = APIRouter(tags=["live"], dependencies=SignedIn)


@router.get("/", response_class=HTMLResponse)
async def page(request: Request, site: Here) -> HTMLResponse:
    """Every camera's live view, a search box over what was seen (or, ticked, find in the footage), and the
    latest events, updating without reload."""
    cameras = "".join(
        f'<figure><img alt="{html.escape(n)}" src="/sources/{html.escape(n)}/mjpeg">'
        f'<figcaption>{html.escape(n)} <span class="state" data-source="{html.escape(n)}"></span></figcaption>'
        "</figure>" for n in site.names())
    return HTMLResponse(PAGE.replace("<!--cameras-->", cameras).replace("<!--signout-->", signout(request)))


@router.get("/sources/{name}/mjpeg", response_class=StreamingResponse,
            responses={200: {"content": {"multipart/x-mixed-replace; boundary=frame": {}}}})
def mjpeg(name: str, site: Here) -> StreamingResponse:
    """A camera's annotated stream as MJPEG, at most `http.mjpeg_fps`."""
    if name not in site.names():
        raise HTTPException(404, "no such source")
    return Watched(_frames(site, name), media_type="multipart/x-mixed-replace; boundary=frame")


async def _frames(site: Site, name: str):
    sent = -1
    while not site.closing.is_set():  # a stop ends every stream at once
        await anyio.sleep(site.interval)
        drawn = site.view.drawn(name)
        if drawn is None:  # a new frame to draw: off the event loop (the first watcher draws, the rest wait for it)
            drawn = await anyio.to_thread.run_sync(site.view.jpeg, name)
        count, data = drawn
        if data is not None and count != sent:
            yield (b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: " + str(len(data)).encode() + b"\r\n\r\n"
                   + data + b"\r\n")
            sent = count


class Watched(StreamingResponse):
    """A stream whose client must keep taking it: one that has not taken a part for `CLIENT_TIMEOUT_S` (its
    socket's buffer full) is let go, where Starlette would wait on it for ever."""

    async def stream_response(self, send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        async for chunk in self.body_iterator:
            with anyio.move_on_after(CLIENT_TIMEOUT_S) as late:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            if late.cancelled_caught:
                raise ConnectionError("a watcher stopped taking its stream")  # the server closes the connection
        await send({"type": "http.response.body", "body": b"", "more_body": False})


@router.get("/api/events")
async def events(site: Here, after: str = "0") -> JSONResponse:
    """The latest events (up to 200) after the `seq` of the last one seen, for the page."""
    after = after or "0"
    if not whole(after):
        raise HTTPException(400, "after: expected the seq of the last event seen, a whole number")
    return JSONResponse(site.view.events_after(int(after)))


@router.get("/api/sources")
async def sources(site: Here) -> JSONResponse:
    """Each source's state, frame rate over the last seconds, frames and switches."""
    out = []
    switches = site.pipeline.switches
    for run in site.pipeline.runs:
        st = run.stats()
        name = safe_name(st.source)
        out.append({"name": name, "live": st.live, "state": st.state, "fps": round(site.rate(name, st), 1),
                    "frames": st.frames, "switches": {} if switches is None else {
                        n: switches.on(st.source, n) for n in switches.names}})
    return JSONResponse(out)


@router.post("/api/switches/{camera}/{name}", dependencies=[Depends(same_site)], openapi_extra=flag_body("on"))
async def switch(camera: str, name: str, request: Request, site: Here) -> JSONResponse:
    """A camera's switch (detect, record, snapshots) turned with `{"on": true}` or false, as from Home Assistant
    (MQTT says so too)."""
    on = await flag(request, "on")
    switches, source = site.pipeline.switches, site.source_named(camera)
    if switches is None or source is None or name not in SWITCHES:
        raise HTTPException(404, "no such camera switch")
    if not switches.set(source, name, on):
        raise HTTPException(409, f"{name} is off in the configuration, so it cannot be switched on")
    return JSONResponse({"camera": camera, "switch": name, "on": on})
