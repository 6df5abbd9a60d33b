"""Annotation tools' own exports read back as a labelled dataset: CVAT XML and Label Studio JSON.

- CVAT for images 1.1 (`<image name>` with `<box>`es; images in `images/` beside the XML) and CVAT for video 1.1
  (`<track>`s of `<box frame>`es; frames taken from the task's video: `<meta><task><source>`, or
  `videos/<name>` beside the XML). A video's samples are the frames where a person (or the model) set a keyframe,
  with every track's box on them; `outside` boxes end a track.
- Label Studio's JSON export: image tasks with `rectanglelabels`, video tasks with `videorectangle` (points where
  a box was set, the frames between drawn as Label Studio draws them: linearly, until `enabled: false`). Each
  task's latest annotation that was not cancelled; a task nobody annotated is left out. Media are found beside
  the JSON (`images/`, `videos/`, or the path in the task's URL).
Text for OCR: CVAT's box attribute `text`; Label Studio's `textarea` on the same region.

A file that is not what it says (XML cut short, a result type that is not a box, a frame the video does not have)
is one line naming the file and what is wrong.
"""

from __future__ import annotations

import json
import urllib.parse
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

import av
import numpy as np
import supervision as sv

from streamer.annotation.samples import Dataset, Sample, image_size
from streamer.errors import StreamerError

MAX_BYTES = 200_000_000  # an annotation file larger than this is not one people corrected by hand
BOX_TYPES = {"rectanglelabels", "videorectangle"}
SIDE_TYPES = {"labels", "textarea", "choices"}  # carried beside a box (its label, its text) or about the task


def find(path: Path) -> list[Path]:
    """The CVAT XML or Label Studio JSON file `path` is, or those in the folder `path` (one per video)."""
    if path.is_file():
        return [path] if path.suffix.lower() in (".xml", ".json") else []
    return [p for p in sorted(path.glob("*.xml")) if _begins(p, b"<annotations")] + [
        p for p in sorted(path.glob("*.json")) if _begins(p, b"[")]


def _begins(path: Path, start: bytes) -> bool:
    """A CVAT XML file's first element is <annotations>; a Label Studio JSON export is a list of tasks (a file
    cut short after its start is still taken, to be told what is wrong with it)."""
    try:
        with path.open("rb") as f:
            head = f.read(4096)
    except OSError:
        return False
    if start == b"[":
        return head.lstrip().startswith(start)
    body = head.split(b"?>", 1)[-1] if head.lstrip().startswith(b"<?xml") else head
    return body.lstrip().startswith(start)


def read(paths: list[Path]) -> Dataset:
    """One dataset of the files' samples, the classes of all of them."""
    parts = []
    for path in paths:
        if path.stat().st_size > MAX_BYTES:
            raise StreamerError(f"{path}: {path.stat().st_size} bytes is larger than an annotation export can be")
        parts.append(_read_cvat(path) if path.suffix.lower() == ".xml" else _read_label_studio(path))
    classes = sorted({name for part in parts for name in part.classes})
    samples = []
    for part in parts:
        to_all = np.array([classes.index(name) for name in part.classes], dtype=int)
        for sample in part.samples:
            sample.boxes.class_id = to_all[sample.boxes.class_id] if len(sample.boxes) else sample.boxes.class_id
            samples.append(sample)
    return Dataset(classes, samples)


# ---- CVAT -----------------------------------------------------------------------------------------------------

def _read_cvat(path: Path) -> Dataset:
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise StreamerError(f"{path}: not CVAT XML ({exc})") from None
    if root.tag != "annotations":
        raise StreamerError(f"{path}: not CVAT XML (its root is <{root.tag}>, not <annotations>)")
    classes = [e.findtext("name") for e in root.iter("label") if e.findtext("name")]
    try:
        if root.find("track") is not None:
            return _cvat_video(path, root, classes)
        return _cvat_images(path, root, classes)
    except (KeyError, ValueError) as exc:
        raise StreamerError(f"{path}: a box without {exc} (CVAT boxes have xtl, ytl, xbr, ybr)") from None


def _cvat_box(element: ET.Element) -> tuple[list[float], str]:
    box = [float(element.attrib[k]) for k in ("xtl", "ytl", "xbr", "ybr")]
    text = next((a.text or "" for a in element.iter("attribute") if a.get("name") == "text"), "")
    return box, text


def _cvat_images(path: Path, root: ET.Element, classes: list[str]) -> Dataset:
    items = []
    for image in root.iter("image"):
        name = image.get("name")
        if not name:
            raise StreamerError(f"{path}: an <image> without a name")
        boxes = [(b.get("label", ""), *_cvat_box(b)) for b in image.iter("box")]
        items.append((_media(path, name, "images"), boxes))
    if not items:
        raise StreamerError(f"{path}: no <image> or <track> in it")
    return _dataset(path, classes, [(file, None, boxes) for file, boxes in items])


