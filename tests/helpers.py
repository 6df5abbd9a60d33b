"""What several test files share: paths, the tiny models' answers, reading outputs, running the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from streamer.outputs.protocol import Output
from streamer.pipeline.reader import FrameQueue, Reader
from streamer.records import Frame, StreamInfo

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


def streamer_here(capfd, *args, cwd=None) -> subprocess.CompletedProcess:
    """`streamer ARGS` in this process, as `streamer` gives it (its exit status, and everything written to the
    standard output and error, FFmpeg's own lines included), without the seconds a new process spends importing
    torch and transformers. What needs a process of its own (a signal, a kill) takes `streamer`."""
    from streamer.cli import main

    capfd.readouterr()
    here = os.getcwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        code = main([str(a) for a in args])
    finally:
        os.chdir(here)
    out, err = capfd.readouterr()
    return subprocess.CompletedProcess(args, code, out, err)


def read_events(path: Path) -> list[dict]:
    """The events of a JSONL log, also while a run writes it: none before it exists, no half-written line."""
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def strict_json(line: str):
    """A line as a strict JSON parser reads it (jq, jsonschema): NaN and Infinity are no JSON (ValueError)."""
    def refuse(constant: str):
        raise ValueError(f"{constant} is not JSON")

    return json.loads(line, parse_constant=refuse)


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


def clip_times(path: Path, times: int) -> Path:
    """The bundled clip `times` over in one H.264 file at `path` (a longer file source)."""
    with av.open(str(CLIP)) as src:
        frames = [f.to_ndarray(format="bgr24") for f in src.decode(video=0)]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=Fraction(25))
        stream.width, stream.height, stream.pix_fmt = 640, 360, "yuv420p"
        stream.options = {"preset": "ultrafast"}
        for i, image in enumerate(frames * times):
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def moving_car(index: int) -> list:
    """A scripted answer: a car driving right at 75 px/s at 25 fps, well inside ByteTrack's IoU gate between
    keyframes 5 frames apart."""
    x = 10 + 3 * index
    return [("car", (x, 200, x + 120, 260), None)]


def car_and_person(index: int) -> list:
    """The moving car, and a person standing still."""
    return moving_car(index) + [("person", (400, 150, 440, 280), None)]


class MemoryReader(Reader):
    """`n` small frames at 25 fps from memory, `pace_s` apart (0: as fast as they are taken), read-only as a
    real reader's; counts how many the run has taken."""

    def __init__(self, live: bool = False, n: int = 60, pace_s: float = 0.0) -> None:
        info = StreamInfo(source="mem", width=64, height=48, fps=Fraction(25), total_frames=None if live else n)
        super().__init__("mem", "mem", FrameQueue(4, drop_oldest=live), info=info)
        self.live = live
        self.state = "up" if live else "reading"
        self.n = n
        self.pace_s = pace_s
        self.taken = 0

    def start(self) -> None:
        pass

    def frames(self, stop=None):
        for i in range(self.n):
            if stop is not None and stop.is_set():
                return
            self.taken = i + 1
            time.sleep(self.pace_s)
            image = np.full((48, 64, 3), i % 256, np.uint8)
            image.setflags(write=False)
            yield Frame("mem", i, i / 25, time.time(), image)


class Frames(Output):
    """An output that keeps the index of every frame it gets, in the order they came, and the tracks on them."""

    def __init__(self, immediate: bool = False) -> None:
        self.seen: list[int] = []
        self.tracks: list[list] = []
        self.immediate = immediate

    @property
    def count(self) -> int:
        return len(self.seen)

    def frame(self, shown) -> None:
        self.seen.append(shown.frame.index)
        self.tracks.append(shown.tracks)


class Events(Output):
    """An output that keeps every event it gets (the records) and their lines."""

    def __init__(self) -> None:
        self.events = []
        self.lines: list[str] = []

    def event(self, logged) -> None:
        self.events.append(logged.event)
        self.lines.append(logged.line)
