"""A labelled dataset as streamer holds it, whichever tool's export it was read from: images (or a video's
frames) with their boxes, class names and texts. The readers (`streamer.annotation.dataset` for COCO and YOLO,
`streamer.annotation.tools` for CVAT and Label Studio) make these; evaluation and fine-tuning take them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import supervision as sv

from streamer.errors import StreamerError


@dataclass
class Sample:
    """One labelled image and its boxes (`class_id` into the dataset's classes). An image file is decoded when
    it is used, not held: a dataset of thousands of images fits in memory; a video's frames are held (`pixels`)."""

    path: Path
    pixels: np.ndarray | None  # BGR; None: read from `path` each time
    boxes: sv.Detections
    texts: list[str] | None = None  # per box, "" where a box has none; None: the dataset carries no text
    size: tuple[int, int] | None = None  # (height, width) of an image file, read from its header

    @property
    def image(self) -> np.ndarray:
        if self.pixels is not None:
            return self.pixels
        image = cv2.imread(str(self.path))
        if image is None:
            raise StreamerError(f"dataset image {self.path} is missing or not an image")
        return image

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width)"""
        return self.pixels.shape[:2] if self.pixels is not None else self.size


def image_size(path: Path) -> tuple[int, int]:
    """(height, width) of an image file as OpenCV decodes it (turned by its EXIF orientation), from its header."""
    from PIL import Image

    try:
        with Image.open(path) as picture:
            width, height = picture.size
            turned = picture.getexif().get(0x0112, 1) in (5, 6, 7, 8)  # EXIF orientation: a quarter turn
    except (OSError, ValueError, SyntaxError) as exc:  # PIL's ways of saying "not an image"
        raise StreamerError(f"dataset image {path} is missing or not an image ({type(exc).__name__})") from None
    return (width, height) if turned else (height, width)


@dataclass
class Dataset:
    classes: list[str]
    samples: list[Sample]

    @property
    def has_text(self) -> bool:
        return any(t for s in self.samples for t in (s.texts or []))
