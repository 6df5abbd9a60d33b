"""Label Studio, the real thing, with streamer on both sides of it: the ML backend and the video export.

Installs Label Studio (1.23.2) into its own venv under `.cache/label-studio-venv` (once, a minute or two), starts
it on 127.0.0.1 with prediction validation on (invalid predictions are refused with HTTP 400 instead of being
stored silently), a user and a legacy token made by environment, local file serving under a temporary root, and
`streamer serve-ml` beside it (the tiny offline Florence-2 by default, which answers one car; `--model FOLDER` for a
real checkpoint). Then, through Label Studio's REST API:

1. an image project: keyframes of the bundled clip imported as local files, the backend connected in the
   project's settings, predictions retrieved for every task (Label Studio calls /setup and /predict; the backend
   fetches each image from Label Studio with the token it was given) and read back;
2. a video project: `streamer export --format label-studio` of a run on the bundled clip, its labelling config
   and tasks imported as they are, with the predictions (the tracks) validated by Label Studio and read back.

Prints what Label Studio stored and how long predictions took. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import av
import cv2

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".cache" / "label-studio-venv"
LABEL_STUDIO = "label-studio==1.23.2"
TOKEN = "0123456789abcdef0123456789abcdef01234567"
IMAGE_CONFIG = ('<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image">'
                '<Label value="car"/><Label value="person"/></RectangleLabels></View>')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def install() -> None:
    """Label Studio in a venv of its own. sentry-sdk 3 dropped an option Label Studio 1.23 passes it
    (`TypeError: Unknown option 'send_default_pii'` at start), and Label Studio does not cap it: held below 3."""
    if (VENV / ".installed-2").exists():
        return
    if not (VENV / "bin" / "pip").exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    subprocess.run([str(VENV / "bin" / "pip"), "install", "-q", LABEL_STUDIO, "sentry-sdk<3"], check=True)
    (VENV / ".installed-2").touch()


class Api:
    def __init__(self, url: str) -> None:
        self.url = url

    def __call__(self, method: str, path: str, body=None, ok=(200, 201)):
        request = urllib.request.Request(self.url + path, method=method,
                                         data=None if body is None else json.dumps(body).encode(),
                                         headers={"Authorization": f"Token {TOKEN}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=300) as reply:
                status, data = reply.status, reply.read()
        except urllib.error.HTTPError as exc:
            status, data = exc.code, exc.read()
        if status not in ok:
            raise SystemExit(f"label studio: {method} {path} -> HTTP {status}: {data[:2000].decode(errors='replace')}")
        return json.loads(data) if data else None


def wait_for(url: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(1)
    raise SystemExit(f"{url} did not answer within {seconds:.0f} s")


def keyframes(folder: Path, every: int = 25) -> list[str]:
    folder.mkdir(parents=True)
    names = []
    with av.open(str(ROOT / "clips" / "street.mp4")) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index % every == 0:
                names.append(f"frame-{index:04d}.jpg")
                cv2.imwrite(str(folder / names[-1]), frame.to_ndarray(format="bgr24"))
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a Florence-2 folder for serve-ml (default: the tiny offline one)")
    args = parser.parse_args()
    install()
    work = Path(tempfile.mkdtemp(prefix="streamer-ls-"))
    media = work / "media"
    model = args.model
    if model is None:
        model = str(work / "tiny")
        subprocess.run([sys.executable, str(ROOT / "tests" / "tiny_florence.py"), model], check=True, cwd=ROOT)
    ls_port, ml_port = free_port(), free_port()
    env = {**os.environ, "LABEL_STUDIO_USERNAME": "bench@example.com", "LABEL_STUDIO_PASSWORD": "bench-password-1",
           "LABEL_STUDIO_USER_TOKEN": TOKEN, "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
           "LOCAL_FILES_SERVING_ENABLED": "true", "LOCAL_FILES_DOCUMENT_ROOT": str(media),
           "ML_BLOCK_LOCAL_IP": "false", "SSRF_PROTECTION_ENABLED": "false",
           "fflag_feat_utc_210_prediction_validation_15082025": "true"}
    studio = subprocess.Popen([str(VENV / "bin" / "label-studio"), "start", "--no-browser", "--host", "127.0.0.1",
                               "--port", str(ls_port), "--data-dir", str(work / "data")], env=env,
                              stdout=open(work / "label-studio.log", "w"), stderr=subprocess.STDOUT)
    backend = subprocess.Popen([str(ROOT / ".venv" / "bin" / "streamer"), "serve-ml", "--listen",
                                f"127.0.0.1:{ml_port}", "--model", model, "--device", "cpu"],
                               stdout=open(work / "serve-ml.log", "w"), stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        started = time.monotonic()
        wait_for(f"http://127.0.0.1:{ls_port}/health", 300)
        print(f"label studio up in {time.monotonic() - started:.0f} s ({work})")
        wait_for(f"http://127.0.0.1:{ml_port}/health", 120)
        api = Api(f"http://127.0.0.1:{ls_port}")
        image_project(api, media, ml_port, model)
        video_project(api, media, work, model)
    finally:
        for process in (backend, studio):
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        print(f"logs: {work / 'label-studio.log'}, {work / 'serve-ml.log'}")
        if "--keep" not in sys.argv:
            shutil.rmtree(work / "data", ignore_errors=True)


def round_trip(api: Api, project: int, stored: list, media: Path, kind: str, model: str) -> None:
    """Accept every prediction as an annotation (what a person does who finds them right), export the project as
    Label Studio's JSON, and hand that file, beside its media, to `streamer evaluate`."""
    for task in stored:
        api("POST", f"/api/tasks/{task['id']}/annotations", {"result": task["predictions"][0]["result"],
                                                              "was_cancelled": False, "ground_truth": False})
    exported = api("GET", f"/api/projects/{project}/export?exportType=JSON&download_all_tasks=true")
    folder = media.parent / f"corrected-{kind}"
    folder.mkdir()
    (folder / "project.json").write_text(json.dumps(exported))
    (folder / kind).symlink_to(media)
    result = subprocess.run([str(ROOT / ".venv" / "bin" / "streamer"), "evaluate", str(folder), "--model", model,
                             "--device", "cpu", "--format", "json"], capture_output=True, text=True, cwd=ROOT)
    if result.returncode:
        raise SystemExit(f"streamer evaluate on Label Studio's export: {result.stderr.strip()}")
    report = json.loads(result.stdout)
    print(f"  Label Studio's JSON export ({len(exported)} tasks) read back by streamer evaluate: {report['images']} "
          f"{kind[:-1]} frames, {report['boxes']} boxes, mAP@50 {report['map50']:.3f} (the model against what was "
          "accepted of its own predictions)")


