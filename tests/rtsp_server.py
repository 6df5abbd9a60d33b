"""Start Debian's GStreamer RTSP server (tests/rtsp/server.py) on 127.0.0.1 and play a camera that drops,
freezes and comes back. Every wait is bounded."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
SYSTEM_PYTHON = "/usr/bin/python3"
LIVE = ("videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,framerate=25/1 ! "
        "x264enc tune=zerolatency speed-preset=ultrafast key-int-max=25 ! rtph264pay name=pay0 pt=96 config-interval=1")


def gstreamer_available() -> bool:
    probe = "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer"
    try:
        return subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def require_gstreamer() -> None:
    if not gstreamer_available():
        if os.environ.get("CI"):
            pytest.fail("Debian's GStreamer RTSP server is missing; .ci/run installs it")
        pytest.skip("Debian's GStreamer RTSP server (python3-gi, gir1.2-gst-rtsp-server-1.0) is not installed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RtspServer:
    def __init__(self, mounts: dict[str, str] | None = None, user: str | None = None, port: int | None = None):
        self.port = port or free_port()
        self.mounts = mounts or {"/live": LIVE}
        self.user = user
        self.proc: subprocess.Popen | None = None

    def url(self, mount: str = "/live", credentials: str | None = None) -> str:
        auth = f"{credentials}@" if credentials else ""
        return f"rtsp://{auth}127.0.0.1:{self.port}{mount}"

    def start(self, timeout: float = 15.0) -> "RtspServer":
        args = [SYSTEM_PYTHON, str(HERE / "rtsp" / "server.py"), str(self.port)]
        args += [f"{m}={p}" for m, p in self.mounts.items()]
        if self.user:
            args += ["--user", self.user]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        ready = threading.Event()
        threading.Thread(target=lambda: self.proc.stdout.readline() == "READY\n" and ready.set(), daemon=True).start()
        if not ready.wait(timeout):
            self.kill()
            raise RuntimeError("RTSP server did not start")
        return self

    def kill(self) -> None:
        """The camera drops off the network."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(timeout=10)

    def freeze(self) -> None:
        """The camera hangs with its TCP connections open."""
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def __enter__(self) -> "RtspServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.kill()


class SilentServer:
    """Accepts TCP connections and never says a word."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._done = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        self.sock.settimeout(0.2)
        while not self._done:
            try:
                conn, _ = self.sock.accept()
                self.accepted.append(conn)
            except OSError:
                continue

    def close(self) -> None:
        self._done = True
        for conn in self.accepted:
            conn.close()
        self.sock.close()


def wait_for(predicate, timeout: float, interval: float = 0.05) -> float | None:
    """Seconds until `predicate()` held, or None after `timeout`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(interval)
    return None
