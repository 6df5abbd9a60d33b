"""The HTTP server of a run: the FastAPI app (its routers in `api/`, sign-in on each), served by uvicorn on a
thread of its own, so the run's threads and signals stay as they are. Bound to 127.0.0.1 unless told otherwise;
beyond this machine only with `http.auth`. The API is described at `/openapi.json`, browsable at `/docs`,
both behind the same sign-in."""

from __future__ import annotations

from importlib import resources

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse
from starlette.exceptions import HTTPException

from streamer import __version__
from streamer.auth import Guard, is_loopback
from streamer.errors import StreamerError
from streamer.pipeline.local import Pipeline
from streamer.serving import Served
from streamer.web.api import events, find, health, live, login, recordings
from streamer.web.api.login import SignInFirst, signed_in
from streamer.web.live import LiveView
from streamer.web.site import Site

_DOCS_FILES = ("swagger-ui-bundle.js", "swagger-ui.css", "favicon.png")
ROUTERS = (login.router, live.router, recordings.router, events.router, find.router, health.router)


def app_of(site: Site) -> FastAPI:
    """The app: every router, errors as one plain line each, every answer `no-store`, the API's description
    behind sign-in."""
    app = FastAPI(title="streamer", version=__version__, openapi_url=None, docs_url=None, redoc_url=None,
                  description="The live view, review, events, find and metrics of a streamer run.")
    app.state.site = site
    for router in ROUTERS:
        app.include_router(router)

    @app.get("/openapi.json", include_in_schema=False, dependencies=[Depends(signed_in)])
    def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False, dependencies=[Depends(signed_in)])
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="streamer: API",
                                   swagger_js_url="/docs/swagger-ui-bundle.js", swagger_css_url="/docs/swagger-ui.css",
                                   swagger_favicon_url="/docs/favicon.png")

    @app.get("/docs/{name}", include_in_schema=False, dependencies=[Depends(signed_in)])
    def docs_file(name: str) -> FileResponse:
        """Swagger UI's own files, from the run (fastapi-offline's copy), not a CDN the camera's network may not
        reach."""
        if name not in _DOCS_FILES:
            raise HTTPException(404, "not found")
        return FileResponse(resources.files("fastapi_offline") / "static" / name)

    app.add_exception_handler(SignInFirst, login.answer)
    app.add_exception_handler(HTTPException, _plain)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_middleware(_NoStore)
    return app


def _plain(request: Request, exc: HTTPException) -> PlainTextResponse:
    """An error as the command line says one: a line of plain text."""
    return PlainTextResponse(f"{exc.detail}\n", exc.status_code, headers=exc.headers)


def _invalid(request: Request, exc: RequestValidationError) -> PlainTextResponse:
    """A path that names nothing there can be (an id that is not a number) is a 404; a bad parameter a 400."""
    errors = exc.errors()
    if any(e.get("loc", ("",))[0] == "path" for e in errors):
        return PlainTextResponse("not found\n", 404)
    first = errors[0] if errors else {}
    return PlainTextResponse(f"{'.'.join(map(str, first.get('loc', ())[1:]))}: {first.get('msg', 'invalid')}\n", 400)


class _NoStore:
    """Every answer `Cache-Control: no-store` unless it says otherwise: live states and signed-in pages are never
    kept by a browser or a proxy."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def sending(message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(k.lower() == b"cache-control" for k, _ in headers):
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, sending)


class StatusServer:
    def __init__(self, listen: str, pipeline: Pipeline, view: LiveView, mjpeg_fps: float = 10.0, auth=None,
                 metrics_public: bool = False) -> None:
        """`auth`: the config's `http.auth`, which every request must satisfy (see `auth`), and without which
        only a loopback host is served; `metrics_public`: /metrics and /healthz need none."""
        host, port = listen.rsplit(":", 1)
        if auth is None and not is_loopback(host):
            raise StreamerError(f"--http {listen} serves beyond this machine: set http.auth (a token, or a user and a "
                                "password hash from `streamer password`) first, or listen on 127.0.0.1")
        self.site = Site(pipeline, view, Guard(auth), mjpeg_fps, metrics_public)
        pipeline.metrics.registry.register(health.Counters(pipeline))
        self._served = Served(app_of(self.site), listen, "http")  # bound here: a port in use is said before the run
        self.address = self._served.address
        self.loopback = is_loopback(host)

    def start(self) -> "StatusServer":
        self._served.start()
        return self

    def close(self) -> None:
        """Every stream ends, the server stops taking connections and lets the last answers finish (2 s at most)."""
        self.site.closing.set()
        self._served.close()
        self.site.clips.close()
