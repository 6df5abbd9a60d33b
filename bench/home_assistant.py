"""Home Assistant, the real thing, finding streamer's cameras by MQTT discovery.

Installs Home Assistant core (2024.3.3: the newest that runs on Python 3.11) into its own venv under
`.cache/ha-venv` (once, several minutes, ~700 MB), with the requirements of the integrations it loads here, and
starts it offline on 127.0.0.1 with Debian's Mosquitto; onboards a user through the REST API, adds the MQTT
integration through its config flow, runs `streamer run` on a camera (Debian's GStreamer RTSP server, for 40 s;
the tiny offline Florence-2, which answers one car, with snapshots and a zone) with `--mqtt`, turns the camera's
detection and recording off and on again through Home Assistant's switch services while it runs, and prints
every entity Home Assistant created from streamer's discovery, with its state and attributes, and what each
switch did. Not part of the test suite.
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
sys.path.insert(0, str(ROOT))
from tests.rtsp_server import RtspServer  # noqa: E402
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


def state(base: str, token: str, entity: str) -> str:
    return request(f"{base}/api/states/{entity}", token=token)["state"]


def drive_switches(base: str, token: str, folder: Path) -> list[str]:
    """Detection and recording off and on again through Home Assistant's switch services, as a user's dashboard
    or automation does, once a car is tracked; each line says whether Home Assistant saw streamer's state
    follow, and what streamer did."""
    said = []
    for entity in ("switch.streamer_street_detect", "switch.streamer_street_record"):
        for service, want in (("turn_off", "off"), ("turn_on", "on")):
            asked = time.monotonic()
            request(f"{base}/api/services/switch/{service}", {"entity_id": entity}, token)
            followed = wait(lambda: state(base, token, entity) == want, 15, f"{entity} {want}")
            said.append(f"  {entity} {service}: state {want} after {time.monotonic() - asked:.1f} s: "
                        f"{'yes' if followed else 'no'}")
            if entity.endswith("detect") and want == "off":
                left = wait(lambda: [line for log in folder.rglob("*.jsonl") for line in log.read_text().splitlines()
                                     if '"detect_off"' in line], 10, "the tracks to end")
                said.append(f"    detection off: {len(left)} tracks ended with reason detect_off: "
                            f"{'yes' if left else 'no'}")
            time.sleep(4)
    return said


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
                              "[1, 1], [0, 1]]}\nsampler: {every_n_frames: 5, scene_threshold: null, max_fps: null}\n"
                              f"output: {{dir: {tmp / 'runs'}}}\n")
        camera = RtspServer().start()
        ran = subprocess.Popen([sys.executable, "-m", "streamer", "run", f"street={camera.url()}",
                                "--model", str(model), "--mqtt", f"mqtt://127.0.0.1:{broker_port}", "--config",
                                str(run_config), "--no-video", "--events", str(tmp / "events.jsonl"),
                                "--duration", "40"],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                               env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
        running: dict[str, dict] = {}  # the latest state of each entity seen while streamer was available
        switched: list[str] = []
        try:
            while ran.poll() is None:
                for s in request(f"{base}/api/states", token=token):
                    if "street" in s["entity_id"] and s["state"] != "unavailable":
                        running[s["entity_id"]] = s
                car = running.get("binary_sensor.streamer_street_car_occupancy", {}).get("state")
                if not switched and car == "on" and "switch.streamer_street_detect" in running:
                    switched = drive_switches(base, token, tmp)
                time.sleep(0.3)
        finally:
            camera.kill()
        print((ran.stdout.read().strip().splitlines() or ["(no summary)"])[0], flush=True)
        time.sleep(2)
        states = [s for s in request(f"{base}/api/states", token=token) if "street" in s["entity_id"]]
        print(f"{len(states)} entities from streamer's discovery (state while streamer ran -> after it ended):")
        for s in sorted(states, key=lambda s: s["entity_id"]):
            seen = running.get(s["entity_id"], {"state": "-", "attributes": {}})
            attributes = {k: v for k, v in seen["attributes"].items() if k not in ("access_token", "entity_picture",
                                                                                  "friendly_name")}
            print(f"  {s['entity_id']:42} {str(seen['state'])[:26]:27} -> {s['state']:12} {json.dumps(attributes)[:120]}")
        for line in switched:
            print(line)
        ok = any(s["entity_id"].startswith("binary_sensor.") for s in states) and any(
            s["entity_id"].startswith("image.") for s in states)
        print("Home Assistant found the camera's occupancy and snapshot: " + ("yes" if ok else "no"))
        worked = bool(switched) and all(line.endswith("yes") for line in switched)
        print("Home Assistant's switches turned the camera's detection and recording: " + ("yes" if worked else "no"))
        ok = ok and worked
        sys.exit(0 if ok else 1)
    finally:
        hass.terminate()
        broker.terminate()
        hass.wait(30)
        broker.wait(10)
        print(f"(Home Assistant's log: {tmp / 'hass.log'})")


if __name__ == "__main__":
    main()
