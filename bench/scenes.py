"""Generated scenes with tracking ground truth, and a detector that answers keyframes from that truth with noise.

Bench-only (never the product's): textured objects over a textured background, so optical flow sees what it
sees in real footage, moving in the ways that break trackers on sparse keyframes. Each scene has, placed by its
seed: a small fast mover (two of its widths in ten frames), a large slow one, two that cross with partial
occlusion, one that stops and goes on, and one that leaves at the right edge where another enters soon after.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import supervision as sv

from streamer.records import FrameDetections, Keyframe

W, H, FPS, FRAMES = 640, 360, 30, 240
MIN_VISIBLE = 0.2  # less of an object than this in view: not in the ground truth


@dataclass
class Actor:
    gt_id: int
    label: str
    size: tuple[int, int]  # w, h
    path: list[tuple[float, float] | None]  # top-left per frame, None when not in the scene
    texture: np.ndarray
    depth: int  # drawn in increasing depth: a higher one covers a lower one


def _texture(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    base = rng.integers(40, 216, 3)
    noise = rng.integers(-70, 70, (h, w, 3))
    image = np.clip(base + noise, 0, 255).astype(np.uint8)
    return cv2.GaussianBlur(image, (3, 3), 0)


def _line(start: tuple[float, float], velocity: tuple[float, float], first: int, last: int = FRAMES):
    return [(start[0] + velocity[0] * (f - first), start[1] + velocity[1] * (f - first)) if first <= f < last
            else None for f in range(FRAMES)]


def _flat(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    return np.full((h, w, 3), rng.integers(40, 216, 3), dtype=np.uint8)


def make_scene(seed: int, flat: bool = False, hard: bool = False) -> list[Actor]:
    """`flat`: objects of one colour each, no texture inside (flow finds points on their corners only); `hard`:
    18 more (25 in all, 10 under 30 px): a group of four small people walking abreast, six small fast movers in
    every direction, four cars crossing each other in two lanes, four people coming and going."""
    rng = np.random.default_rng(seed)
    u = lambda a, b: float(rng.uniform(a, b))  # noqa: E731
    actors = []
    paint = _flat if flat else _texture

    def add(label, size, path):
        actors.append(Actor(len(actors) + 1, label, size, path, paint(rng, *size), len(actors)))

    fw = int(u(26, 40))  # the fast mover: two of its widths every ten frames
    add("person", (fw, int(fw * 1.8)), _line((-fw + 5, u(30, 90)), (2 * fw / 10, u(-0.3, 0.3)), int(u(0, 20))))
    add("car", (int(u(110, 140)), int(u(60, 75))), _line((u(0, 60), u(250, 280)), (u(0.8, 1.5), 0), 0))
    y = u(140, 170)
    add("person", (40, 80), _line((u(100, 140), y), (u(3, 4), 0), int(u(10, 30))))
    add("person", (40, 80), _line((u(460, 500), y + u(-12, 12)), (-u(3, 4), 0), int(u(10, 30))))
    go, stop_at, wait = u(4, 5), int(u(60, 80)), int(u(40, 50))
    x, path = u(-30, 0), []
    for f in range(FRAMES):
        path.append((x, 200.0))
        x += 0.0 if stop_at <= f < stop_at + wait else go
    add("car", (100, 55), path)
    ye, speed = u(95, 110), u(3, 4)
    exits = int((W - 200) / speed)
    add("car", (90, 50), _line((200, ye), (speed, 0), 0, exits + int(90 / speed) + 1))
    add("car", (90, 50), _line((W - 2, ye), (-speed, 0), exits + int(90 / speed) + int(u(10, 25))))
    if hard:
        gy, gv, g0 = u(40, 70), u(1.5, 2.5), int(u(0, 30))
        for n in range(4):  # abreast: one above the other, a few pixels apart, the same pace
            add("person", (22, 44), _line((-22.0 - u(0, 4), gy + n * 47 + u(-3, 3)), (gv, 0), g0))
        for _ in range(6):
            size, angle = int(u(16, 28)), u(0, 2 * np.pi)
            speed = u(3, 7)
            vx, vy = speed * np.cos(angle), speed * np.sin(angle)
            start = (W / 2 - vx * FRAMES / 4 + u(-80, 80), H / 2 - vy * FRAMES / 4 + u(-60, 60))
            add(str(rng.choice(["person", "bird"])), (size, size), _line(start, (vx, vy), int(u(0, 60))))
        for n in range(4):  # two lanes, each way
            lane, right = u(285, 300) if n % 2 else u(300, 315), n % 2 == 0
            v = u(3, 6) * (1 if right else -1)
            add("car", (int(u(70, 100)), 40), _line((-100.0 if right else float(W), lane), (v, 0), int(u(0, 120))))
        for _ in range(4):
            first = int(u(0, 150))
            add("person", (32, 64), _line((u(0, W - 32), u(0, H - 64)), (u(-2, 2), u(-1, 1)), first,
                                          first + int(u(40, 90))))
    return actors


def render(actors: list[Actor], path: Path, seed: int,
           shake: float = 0.0) -> tuple[Path, list[list[tuple[int, str, tuple, float]]]]:
    """The scene as an H.264 file; the truth per frame: (gt id, label, clipped xyxy, visible share). `shake`: the
    camera wobbles, the whole picture shifted by a random walk of up to this many pixels each way."""
    rng = np.random.default_rng(1000 + seed)
    margin = int(np.ceil(shake))  # a shaking camera sees a little more of the world around (none: the scenes as before)
    background = cv2.GaussianBlur(rng.integers(0, 255, (H + 2 * margin, W + 2 * margin, 3), dtype=np.uint8), (5, 5), 0)
    background = cv2.addWeighted(background, 0.5, np.full_like(background, 110), 0.5, 0)
    offsets, at = [], np.zeros(2)
    for _ in range(FRAMES):
        at = np.clip(at + rng.normal(0, shake / 2, 2), -shake, shake) if shake else at
        offsets.append(at.round().astype(int))
    truth = []
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(FPS))
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.options = {"crf": "18", "preset": "veryfast"}
        for f in range(FRAMES):
            dx, dy = offsets[f]
            image = background[margin + dy : margin + dy + H, margin + dx : margin + dx + W].copy()
            owner = np.zeros((H, W), dtype=int)
            for actor in sorted(actors, key=lambda a: a.depth):
                if actor.path[f] is None:
                    continue
                x, y = (int(round(v)) for v in actor.path[f])
                x, y = x - dx, y - dy  # the camera moved by (dx, dy): the scene moves the other way
                w, h = actor.size
                x1, y1, x2, y2 = max(0, x), max(0, y), min(W, x + w), min(H, y + h)
                if x2 <= x1 or y2 <= y1:
                    continue
                image[y1:y2, x1:x2] = actor.texture[y1 - y : y2 - y, x1 - x : x2 - x]
                owner[y1:y2, x1:x2] = actor.gt_id
            rows = []
            for actor in actors:
                if actor.path[f] is None:
                    continue
                x, y = actor.path[f]
                x, y = x - dx, y - dy
                w, h = actor.size
                x1, y1, x2, y2 = max(0.0, x), max(0.0, y), min(float(W), x + w), min(float(H), y + h)
                if x2 <= x1 or y2 <= y1:
                    continue
                visible = float((owner == actor.gt_id).sum()) / (w * h)
                if visible >= MIN_VISIBLE:
                    rows.append((actor.gt_id, actor.label, (x1, y1, x2, y2), visible))
            truth.append(rows)
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            frame.pts = f
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path, truth


class NoisyDetector:
    """Answers a frame from the truth as a detector would: edges jittered, misses (more of them when an object
    is partly hidden), an unsure score now and then, a wrong label now and then, and false positives. The same
    frame always gets the same answer, whichever mode asks."""
    input_size = None  # takes keyframes at any size

    def __init__(self, truth, seed: int, jitter: float = 0.04, miss: float = 0.08, false_rate: float = 0.15) -> None:
        self.truth, self.seed = truth, seed
        self.jitter, self.miss, self.false_rate = jitter, miss, false_rate

    def answer(self, index: int) -> sv.Detections:
        rng = np.random.default_rng([self.seed, index])
        boxes, scores, labels = [], [], []
        for _, label, (x1, y1, x2, y2), visible in self.truth[index]:
            if rng.random() < self.miss + 0.7 * (1 - visible):
                continue
            w, h = x2 - x1, y2 - y1
            boxes.append([x1 + rng.normal(0, self.jitter * w), y1 + rng.normal(0, self.jitter * h),
                          x2 + rng.normal(0, self.jitter * w), y2 + rng.normal(0, self.jitter * h)])
            scores.append(rng.uniform(0.3, 0.5) if rng.random() < 0.15 else rng.uniform(0.55, 0.95))
            labels.append(("truck" if label == "car" else "man") if rng.random() < 0.05 else label)
        for _ in range(rng.poisson(self.false_rate)):
            w, h = rng.uniform(20, 80), rng.uniform(20, 80)
            x, y = rng.uniform(0, W - w), rng.uniform(0, H - h)
            boxes.append([x, y, x + w, y + h])
            scores.append(rng.uniform(0.3, 0.6))
            labels.append(str(rng.choice(["car", "person"])))
        return sv.Detections(
            xyxy=np.array(boxes, dtype=np.float32).reshape(-1, 4),
            confidence=np.array(scores, dtype=np.float32),
            data={"class_name": np.array(labels, dtype=object), "text": np.array([""] * len(labels), dtype=object)},
        )

    def detect(self, keyframes: list[Keyframe]) -> list[FrameDetections]:
        return [FrameDetections(k, self.answer(k.frame.index)) for k in keyframes]
