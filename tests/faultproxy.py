"""A TCP fault proxy on 127.0.0.1, for the camera tests and bench/chaos.py: put it in front of a camera (the
GStreamer RTSP test server over TCP) and switch faults on while the stream flows, each for a while:

- `stall(s)`: nothing moves either way (the proxy stops reading; TCP holds the bytes), then all flows on;
- `blackhole(s)`: half-open: the connections stay open, no FIN, no RST, and every byte is silently lost;
- `reset()`: every open connection is cut with an RST (SO_LINGER 0);
- `trickle(s, rate)`: the camera's bytes reach the client at `rate` bytes a second;
- `flip(s, per_kb)`: random bytes of the camera's stream are flipped (a seeded RNG: the same run flips the same);
- `refuse(s)`: the camera is off: its connections are cut and new ones refused, then its port opens again.

Every fault ends by itself; `close` ends the proxy. Threads: one accepting, two per connection, all daemons,
all polling at `_POLL_S` so a fault or a close takes effect at once.
"""

from __future__ import annotations

import random
import socket
import struct
import threading
import time

_POLL_S = 0.1
_CHUNK = 16384


class FaultProxy:
    def __init__(self, upstream_port: int, port: int = 0, seed: int = 0) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self.random = random.Random(seed)
        self._lock = threading.Lock()
        self._faults: dict[str, tuple[float, float]] = {}  # kind -> (until, parameter)
        self._conns: list[socket.socket] = []
        self._closed = threading.Event()
        self._listener = self._listen(port)
        self.port = self._listener.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self._accept, name="faultproxy", daemon=True).start()

    def url(self, path: str = "/live") -> str:
        return f"rtsp://127.0.0.1:{self.port}{path}"

    # -- the faults ---------------------------------------------------------------------------------------

    def stall(self, seconds: float) -> None:
        self._set("stall", seconds)

    def blackhole(self, seconds: float) -> None:
        self._set("blackhole", seconds)

    def trickle(self, seconds: float, rate: float = 4096) -> None:
        self._set("trickle", seconds, rate)

    def flip(self, seconds: float, per_kb: float = 1.0) -> None:
        self._set("flip", seconds, per_kb)

    def refuse(self, seconds: float) -> None:
        """The camera is off: open connections cut, new ones refused, for `seconds`."""
        self._set("refuse", seconds)
        with self._lock:
            listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            _cut(conn)

    def active(self, kind: str) -> bool:
        with self._lock:
            until = self._faults.get(kind, (0.0, 0.0))[0]
        return time.monotonic() < until

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        self.reset()

    def __enter__(self) -> "FaultProxy":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the plumbing -------------------------------------------------------------------------------------

    def _set(self, kind: str, seconds: float, parameter: float = 0.0) -> None:
        with self._lock:
            self._faults[kind] = (time.monotonic() + seconds, parameter)

    def _fault(self, kind: str) -> float | None:
        """The parameter of `kind` while it is on, else None."""
        with self._lock:
            until, parameter = self._faults.get(kind, (0.0, 0.0))
        return parameter if time.monotonic() < until else None

    def _listen(self, port: int) -> socket.socket:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(64)
        listener.settimeout(_POLL_S)
        return listener

    def _accept(self) -> None:
        while not self._closed.is_set():
            with self._lock:
                listener = self._listener
            if listener is None:
                if self._fault("refuse") is None and not self._closed.is_set():
                    try:
                        with self._lock:
                            self._listener = self._listen(self.port)
                    except OSError:  # the port is not free again yet
                        pass
                time.sleep(_POLL_S)
                continue
            try:
                client, _ = listener.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                time.sleep(_POLL_S)
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                _cut(client)
                continue
            self.accepted += 1
            with self._lock:
                self._conns += [client, server]
            for a, b, downstream in ((client, server, False), (server, client, True)):
                threading.Thread(target=self._pump, args=(a, b, downstream), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, downstream: bool) -> None:
        """Bytes from `src` to `dst` through whatever fault is on; `downstream`: the camera's side to the client."""
        src.settimeout(_POLL_S)
        try:
            while not self._closed.is_set():
                if self._fault("stall") is not None:
                    time.sleep(_POLL_S)
                    continue
                rate = self._fault("trickle") if downstream else None
                try:
                    data = src.recv(max(1, int(rate * _POLL_S)) if rate else _CHUNK)
                except (TimeoutError, socket.timeout):
                    continue
                if not data:
                    break
                if self._fault("blackhole") is not None:
                    continue
                per_kb = self._fault("flip") if downstream else None
                if per_kb:
                    data = self._flipped(data, per_kb)
                dst.sendall(data)
                if rate:
                    time.sleep(len(data) / rate)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()
            with self._lock:
                self._conns = [c for c in self._conns if c not in (src, dst)]

    def _flipped(self, data: bytes, per_kb: float) -> bytes:
        out = bytearray(data)
        expected = len(out) / 1024 * per_kb
        for _ in range(int(expected) + (self.random.random() < expected % 1)):
            out[self.random.randrange(len(out))] ^= 1 << self.random.randrange(8)
        return bytes(out)


def _cut(sock: socket.socket) -> None:
    """Close with an RST, not a FIN."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()
