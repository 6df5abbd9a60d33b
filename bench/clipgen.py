"""Synthetic H.264 clips for the benches, generated on the fly (too large to commit)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def make_clip(path: Path, width: int, height: int, fps: int, seconds: float, preset: str = "medium") -> Path:
    """A panning textured gradient with a bright square: cheap to render, and with camera-like texture
    (fine detail that moves) so the encoder makes a real bitstream and decoding costs what real footage costs."""
    yy, xx = np.mgrid[0:height, 0:width]
    texture = np.random.default_rng(0).integers(0, 48, (height, width), dtype=np.uint8)
    base = (((xx + yy) % 208) + texture).astype(np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": preset, "crf": "23", "g": str(2 * fps)}
        for i in range(int(fps * seconds)):
            image = np.empty((height, width, 3), np.uint8)
            shifted = np.roll(base, i * 4, axis=1)
            image[..., 0] = shifted
            image[..., 1] = shifted[::-1]
            image[..., 2] = 128
            x = (i * 7) % (width - 80)
            image[100:180, x : x + 80] = 255
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def loop_clip(source: Path, path: Path, times: int) -> Path:
    """Concatenate a clip with itself by remuxing its packets (no re-encode): a long input made in seconds."""
    with av.open(str(source)) as src, av.open(str(path), "w") as dst:
        in_stream = src.streams.video[0]
        out_stream = dst.add_stream_from_template(in_stream)
        packets = [p for p in src.demux(in_stream) if p.dts is not None]
        step = int(round(1 / (in_stream.average_rate * in_stream.time_base)))
        span = max(p.pts for p in packets) - min(p.pts for p in packets) + step
        for n in range(times):
            for packet in packets:
                if n:
                    packet.pts += span
                    packet.dts += span
                packet.stream = out_stream
                dst.mux(packet)
    return path