def _cvat_video(path: Path, root: ET.Element, classes: list[str]) -> Dataset:
    frames: dict[int, list] = defaultdict(list)
    keyframes: set[int] = set()
    for track in root.iter("track"):
        label = track.get("label", "")
        for box in track.iter("box"):
            frame = int(box.attrib["frame"])
            if box.get("outside") == "1":
                continue
            frames[frame].append((label, *_cvat_box(box)))
            if box.get("keyframe", "1") == "1":
                keyframes.add(frame)
    name = root.findtext("meta/task/source") or root.findtext("meta/job/source") or ""
    video = _media(path, name or path.with_suffix(".mp4").name, "videos")
    pictures = _frames(video, sorted(keyframes), path)
    return _dataset(path, classes, [(video.with_name(f"{video.stem}#{i}"), pictures[i], frames[i])
                                    for i in sorted(keyframes)])


# ---- Label Studio ---------------------------------------------------------------------------------------------

def _read_label_studio(path: Path) -> Dataset:
    try:
        tasks = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise StreamerError(f"{path}: not a Label Studio JSON export ({exc})") from None
    if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
        raise StreamerError(f"{path}: not a Label Studio JSON export (a list of tasks)")
    items = []
    for number, task in enumerate(tasks, 1):
        result = _latest_result(path, number, task)
        if result is None:
            continue
        data = task.get("data") or {}
        if any(r.get("type") == "videorectangle" for r in result):
            video = _media(path, _url_path(data.get("video")), "videos")
            by_frame = _video_boxes(path, number, result)
            pictures = _frames(video, sorted(by_frame), path)
            items += [(video.with_name(f"{video.stem}#{f}"), pictures[f],
                       [(label, _from_percent(box, pictures[f].shape), text) for label, box, text in by_frame[f]])
                      for f in sorted(by_frame)]
        else:
            image = _media(path, _url_path(data.get("image")), "images")
            items.append((image, None, _image_boxes(path, number, result, _size(path, image))))
    if not items:
        raise StreamerError(f"{path}: no task in it has an annotation (export after labelling, with annotations)")
    return _dataset(path, [], items)


def _latest_result(path: Path, number: int, task: dict) -> list[dict] | None:
    annotations = [a for a in task.get("annotations") or [] if isinstance(a, dict) and not a.get("was_cancelled")]
    if not annotations:
        return None
    result = max(annotations, key=lambda a: str(a.get("updated_at") or a.get("created_at") or "")).get("result")
    if not isinstance(result, list) or not all(isinstance(r, dict) for r in result):
        raise StreamerError(f"{path}: task {number}: its annotation's result is not a list of regions")
    for r in result:
        kind = r.get("type")
        if kind not in BOX_TYPES | SIDE_TYPES:
            raise StreamerError(f"{path}: task {number}: result type {kind!r} is not a box; streamer learns "
                                "boxes (rectanglelabels, videorectangle)")
    return result


def _texts(result: list[dict]) -> dict[str, str]:
    return {r.get("id"): " ".join(map(str, (r.get("value") or {}).get("text") or [])) for r in result
            if r.get("type") == "textarea" and r.get("id")}


def _from_percent(box: list[float], shape) -> list[float]:
    """Label Studio's x, y, width, height in percent of the picture, as pixels x1, y1, x2, y2."""
    height, width = shape[:2]
    x, y, w, h = box
    return [x * width / 100, y * height / 100, (x + w) * width / 100, (y + h) * height / 100]


def _image_boxes(path: Path, number: int, result: list[dict], shape) -> list:
    texts, boxes = _texts(result), []
    for r in result:
        if r.get("type") != "rectanglelabels":
            continue
        v = r.get("value") or {}
        try:
            x, y, w, h = (float(v[k]) for k in ("x", "y", "width", "height"))
            label = str(v["rectanglelabels"][0])
        except (KeyError, IndexError, TypeError, ValueError):
            raise StreamerError(f"{path}: task {number}: a rectangle without x, y, width, height or a label") from None
        if float(v.get("rotation") or 0):
            raise StreamerError(f"{path}: task {number}: a rotated rectangle; streamer learns upright boxes")
        boxes.append((label, _from_percent([x, y, w, h], shape), texts.get(r.get("id"), "")))
    return boxes


