"""A real Mosquitto broker and a local HTTP receiver for the sink tests, on 127.0.0.1, every wait bounded."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.rtsp_server import free_port, wait_for


def require(binary: str, package: str) -> str:
    path = shutil.which(binary) or (f"/usr/sbin/{binary}" if Path(f"/usr/sbin/{binary}").exists() else None)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{binary} is missing; .ci/run installs Debian's {package}")
        pytest.skip(f"Debian's {package} is not installed")
    return path


class Mosquitto:
    """Persistent (saves sessions on SIGTERM), so a subscriber's queued messages survive a broker restart."""

    def __init__(self, folder: Path) -> None:
        self.binary = require("mosquitto", "mosquitto")
        self.port = free_port()
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
                             f"persistence_location {folder}/\nautosave_interval 1\n")
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> "Mosquitto":
        self.proc = subprocess.Popen([self.binary, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        import socket

        def listening():
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", self.port)) == 0

        if wait_for(listening, 10) is None:
            raise RuntimeError("mosquitto did not start")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=10)


class Subscriber:
    """A persistent-session MQTT subscriber that records (topic, payload, retain) on a prefix."""

    def __init__(self, port: int, topic: str = "streamer/#") -> None:
        import paho.mqtt.client as mqtt

        self.messages: list[tuple[str, str, bool]] = []
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-subscriber", clean_session=False)
        client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        client.on_message = lambda c, u, m: self.messages.append((m.topic, m.payload.decode(), bool(m.retain)))
        client.reconnect_delay_set(min_delay=1, max_delay=2)
        client.connect("127.0.0.1", port, keepalive=10)
        client.loop_start()
        self.client = client
        assert wait_for(client.is_connected, 10)

    def payloads(self, suffix: str) -> list:
        return [json.loads(p) if p.startswith("{") else p for t, p, _ in self.messages if t.endswith(suffix)]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Receiver:
    """A webhook receiver: answers 500 to the first `fail` requests and stalls `stall` requests past the
    client's timeout, then 200; answers 400 to every body holding `refuse`. Records every request it handled."""

    def __init__(self, fail: int = 0, stall: int = 0, stall_s: float = 0.0, refuse: bytes | None = None) -> None:
        self.requests: list[dict] = []
        self.fail, self.stall, self.stall_s, self.refuse = fail, stall, stall_s, refuse
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver._lock:
                    n = len(receiver.requests)
                    receiver.requests.append({"body": body, "headers": dict(self.headers), "status": None})
                    record = receiver.requests[-1]
                if receiver.refuse is not None and receiver.refuse in body:
                    record["status"] = 400
                elif n < receiver.fail:
                    record["status"] = 500
                elif n < receiver.fail + receiver.stall:
                    time.sleep(receiver.stall_s)
                    record["status"] = 200  # processed, but too late for the client
                else:
                    record["status"] = 200
                self.send_response(record["status"])
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
