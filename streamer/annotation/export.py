"""Export: a run's saved keyframes and their boxes as a COCO or YOLO dataset (tracks on video: `track_export`).

For people annotating recorded video and fine-tuning Florence-2 on their own footage. A dataset needs the run to
have kept its keyframes (`output.save_keyframes: true`); its boxes are every box the model gave on each keyframe
after `model.min_confidence`, clipped to the picture (one with nothing left is dropped), with its track id (-1:
not confirmed yet) as COCO's `attributes.track_id` (how CVAT keeps an attribute) or YOLO's
`track_ids/train/<image>.txt` (a line per label line). The layouts are the ones the tools import: COCO as CVAT
exports it (`annotations/instances_default.json`, `images/default/`), YOLO as Ultralytics trains on it (`data.yaml`
with `train`/`val`, `images/train/`, `labels/train/`); supervision's `as_coco` / `as_yolo` write them. The run
folder may have been moved since: images are found relative to the store.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
from pathlib import Path

import numpy as np
import supervision as sv

from streamer.annotation.track_export import LABEL_STUDIO_FILES, TRACK_FORMATS, export_tracks, one_line, write_text
from streamer.errors import StreamerError, cannot_write
from streamer.outputs.runfolder import find_store
from streamer.outputs.store import keyframe_boxes


def build_dataset(store: Path) -> tuple[sv.DetectionDataset, dict[str, list[int]]]:
    """The dataset, and the track id of each box of each image (in the order of its detections)."""
    images, boxes = keyframe_boxes(store)
    if not images:
        raise StreamerError(f"{store} holds no saved keyframes: run with output.save_keyframes: true to export")
    missing = [image for image in images if not image.is_file()]
    if missing:
        raise StreamerError(f"keyframe image missing: {missing[0]} ({len(missing)} in all)")
    boxes = {image: [(one_line(label), box, track) for label, box, track in rows] for image, rows in boxes.items()}
    classes = sorted({label for rows in boxes.values() for label, _, _ in rows})
    index = {name: i for i, name in enumerate(classes)}
    annotations, track_ids = {}, {}
    for image in images:
        rows = _inside(boxes.get(image, []), image)
        annotations[str(image)] = sv.Detections(
            xyxy=np.array([b for _, b, _ in rows], dtype=np.float32).reshape(-1, 4),
            class_id=np.array([index[label] for label, _, _ in rows], dtype=int),
        )
        track_ids[str(image)] = [t for _, _, t in rows]
    dataset = sv.DetectionDataset(classes=classes, images=[str(image) for image in images], annotations=annotations)
    return dataset, track_ids


def _inside(rows: list, image: Path) -> list:
    """The boxes clipped to their image; one with no width or height left is no box (COCO scores it as a miss)."""
    from PIL import Image

    try:
        with Image.open(image) as picture:
            width, height = picture.size
    except OSError as exc:
        raise StreamerError(f"keyframe image {image} cannot be read: {exc}") from None
    if not rows:
        return []
    boxes = sv.clip_boxes(np.array([box for _, box, _ in rows], dtype=float).reshape(-1, 4), (width, height))
    return [(label, tuple(map(float, b)), track) for (label, _, track), b in zip(rows, boxes)
            if b[2] - b[0] >= 1e-3 and b[3] - b[1] >= 1e-3]


def export(run_or_db: Path, fmt: str, out: Path, media_url: str | None = None) -> tuple[int, int]:
    """Write the dataset (or the tracks) to `out`; return (images or sources, boxes). It is built beside `out`
    and moved there whole: a failed export (a full disk) leaves nothing, not half a dataset."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise StreamerError(f"{out} is a file: name a folder for the export")
    if out.is_dir() and any(out.iterdir()):  # a labelled dataset, corrected by hand, must never be replaced
        raise StreamerError(f"{out} exists and is not empty: name a new folder for the export")
    if fmt not in ("coco", "yolo", *TRACK_FORMATS):
        raise StreamerError(f"unknown export format '{fmt}': coco, yolo, {', '.join(TRACK_FORMATS)}")
    if fmt == "label-studio" and media_url is None:
        media_url = f"{LABEL_STUDIO_FILES}{out.name}/videos/"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        _forget_dead_partials(out)
        building = out.with_name(f".{out.name}.{os.getpid()}.partial")
        shutil.rmtree(building, ignore_errors=True)
        building.mkdir()
    except OSError as exc:
        raise cannot_write("export", out, exc) from None
    try:
        counts = _write(Path(run_or_db), fmt, building, media_url)
        os.replace(building, out)
    except OSError as exc:
        raise cannot_write("export", out, exc) from None
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return counts


