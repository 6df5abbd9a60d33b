"""Make clips/street.mp4: a small synthetic street scene the demo and the tests share.

Six seconds at 25 fps, 640x360, H.264: a car carrying a number plate drives in from the left and leaves on the
right, a person walks in and stops, a shop sign with printed words and numbers stays put, and the light changes
once (a scene change for the sampler). Deterministic, so the file can be rebuilt bit-for-bit on one machine.

    python clips/make_clip.py [OUT]
"""

from __future__ import annotations

import sys
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

WIDTH, HEIGHT, FPS, SECONDS = 640, 360, 25, 6


def _background(dusk: bool) -> np.ndarray:
    sky, road = ((70, 40, 30), (40, 40, 40)) if dusk else ((235, 206, 135), (90, 90, 90))
    image = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    image[:200] = sky
    image[200:] = road
    for x in range(0, WIDTH, 80):
        cv2.rectangle(image, (x + 10, 280), (x + 50, 286), (220, 220, 220), -1)
    cv2.rectangle(image, (430, 60), (620, 130), (30, 90, 160), -1)
    cv2.putText(image, "STREAMER 2026", (440, 105), cv2.FONT_HERSHEY_SIMPLEX, 0.75, (255, 255, 255), 2, cv2.LINE_AA)
    return image


def _car(image: np.ndarray, x: int) -> None:
    y = 215
    cv2.rectangle(image, (x, y), (x + 150, y + 55), (40, 40, 200), -1)
    cv2.rectangle(image, (x + 30, y - 30), (x + 115, y), (40, 40, 180), -1)
    for wx in (x + 30, x + 120):
        cv2.circle(image, (wx, y + 58), 16, (20, 20, 20), -1)
    cv2.rectangle(image, (x + 45, y + 30), (x + 110, y + 50), (250, 250, 250), -1)
    cv2.putText(image, "AB 42", (x + 48, y + 46), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)


def _person(image: np.ndarray, x: int) -> None:
    cv2.circle(image, (x, 170), 12, (150, 190, 230), -1)
    cv2.rectangle(image, (x - 12, 183), (x + 12, 235), (160, 80, 40), -1)
    cv2.line(image, (x - 6, 235), (x - 8, 268), (60, 40, 20), 5)
    cv2.line(image, (x + 6, 235), (x + 8, 268), (60, 40, 20), 5)


def render(index: int) -> np.ndarray:
    t = index / FPS
    image = _background(dusk=t >= 4.0)
    car_x = int(-160 + (WIDTH + 170) * min(1.0, t / 4.5))
    _car(image, car_x)
    if t >= 1.0:
        _person(image, int(min(300, 20 + 140 * (t - 1.0))))
    return image


def main(out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(out), "w", options={"movflags": "+faststart"}) as container:
        stream = container.add_stream("libx264", rate=Fraction(FPS))
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.options = {"preset": "medium", "crf": "26", "g": "50", "threads": "1"}
        for index in range(FPS * SECONDS):
            frame = av.VideoFrame.from_ndarray(render(index), format="bgr24")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("street.mp4"))
