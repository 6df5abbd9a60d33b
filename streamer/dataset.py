"""Labelled datasets read back: the COCO or YOLO folders `streamer export` writes, after people corrected them.

CVAT, Label Studio and Roboflow read and write both. A COCO folder has `annotations.json` and `images/`; a YOLO
folder has `data.yaml`, `images/` and `labels/`. Reading is supervision's own `DetectionDataset.from_coco` /
`from_yolo`; what a wrong dataset looks like is checked here, before any model is loaded, so a bad dataset is
one line: no images, images missing, no classes, a box outside its image.

Text (for OCR) is read from COCO: an annotation's attribute `text` (`"attributes": {"text": "AB 42"}`, what CVAT
writes for an attribute named text), the box being where it is written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import supervision as sv

from streamer.errors import StreamerError


@dataclass
class Sample:
    """One labelled image: BGR pixels, its boxes (`class_id` into the dataset's classes)."""

    path: Path
    image: np.ndarray
    boxes: sv.Detections
    texts: list[str] | None = None  # per box, "" where a box has none; None: the dataset carries no text


@dataclass
class Dataset:
    classes: list[str]
    samples: list[Sample]

    @property
    def has_text(self) -> bool:
        return any(t for s in self.samples for t in (s.texts or []))


def load_dataset(folder: Path) -> Dataset:
    folder = Path(folder)
    if not folder.is_dir():
        raise StreamerError(f"dataset {folder}: no such folder (a COCO or YOLO folder, as `streamer export` writes)")
    images = folder / "images"
    texts: dict[tuple, str] = {}
    try:
        if (folder / "annotations.json").is_file():
            texts = _check_coco(folder / "annotations.json", images)
            data = sv.DetectionDataset.from_coco(str(images), str(folder / "annotations.json"))
        elif (folder / "data.yaml").is_file():
            _check_yolo(folder / "data.yaml")
            data = sv.DetectionDataset.from_yolo(str(images), str(folder / "labels"), str(folder / "data.yaml"))
        else:
            raise StreamerError(f"dataset {folder}: neither annotations.json (COCO) nor data.yaml (YOLO) in it")
    except StreamerError:
        raise
    except Exception as exc:  # supervision's readers raise whatever their parsers do
        raise StreamerError(f"dataset {folder}: cannot be read: {type(exc).__name__}: {exc}") from None
    if not data.classes:
        raise StreamerError(f"dataset {folder} names no classes")
    samples = []
    for path, _, boxes in data:
        image = cv2.imread(path)
        if image is None:
            raise StreamerError(f"dataset {folder}: image {path} is missing or not an image")
        h, w = image.shape[:2]
        if len(boxes):
            xyxy = boxes.xyxy
            outside = (xyxy[:, 0] < -1) | (xyxy[:, 1] < -1) | (xyxy[:, 2] > w + 1) | (xyxy[:, 3] > h + 1)
            outside |= (xyxy[:, 2] <= xyxy[:, 0]) | (xyxy[:, 3] <= xyxy[:, 1])
            if outside.any():
                box = [round(float(v), 1) for v in xyxy[int(np.flatnonzero(outside)[0])]]
                raise StreamerError(f"dataset {folder}: a box {box} lies outside its {w}x{h} image {path}")
        found = [texts.get((Path(path).name, *(round(float(v), 1) for v in box)), "") for box in boxes.xyxy]
        samples.append(Sample(Path(path), image, boxes, found if texts else None))
    if not samples:
        raise StreamerError(f"dataset {folder} holds no images")
    if not any(len(s.boxes) for s in samples):
        raise StreamerError(f"dataset {folder} holds no boxes: nothing to evaluate or learn")
    return Dataset(list(data.classes), samples)


def _check_coco(annotations: Path, images: Path) -> dict[tuple, str]:
    """supervision skips COCO images whose files are missing; a user's dataset with a lost image must say so.
    Returns the texts of annotations, keyed by (image file name, x1, y1, x2, y2)."""
    try:
        coco = json.loads(annotations.read_text(encoding="utf-8"))
        names = {entry["id"]: entry["file_name"] for entry in coco["images"]}
        texts = {}
        for a in coco.get("annotations", []):
            text = (a.get("attributes") or {}).get("text")
            if text:
                x, y, w, h = a["bbox"]
                box = (round(float(v), 1) for v in (x, y, x + w, y + h))
                texts[(Path(names[a["image_id"]]).name, *box)] = str(text)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StreamerError(f"{annotations} is not COCO annotations: {exc}") from None
    missing = [name for name in names.values() if not (images / name).is_file()]
    if missing:
        raise StreamerError(f"dataset image missing: {images / missing[0]} ({len(missing)} in all)")
    return texts


def split(samples: list[Sample], share: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """(train, validation): `share` of the samples for validation, at least one when there are two or more."""
    order = np.random.default_rng(seed).permutation(len(samples))
    n_val = min(len(samples) - 1, max(1 if share > 0 and len(samples) > 1 else 0, round(share * len(samples))))
    val = [samples[i] for i in order[:n_val]]
    return [samples[i] for i in order[n_val:]], val


_YAML_MAX = 1_000_000  # bytes: a data.yaml names classes; anything near this is not one


def _check_yolo(path: Path) -> None:
    """A YOLO `data.yaml` read before supervision reads it: small, UTF-8, without YAML anchors or aliases (an
    alias bomb grows memory without end), a mapping whose `names` are class names."""
    import yaml

    if path.stat().st_size > _YAML_MAX:
        raise StreamerError(f"{path}: {path.stat().st_size} bytes is not a data.yaml (it names classes)")
    try:
        text = path.read_text(encoding="utf-8")
        events = list(yaml.parse(text, Loader=yaml.SafeLoader))
    except UnicodeDecodeError:
        raise StreamerError(f"{path}: not UTF-8 text") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise StreamerError(f"{path}: not valid YAML" + (f" at line {mark.line + 1}" if mark else "")) from None
    if any(isinstance(e, yaml.AliasEvent) or getattr(e, "anchor", None) for e in events):
        raise StreamerError(f"{path}: YAML anchors and aliases are not taken in a data.yaml")
    try:
        data = yaml.safe_load(text)
    except RecursionError:
        raise StreamerError(f"{path}: nested too deeply to be a data.yaml") from None
    names = data.get("names") if isinstance(data, dict) else None
    if isinstance(names, dict):
        names = list(names.values())
    if not isinstance(names, list) or not all(isinstance(n, (str, int)) for n in names):
        raise StreamerError(f"{path}: `names` should list the class names")
