"""An ASGI app served by uvicorn on a thread of this process, as the run's web side and `serve-ml` are: bound at
once (a port in use is said before a model loads), quiet on the console (uvicorn's own lines go to the debug
log), a connection whose request never finishes let go, and stopped by `close` within seconds."""

from __future__ import annotations

import logging
import re
import socket
import threading

import anyio.to_thread
import uvicorn
from starlette.requests import Request
from uvicorn.protocols.http.h11_impl import H11Protocol

from streamer.auth import Guard
from streamer.errors import StreamerError

log = logging.getLogger("streamer.serving")
HEAD_TIMEOUT_S = 30.0  # a client that opens a connection and never finishes its request (slowloris) is let go


def whole(text: str) -> bool:
    """A whole number as a client may send one (a Content-Length, a query's count): ASCII digits, at most 18
    (`isdigit` takes '²' and other scripts' digits, which `int` refuses or reads, and `int` has no end)."""
    return re.fullmatch(r"[0-9]{1,18}", text) is not None


async def admitted(guard: Guard, headers) -> bool:
    """`guard.request` for an ASGI app: HTTP Basic's scrypt on a worker thread, so the other requests the event
    loop serves meanwhile do not wait on it; a token or a session cookie checked at once."""
    if guard.slow(headers):
        return await anyio.to_thread.run_sync(guard.request, headers)
    return guard.request(headers)


async def body_within(request: Request, limit: int) -> bytes | None:
    """A request's body, or None when it is longer than `limit` bytes: by its Content-Length (ASCII digits only),
    or, sent in chunks without one, as soon as what came passes the limit (never read whole first)."""
    length = request.headers.get("content-length")
    if length is not None and (not whole(length) or int(length) > limit):
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


class _Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 with a deadline for a new connection's first request: one that never finishes its
    request's head is closed after `HEAD_TIMEOUT_S` (uvicorn waits on it for ever)."""

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._head_timer = self.loop.call_later(HEAD_TIMEOUT_S, self._head_late)

    def handle_events(self) -> None:
        super().handle_events()
        if self.cycle is not None:  # a request's head came whole
            self._no_deadline()

    def connection_lost(self, exc) -> None:
        self._no_deadline()
        super().connection_lost(exc)

    def _no_deadline(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_late(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.transport.close()


class _Quiet(logging.Filter):
    """uvicorn's own lines (a client gone mid-stream, a request it could not parse, its start) go only to a
    debug log: a client's trouble is not the console's."""

    def filter(self, record: logging.LogRecord) -> bool:
        return log.isEnabledFor(logging.DEBUG)


logging.getLogger("uvicorn.error").addFilter(_Quiet())


class Served:
    """`app` on `listen` (HOST:PORT; an IPv6 host in brackets), on a thread named `name` once `start`ed."""

    def __init__(self, app, listen: str, name: str) -> None:
        host, port = listen.rsplit(":", 1)
        bare = host.strip("[]")
        try:
            self._socket = socket.create_server((bare, int(port)),
                                                family=socket.AF_INET6 if ":" in bare else socket.AF_INET)
        except OSError as exc:
            raise StreamerError(f"cannot listen on {listen}: {exc.strerror or exc}") from None
        self.address = f"http://{host}:{self._socket.getsockname()[1]}"
        config = uvicorn.Config(app, http=_Protocol, ws="none", lifespan="off", log_config=None, access_log=False,
                                server_header=False, timeout_graceful_shutdown=2)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._socket]}, name=name,
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """No new connection; the answers in hand finish (2 s at most), then the thread ends."""
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self._socket.close()