def _forget_dead_partials(out: Path) -> None:
    """What an export of `out` killed mid-way (SIGKILL, a power cut) left beside it: removed, unless the process
    that builds it still runs."""
    for partial in out.parent.glob(f".{glob.escape(out.name)}.*.partial"):
        pid = partial.name[len(out.name) + 2:-len(".partial")]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(partial, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # there, but not ours
        return True
    return True


def _write(run_or_db: Path, fmt: str, out: Path, media_url: str | None) -> tuple[int, int]:
    if fmt in TRACK_FORMATS:
        return export_tracks(run_or_db, fmt, out, media_url)
    dataset, track_ids = build_dataset(find_store(run_or_db))
    if fmt == "coco":
        _write_coco(dataset, track_ids, out)
    else:
        _write_yolo(dataset, track_ids, out)
    return len(dataset), sum(len(d) for _, _, d in dataset)


COCO_ANNOTATIONS = Path("annotations") / "instances_default.json"  # the layout CVAT exports and Datumaro imports
COCO_IMAGES = Path("images") / "default"
YOLO_SUBSET = "train"


def _write_coco(dataset: sv.DetectionDataset, track_ids: dict[str, list[int]], out: Path) -> None:
    """supervision writes the images and each image's boxes in their order; each box then gets its track id
    (`attributes.track_id`, as CVAT keeps an attribute)."""
    annotations = out / COCO_ANNOTATIONS
    annotations.parent.mkdir(parents=True)
    dataset.as_coco(images_directory_path=str(out / COCO_IMAGES), annotations_path=str(annotations))
    coco = json.loads(annotations.read_text())
    by_file = {Path(image).name: track_ids[image] for image in dataset.image_paths}
    names = {entry["id"]: entry["file_name"] for entry in coco["images"]}
    seen: dict[int, int] = {}
    for annotation in coco["annotations"]:
        image_id = annotation["image_id"]
        n = seen.get(image_id, 0)
        seen[image_id] = n + 1
        annotation.setdefault("attributes", {})["track_id"] = by_file[Path(names[image_id]).name][n]
    write_text(annotations, json.dumps(coco))


def _write_yolo(dataset: sv.DetectionDataset, track_ids: dict[str, list[int]], out: Path) -> None:
    """Ultralytics' layout: `images/train/`, `labels/train/` (a label is found from its image's path) and a
    `data.yaml` naming both subsets; every keyframe is in `train`, and `val` names the same images until the
    user moves some aside. Track ids in `track_ids/train/<image>.txt`, one per label line."""
    images, labels = out / "images" / YOLO_SUBSET, out / "labels" / YOLO_SUBSET
    dataset.as_yolo(images_directory_path=str(images), annotations_directory_path=str(labels))
    names = "".join(f"  {i}: {json.dumps(name)}\n" for i, name in enumerate(dataset.classes))
    write_text(out / "data.yaml",
                "# written by streamer export: every keyframe is in train; val names the same images until some\n"
                "# are moved to images/val and labels/val. Paths are relative to this file's folder.\n"
                f"train: images/{YOLO_SUBSET}\nval: images/{YOLO_SUBSET}\nnc: {len(dataset.classes)}\nnames:\n{names}")
    for image, ids in track_ids.items():
        write_text(out / "track_ids" / YOLO_SUBSET / f"{Path(image).stem}.txt", "".join(f"{t}\n" for t in ids))