def _video_boxes(path: Path, number: int, result: list[dict]) -> dict[int, list]:
    """Every track's boxes on the frames where a point was set (frames from 0): (label, [x, y, w, h] in percent
    of the picture, text)."""
    keyed: set[int] = set()
    tracks = []
    for r in result:
        if r.get("type") != "videorectangle":
            continue
        v = r.get("value") or {}
        try:
            label = str((v.get("labels") or [""])[0])
            points = sorted(((int(p["frame"]) - 1, bool(p.get("enabled", True)),
                              [float(p[k]) for k in ("x", "y", "width", "height")]) for p in v["sequence"]),
                            key=lambda p: p[0])
        except (KeyError, TypeError, ValueError):
            raise StreamerError(f"{path}: task {number}: a video rectangle without frame, x, y, width, height") from None
        keyed.update(frame for frame, _, _ in points)
        tracks.append((label, points))
    by_frame: dict[int, list] = {frame: [] for frame in keyed}
    for label, points in tracks:
        for frame in keyed:
            box = _at(points, frame)
            if box is not None:
                by_frame[frame].append((label, box, ""))
    return by_frame


def _at(points: list, frame: int) -> list[float] | None:
    """A Label Studio track's box on `frame`: a point's own, or between an enabled point and the next, linearly."""
    for (f0, enabled, b0), (f1, _, b1) in zip(points, points[1:] + [(None, False, None)]):
        if frame == f0:
            return b0
        if f1 is not None and f0 < frame < f1:
            if not enabled:
                return None
            t = (frame - f0) / (f1 - f0)
            return [a + (b - a) * t for a, b in zip(b0, b1)]
    return None


def _url_path(url) -> str:
    """The file a task's media URL names: Label Studio's `/data/local-files/?d=PATH`, an upload, or a path."""
    if not isinstance(url, str) or not url:
        return ""
    parsed = urllib.parse.urlparse(url)
    if "d" in urllib.parse.parse_qs(parsed.query):
        return urllib.parse.parse_qs(parsed.query)["d"][0]
    return urllib.parse.unquote(parsed.path)


# ---- media ----------------------------------------------------------------------------------------------------

def _media(path: Path, name: str, folder: str) -> Path:
    """A task's image or video, looked for beside the export: as named, in `folder/`, or by its file name."""
    if not name:
        raise StreamerError(f"{path}: a task names no {folder[:-1]}")
    here = path.parent
    named = Path(name)
    for candidate in (here / named, here / folder / named, here / folder / named.name, here / named.name):
        if candidate.is_file():
            return candidate
    raise StreamerError(f"{path}: {folder[:-1]} {name} not found beside it (looked in {here} and {here / folder})")


def _size(path: Path, image: Path) -> tuple[int, int]:
    """(height, width) of a task's image, or one line naming the export."""
    try:
        return image_size(image)
    except StreamerError:
        raise StreamerError(f"{path}: image {image} is not an image") from None


def _frames(video: Path, wanted: list[int], path: Path) -> dict[int, np.ndarray]:
    """The frames `wanted` (numbered from 0 in decoding order, as CVAT and Label Studio number them)."""
    out: dict[int, np.ndarray] = {}
    wanted_set, count = set(wanted), 0
    try:
        with av.open(str(video)) as container:
            for index, frame in enumerate(container.decode(video=0)):
                count = index + 1
                if index in wanted_set:
                    out[index] = frame.to_ndarray(format="bgr24")
                if len(out) == len(wanted_set):
                    break
    except (av.FFmpegError, IndexError, OSError) as exc:
        raise StreamerError(f"{path}: cannot read its video {video}: {exc}") from None
    missing = sorted(wanted_set - out.keys())
    if missing:
        raise StreamerError(f"{path}: frame {missing[0]} is not in {video}, which has {count} frames "
                            f"({len(missing)} frames named are not there)")
    return out


def _dataset(path: Path, classes: list[str], items: list) -> Dataset:
    """Samples from (name, picture or None for an image file, [(label, box in pixels, text)]); the classes named,
    and any label used."""
    classes = sorted(set(classes) | {label for _, _, boxes in items for label, _, _ in boxes})
    index = {name: i for i, name in enumerate(classes)}
    samples = []
    for name, picture, boxes in items:
        texts = [text for _, _, text in boxes]
        detections = sv.Detections(xyxy=np.array([box for _, box, _ in boxes], dtype=np.float32).reshape(-1, 4),
                                   class_id=np.array([index[label] for label, _, _ in boxes], dtype=int))
        size = None if picture is not None else _size(path, Path(name))
        samples.append(Sample(Path(name), picture, detections, texts if any(texts) else None, size))
    if any(s.texts for s in samples):
        for s in samples:
            s.texts = s.texts or [""] * len(s.boxes)
    return Dataset(classes, samples)