def image_project(api: Api, media: Path, ml_port: int, model: str) -> None:
    names = keyframes(media / "images")
    project = api("POST", "/api/projects", {"title": "streamer images", "label_config": IMAGE_CONFIG})["id"]
    api("POST", "/api/storages/localfiles", {"project": project, "path": str(media / "images"), "title": "keyframes",
                                             "use_blob_urls": True})
    tasks = [{"data": {"image": f"/data/local-files/?d=images/{name}"}} for name in names]
    api("POST", f"/api/projects/{project}/import", tasks)
    ml = api("POST", "/api/ml", {"project": project, "url": f"http://127.0.0.1:{ml_port}", "title": "streamer"})
    print(f"image project {project}: {len(names)} tasks, ML backend {ml['id']} state {ml.get('state')}")
    started = time.monotonic()
    api("POST", f"/api/dm/actions?id=retrieve_tasks_predictions&project={project}",
        {"selectedItems": {"all": True, "excluded": []}})
    seconds = time.monotonic() - started
    stored = api("GET", f"/api/tasks?project={project}&fields=all&page_size=1000")
    stored = stored["tasks"] if isinstance(stored, dict) else stored
    predicted = [t for t in stored if t.get("predictions")]
    regions = [r for t in predicted for p in t["predictions"] for r in p["result"]]
    print(f"  predictions: {len(predicted)} of {len(stored)} tasks in {seconds:.1f} s "
          f"({len(stored) / seconds:.1f} tasks/s), {len(regions)} regions, labels "
          f"{sorted({label for r in regions for label in r['value']['rectanglelabels']})}, "
          f"model_version {predicted[0]['predictions'][0]['model_version'] if predicted else None}")
    if regions:
        print(f"  first region: {json.dumps(regions[0]['value'])}")
    if len(predicted) != len(stored):
        raise SystemExit("label studio stored no prediction for some tasks: see serve-ml.log")
    round_trip(api, project, stored, media / "images", "images", model)


def video_project(api: Api, media: Path, work: Path, model: str) -> None:
    run, out = work / "run", media / "video-export"
    subprocess.run([str(ROOT / ".venv" / "bin" / "streamer"), "run", str(ROOT / "clips" / "street.mp4"), "--model",
                    model, "--no-video", "--events", str(run / "events.jsonl")], check=True, cwd=ROOT,
                   stdout=subprocess.DEVNULL)
    subprocess.run([str(ROOT / ".venv" / "bin" / "streamer"), "export", str(run), "--format", "label-studio",
                    str(out)], check=True, cwd=ROOT)
    project = api("POST", "/api/projects", {"title": "streamer video",
                                            "label_config": (out / "label_config.xml").read_text()})["id"]
    api("POST", "/api/storages/localfiles", {"project": project, "path": str(out / "videos"), "title": "videos",
                                             "use_blob_urls": True})
    tasks = json.loads((out / "tasks.json").read_text())
    broken = json.loads(json.dumps(tasks))
    broken[0]["predictions"][0]["result"][0]["value"]["sequence"][0]["x"] = 500.0
    refused = api("POST", f"/api/projects/{project}/import", broken, ok=(201, 400))
    print(f"  a prediction with x = 500% is {'refused' if refused and 'error' in json.dumps(refused).lower() else 'taken'}"
          " by this Label Studio (the validation the real import below passes)")
    api("POST", f"/api/projects/{project}/import", tasks)
    stored = api("GET", f"/api/tasks?project={project}&fields=all&page_size=1000")
    stored = stored["tasks"] if isinstance(stored, dict) else stored
    regions = [r for t in stored for p in t.get("predictions") or [] for r in p["result"]]
    points = sum(len(r["value"]["sequence"]) for r in regions)
    print(f"video project {project}: {len(stored)} task(s), {len(regions)} tracks as videorectangle, {points} "
          f"keyframe points, accepted with prediction validation on")
    round_trip(api, project, stored, out / "videos", "videos", model)
    with urllib.request.urlopen(urllib.request.Request(
            api.url + stored[0]["data"]["video"], headers={"Authorization": f"Token {TOKEN}"}), timeout=60) as reply:
        print(f"  its video served by Label Studio: HTTP {reply.status}, {len(reply.read())} bytes")


if __name__ == "__main__":
    main()
