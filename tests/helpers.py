"""What several test files share: paths, the tiny models' answers, reading outputs, running the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import av

ROOT = Path(__file__).resolve().parent.parent
CLIP = ROOT / "clips" / "street.mp4"
SCHEMA = ROOT / "streamer" / "schema" / "event.schema.json"

# The tiny models' fixed answers: a labelled box, an OCR quad, a polygon (bins 0..999 of the image size).
OD_ANSWER = "car<loc_100><loc_200><loc_500><loc_600>"
OCR_ANSWER = "AB 42<loc_100><loc_700><loc_300><loc_700><loc_300><loc_800><loc_100><loc_800>"
POLY_ANSWER = "<poly><loc_100><loc_100><loc_300><loc_100><loc_300><loc_300><loc_100><loc_300></poly>"

OFFLINE = {**os.environ, "HF_HUB_OFFLINE": "1"}


def streamer(*args, cwd=ROOT, env=OFFLINE, timeout=180) -> subprocess.CompletedProcess:
    """`streamer ARGS` as a user runs it: a new process, offline."""
    return subprocess.run([sys.executable, "-m", "streamer", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def read_events(path: Path) -> list[dict]:
    """The events of a JSONL log, also while a run writes it: none before it exists, no half-written line."""
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def without_wall_time(events: list[dict]) -> list[dict]:
    """Events as two runs of the same input must agree on them."""
    return [{k: v for k, v in e.items() if k != "wall_time"} for e in events]


def probe_video(path: Path) -> dict:
    """Decode a video fully; what a user's player would see."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="bgr24") for f in container.decode(stream)]
        return {"frames": frames, "count": len(frames), "rate": stream.average_rate, "codec": stream.codec_context.name,
                "width": stream.codec_context.width, "height": stream.codec_context.height}


def moving_car(index: int) -> list:
    """A scripted answer: a car driving right at 75 px/s at 25 fps, well inside ByteTrack's IoU gate between
    keyframes 5 frames apart."""
    x = 10 + 3 * index
    return [("car", (x, 200, x + 120, 260), None)]


def car_and_person(index: int) -> list:
    """The moving car, and a person standing still."""
    return moving_car(index) + [("person", (400, 150, 440, 280), None)]
