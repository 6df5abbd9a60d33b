"""A local HTTP media server for tests, on 127.0.0.1: serves a folder with byte ranges (as object stores and CDNs
do), and can break a download off midway, once per file, as a flaky network does."""

from __future__ import annotations

import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class MediaServer:
    """`drop_after`: a path's first response is cut after this many bytes (the connection closed without the
    rest); later requests, ranged or not, are whole, unless `gone_after_drop`: then the server answers nothing
    more, as a link that expired. `trickle`: (bytes, seconds): every response comes that many bytes at a time,
    that long apart, as a starved network sends. `requests` records (path, Range header) in order."""

    def __init__(self, folder: Path, drop_after: int | None = None, gone_after_drop: bool = False,
                 trickle: tuple[int, float] | None = None) -> None:
        self.folder = Path(folder)
        self.trickle = trickle
        self.drop_after = drop_after
        self.gone_after_drop = gone_after_drop
        self.requests: list[tuple[str, str | None]] = []
        self._dropped: set[str] = set()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                server._get(self)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def __enter__(self) -> "MediaServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _get(self, handler: BaseHTTPRequestHandler) -> None:
        path = handler.path.split("?", 1)[0].lstrip("/")
        self.requests.append((path, handler.headers.get("Range")))
        file = self.folder / path
        if self.gone_after_drop and self._dropped:
            handler.send_error(403)
            return
        if not file.is_file():
            handler.send_error(404)
            return
        data = file.read_bytes()
        start, end = 0, len(data) - 1
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", handler.headers.get("Range") or "")
        if match:
            start = int(match.group(1))
            end = int(match.group(2)) if match.group(2) else end
            handler.send_response(206)
            handler.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        else:
            handler.send_response(200)
        body = data[start : end + 1]
        handler.send_header("Accept-Ranges", "bytes")
        handler.send_header("Content-Length", str(len(body)))
        handler.send_header("Content-Type", "application/vnd.apple.mpegurl" if path.endswith(".m3u8") else "video/mp4")
        handler.end_headers()
        if self.drop_after is not None and path not in self._dropped and not path.endswith(".m3u8"):
            self._dropped.add(path)
            handler.wfile.write(body[: self.drop_after])
            handler.wfile.flush()
            handler.close_connection = True
            handler.connection.shutdown(2)  # the network broke: the rest never comes
            return
        if self.trickle is not None:
            size, pause = self.trickle
            try:
                for at in range(0, len(body), size):
                    handler.wfile.write(body[at : at + size])
                    handler.wfile.flush()
                    time.sleep(pause)
            except OSError:  # the reader gave up
                pass
            return
        handler.wfile.write(body)
