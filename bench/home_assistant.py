"""Home Assistant, the real thing, finding streamer's cameras by MQTT discovery.

Installs Home Assistant core (2024.3.3: the newest that runs on Python 3.11) into its own venv under
`.cache/ha-venv` (once, several minutes, ~700 MB), with the requirements of the integrations it loads here, and
starts it offline on 127.0.0.1 with Debian's Mosquitto; onboards a user through the REST API, adds the MQTT
integration through its config flow, runs `streamer run` on the bundled clip (the tiny offline Florence-2, which
answers one car, with snapshots and a zone) with `--mqtt`, and prints every entity Home Assistant created from
streamer's discovery, with its state and attributes. Not part of the test suite.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".cache" / "ha-venv"
HA = "homeassistant==2024.3.3"
INTEGRATIONS = ["http", "api", "auth", "config", "onboarding", "person", "image_upload", "mqtt", "image", "camera",
                "frontend", "recorder", "sensor", "binary_sensor", "stream", "ffmpeg", "websocket_api", "recovery_mode",
                "homeassistant", "backup", "cloud", "conversation", "file_upload"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pip(*args: str) -> None:
    subprocess.run([str(VENV / "bin" / "python"), "-m", "pip", "install", "-q", *args], check=True)


def install() -> None:
    if (VENV / ".installed").exists():
        return
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    pip("--upgrade", "pip")
    pip(HA, "josepy<2")  # josepy 2 breaks acme, and every HTTP request then answers 500
    components = Path(subprocess.run([str(VENV / "bin" / "python"), "-c",
                                      "import homeassistant.components as c; print(c.__path__[0])"],
                                     check=True, capture_output=True, text=True).stdout.strip())
    wanted, seen, todo = set(), set(), list(INTEGRATIONS)
    while todo:  # the integrations these load, and theirs, with what each requires
        name = todo.pop()
        manifest = components / name / "manifest.json"
        if name in seen or not manifest.exists():
            continue
        seen.add(name)
        data = json.loads(manifest.read_text())
        wanted.update(data.get("requirements", []))
        todo += data.get("dependencies", []) + data.get("after_dependencies", [])
    if wanted:
        pip(*sorted(wanted), "josepy<2")
    (VENV / ".installed").touch()


def request(url: str, data=None, token: str | None = None, form: bool = False):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    body = None
    if data is not None:
        body = urllib.parse.urlencode(data).encode() if form else json.dumps(data).encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded" if form else "application/json"
    with urllib.request.urlopen(urllib.request.Request(url, data=body, headers=headers), timeout=30) as response:
        return json.loads(response.read() or b"null")


def wait(predicate, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except (OSError, urllib.error.URLError, ValueError):
            pass
        time.sleep(0.5)
    raise SystemExit(f"timed out waiting for {what}")


def main() -> None:
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(mosquitto).exists():
        raise SystemExit("needs Debian's mosquitto (apt-get install mosquitto)")
    print("installing Home Assistant core into .cache/ha-venv (once)...", flush=True)
    install()
    tmp = Path(tempfile.mkdtemp(prefix="ha-bench-"))
    broker_port, ha_port = free_port(), free_port()
    (tmp / "mosquitto.conf").write_text(f"listener {broker_port} 127.0.0.1\nallow_anonymous true\n")
    config = tmp / "ha"
    config.mkdir()
    (config / "configuration.yaml").write_text(
        "homeassistant:\n  name: bench\n  unit_system: metric\n  time_zone: UTC\n"
        f"http:\n  server_host: 127.0.0.1\n  server_port: {ha_port}\napi:\nconfig:\nonboarding:\n")
    broker = subprocess.Popen([mosquitto, "-c", str(tmp / "mosquitto.conf")], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    hass = subprocess.Popen([str(VENV / "bin" / "hass"), "-c", str(config), "--skip-pip"],
                            stdout=(tmp / "hass.log").open("w"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{ha_port}"
    try:
        started = time.monotonic()
        wait(lambda: request(f"{base}/api/onboarding") is not None, 180, "Home Assistant to answer")
        print(f"Home Assistant up in {time.monotonic() - started:.1f} s", flush=True)
        client = f"{base}/"
        made = request(f"{base}/api/onboarding/users", {"client_id": client, "name": "Bench", "username": "bench",
                                                        "password": "bench-password", "language": "en"})
        token = request(f"{base}/auth/token", {"grant_type": "authorization_code", "code": made["auth_code"],
                                               "client_id": client}, form=True)["access_token"]
        flow = request(f"{base}/api/config/config_entries/flow", {"handler": "mqtt"}, token)
        result = request(f"{base}/api/config/config_entries/flow/{flow['flow_id']}",
                         {"broker": "127.0.0.1", "port": broker_port}, token)
        print(f"MQTT integration: {result.get('type')} {result.get('title', '')}", flush=True)
        time.sleep(3)  # connected, homeassistant/status online
        model = ROOT / ".cache" / "tiny-florence"
        if not (model / "config.json").exists():
            subprocess.run([sys.executable, str(ROOT / "tests" / "tiny_florence.py"), str(model)], check=True)
        run_config = tmp / "run.yaml"
        run_config.write_text("events:\n  snapshots: true\n  zones:\n    - {name: road, polygon: [[0, 0], [1, 0], "
                              "[1, 1], [0, 1]]}\nsampler: {every_n_frames: 5, scene_threshold: null, max_fps: null}\n")
        ran = subprocess.Popen([sys.executable, "-m", "streamer", "run", f"street={ROOT / 'clips' / 'street.mp4'}",
                                "--model", str(model), "--mqtt", f"mqtt://127.0.0.1:{broker_port}", "--config",
                                str(run_config), "--no-video", "--events", str(tmp / "events.jsonl")],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                               env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
        running: dict[str, dict] = {}  # the latest state of each entity seen while streamer was available
        while ran.poll() is None:
            for s in request(f"{base}/api/states", token=token):
                if "street" in s["entity_id"] and s["state"] != "unavailable":
                    running[s["entity_id"]] = s
            time.sleep(0.3)
        print((ran.stdout.read().strip().splitlines() or ["(no summary)"])[0], flush=True)
        time.sleep(2)
        states = [s for s in request(f"{base}/api/states", token=token) if "street" in s["entity_id"]]
        print(f"{len(states)} entities from streamer's discovery (state while streamer ran -> after it ended):")
        for s in sorted(states, key=lambda s: s["entity_id"]):
            seen = running.get(s["entity_id"], {"state": "-", "attributes": {}})
            attributes = {k: v for k, v in seen["attributes"].items() if k not in ("access_token", "entity_picture",
                                                                                  "friendly_name")}
            print(f"  {s['entity_id']:42} {str(seen['state'])[:26]:27} -> {s['state']:12} {json.dumps(attributes)[:120]}")
        ok = any(s["entity_id"].startswith("binary_sensor.") for s in states) and any(
            s["entity_id"].startswith("image.") for s in states)
        print("Home Assistant found the camera's occupancy and snapshot: " + ("yes" if ok else "no"))
        sys.exit(0 if ok else 1)
    finally:
        hass.terminate()
        broker.terminate()
        hass.wait(30)
        broker.wait(10)
        print(f"(Home Assistant's log: {tmp / 'hass.log'})")


if __name__ == "__main__":
    main()
