"""Labelled datasets read back: what `streamer export` writes, after people corrected it in their tool.

- COCO: `annotations/instances_<subset>.json` with `images/<subset>/` or `images/` (CVAT, Datumaro), a bare
  `annotations.json` with `images/` (supervision, Roboflow), or Label Studio's COCO export (`result.json`, its
  `file_name`s relative to the folder). Text for OCR: an annotation's attribute `text`
  (`"attributes": {"text": "AB 42"}`, what CVAT writes for an attribute named text).
- YOLO: a `data.yaml` whose `train` / `val` name image folders (labels where Ultralytics looks: `images` in the
  path replaced by `labels`), or the flat `images/` + `labels/`.
- CVAT XML (for images or for video, frames taken from the video) and Label Studio's JSON export: `annotations`.

Reading COCO and YOLO is supervision's own `DetectionDataset.from_coco` / `from_yolo`; what a wrong dataset looks
like is checked here, before any model is loaded, so a bad dataset is one line: no images, images missing, no
classes, a box outside its image.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import supervision as sv

from streamer.annotation import tools as annotations
from streamer.annotation.samples import Dataset, Sample, image_size
from streamer.errors import StreamerError


def load_dataset(path: Path) -> Dataset:
    """A labelled dataset: a folder in one of the layouts above, or a CVAT XML / Label Studio JSON file."""
    path = Path(path)
    if not path.exists():
        raise StreamerError(f"dataset {path}: no such folder (a COCO, YOLO, CVAT or Label Studio export)")
    if path.is_file() or not ((path / "data.yaml").is_file() or _coco_files(path)):
        tool_files = annotations.find(path)
        if path.is_file() and not tool_files:
            raise StreamerError(f"dataset {path}: not a CVAT XML or Label Studio JSON file; or name its folder")
        if tool_files:
            return _checked(path, annotations.read(tool_files))
    texts: dict[tuple, str] = {}
    try:
        parts = []
        if (path / "data.yaml").is_file():
            data_yaml = path / "data.yaml"
            for images, labels in _yolo_subsets(data_yaml):
                parts.append(sv.DetectionDataset.from_yolo(str(images), str(labels), str(data_yaml)))
        else:
            found = _coco_files(path)
            if not found:
                raise StreamerError(f"dataset {path}: no COCO annotations (annotations/instances_*.json, "
                                    "annotations.json, result.json), YOLO data.yaml, CVAT XML or Label Studio JSON")
            for annotations_file, images in found:
                texts.update(_check_coco(annotations_file, images))
                parts.append(sv.DetectionDataset.from_coco(str(images), str(annotations_file)))
        data = parts[0] if len(parts) == 1 else sv.DetectionDataset.merge(parts)
    except StreamerError:
        raise
    except Exception as exc:  # supervision's readers raise whatever their parsers do
        raise StreamerError(f"dataset {path}: cannot be read: {type(exc).__name__}: {exc}") from None
    if not data.classes:
        raise StreamerError(f"dataset {path} names no classes")
    samples = []
    for image_path in data.image_paths:  # not `for ... in data`, which decodes every image
        boxes = data.annotations[image_path]
        found = [texts.get((Path(image_path).name, *(round(float(v), 1) for v in box)), "") for box in boxes.xyxy]
        samples.append(Sample(Path(image_path), None, boxes, found if texts else None, image_size(Path(image_path))))
    return _checked(path, Dataset(list(data.classes), samples))


def _checked(path: Path, dataset: Dataset) -> Dataset:
    """Every box inside its image, and something to learn from."""
    for sample in dataset.samples:
        h, w = sample.shape
        if len(sample.boxes):
            xyxy = sample.boxes.xyxy
            outside = (xyxy[:, 0] < -1) | (xyxy[:, 1] < -1) | (xyxy[:, 2] > w + 1) | (xyxy[:, 3] > h + 1)
            outside |= (xyxy[:, 2] <= xyxy[:, 0]) | (xyxy[:, 3] <= xyxy[:, 1])
            if outside.any():
                box = [round(float(v), 1) for v in xyxy[int(np.flatnonzero(outside)[0])]]
                raise StreamerError(f"dataset {path}: a box {box} lies outside its {w}x{h} image {sample.path}")
    if not dataset.samples:
        raise StreamerError(f"dataset {path} holds no images")
    if not any(len(s.boxes) for s in dataset.samples):
        raise StreamerError(f"dataset {path} holds no boxes: nothing to evaluate or learn")
    return dataset


def _coco_files(folder: Path) -> list[tuple[Path, Path]]:
    """(annotations file, the folder its `file_name`s are relative to) of each COCO subset in `folder`."""
    if (folder / "annotations.json").is_file():
        return [(folder / "annotations.json", folder / "images")]
    if (folder / "result.json").is_file():  # Label Studio's COCO export: file names like images/abc.jpg
        return [(folder / "result.json", folder)]
    found = []
    for annotations_file in sorted((folder / "annotations").glob("instances_*.json")):
        subset = annotations_file.stem.removeprefix("instances_")
        images = folder / "images" / subset
        found.append((annotations_file, images if images.is_dir() else folder / "images"))
    return found


def _yolo_subsets(data_yaml: Path) -> list[tuple[Path, Path]]:
    """(images, labels) folders of each subset a `data.yaml` names (Ultralytics: `train`, `val`, `test`, relative
    to its `path` or to the file's folder); a data.yaml naming none is the flat `images/` + `labels/`."""
    data = _check_yolo(data_yaml)
    root = data_yaml.parent
    if isinstance(data.get("path"), str):
        root = root / data["path"]
    subsets: list[tuple[Path, Path]] = []
    for key in ("train", "val", "test"):
        entries = data.get(key)
        for entry in entries if isinstance(entries, list) else [entries] if entries else []:
            if not isinstance(entry, str):
                raise StreamerError(f"{data_yaml}: `{key}` should name a folder of images")
            images = (root / entry).resolve()
            if not images.is_dir():
                raise StreamerError(f"{data_yaml}: `{key}` names {images}, which is not a folder of images")
            parts = list(images.parts)
            if "images" not in parts:
                raise StreamerError(f"{data_yaml}: `{key}` names {images}, but labels are found beside a folder "
                                    "named images (images/ -> labels/)")
            at = len(parts) - 1 - parts[::-1].index("images")
            labels = Path(*parts[:at], "labels", *parts[at + 1:])
            if (images, labels) not in subsets:
                subsets.append((images, labels))
    return subsets or [(data_yaml.parent / "images", data_yaml.parent / "labels")]


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
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:  # RecursionError: nested too deep
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


def _check_yolo(path: Path) -> dict:
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
    return data
