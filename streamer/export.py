"""Export: a run's saved keyframes and their tracked boxes as a COCO or YOLO dataset, or its tracks of every frame
as MOTChallenge files.

For people annotating recorded video, for fine-tuning Florence-2 on their own footage, and for scoring tracking
with standard evaluators. A dataset needs the run to have kept its keyframes (`output.save_keyframes: true`);
its boxes are the confirmed tracks at each keyframe, after `model.min_confidence`, and keep their track ids
(COCO: `attributes.track_id` of each annotation, as CVAT reads it; YOLO: `track_ids/<image>.txt`, one id per
line of its label file). Writing is supervision's own `DetectionDataset.as_coco` / `as_yolo`. MOT export reads
the run's tracks file(s) (`tracks.jsonl`) and writes one `<source>.txt` per source:
`frame,id,x,y,w,h,conf,-1,-1,-1` with frames counted from 1. The run folder may have been moved since: images
are found relative to the store.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import supervision as sv

from streamer.errors import StreamerError, cannot_write
from streamer.runfolder import find_store
from streamer.sinks import tracks_rows
from streamer.sources import safe_name
from streamer.store import keyframe_boxes


def build_dataset(store: Path) -> tuple[sv.DetectionDataset, dict[str, list[int]]]:
    """The dataset, and the track id of each box of each image (in the order of its detections)."""
    images, boxes = keyframe_boxes(store)
    if not images:
        raise StreamerError(f"{store} holds no saved keyframes: run with output.save_keyframes: true to export")
    missing = [image for image in images if not image.is_file()]
    if missing:
        raise StreamerError(f"keyframe image missing: {missing[0]} ({len(missing)} in all)")
    classes = sorted({label for rows in boxes.values() for label, _, _ in rows})
    index = {name: i for i, name in enumerate(classes)}
    annotations, track_ids = {}, {}
    for image in images:
        rows = boxes.get(image, [])
        annotations[str(image)] = sv.Detections(
            xyxy=np.array([b for _, b, _ in rows], dtype=np.float32).reshape(-1, 4),
            class_id=np.array([index[label] for label, _, _ in rows], dtype=int),
        )
        track_ids[str(image)] = [t for _, _, t in rows]
    dataset = sv.DetectionDataset(classes=classes, images=[str(image) for image in images], annotations=annotations)
    return dataset, track_ids


def export(run_or_db: Path, fmt: str, out: Path) -> tuple[int, int]:
    """Write the dataset (or MOT files) to `out`; return (images or sources, boxes)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise StreamerError(f"{out} is a file: name a folder for the export")
    if out.is_dir() and any(out.iterdir()):  # a labelled dataset, corrected by hand, must never be replaced
        raise StreamerError(f"{out} exists and is not empty: name a new folder for the export")
    if fmt == "mot":
        return export_mot(Path(run_or_db), out)
    if fmt not in ("coco", "yolo"):
        raise StreamerError(f"unknown export format '{fmt}': coco, yolo or mot")
    dataset, track_ids = build_dataset(find_store(run_or_db))
    out.mkdir(parents=True, exist_ok=True)
    if fmt == "coco":
        annotations = out / "annotations.json"
        dataset.as_coco(images_directory_path=str(out / "images"), annotations_path=str(annotations))
        _coco_track_ids(annotations, dataset, track_ids)
    else:
        dataset.as_yolo(images_directory_path=str(out / "images"), annotations_directory_path=str(out / "labels"),
                        data_yaml_path=str(out / "data.yaml"))
        for image, ids in track_ids.items():
            _write_text(out / "track_ids" / f"{Path(image).stem}.txt", "".join(f"{t}\n" for t in ids))
    return len(dataset), sum(len(d) for _, _, d in dataset)


def _coco_track_ids(path: Path, dataset: sv.DetectionDataset, track_ids: dict[str, list[int]]) -> None:
    """supervision writes each image's boxes in their order; give each its track id."""
    coco = json.loads(path.read_text())
    by_file = {Path(image).name: track_ids[image] for image in dataset.image_paths}
    names = {entry["id"]: entry["file_name"] for entry in coco["images"]}
    seen: dict[int, int] = {}
    for annotation in coco["annotations"]:
        image_id = annotation["image_id"]
        n = seen.get(image_id, 0)
        seen[image_id] = n + 1
        annotation.setdefault("attributes", {})["track_id"] = by_file[Path(names[image_id]).name][n]
    _write_text(path, json.dumps(coco))


def tracks_files(run: Path) -> list[Path]:
    if run.is_file():
        return [run]
    # a run's tracks file, or a recorded camera's, beside each of its segments
    found = sorted(run.glob("*tracks.jsonl")) + sorted(run.glob("recordings/*/*/*.tracks.jsonl.gz")) if run.is_dir() else []
    if not found:
        raise StreamerError(f"{run} holds no tracks file (tracks.jsonl): runs write one unless "
                            "output.write_tracks is false")
    return found


def export_mot(run: Path, out: Path) -> tuple[int, int]:
    """One MOTChallenge results file per source of the run's tracks files; confirmed tracks only."""
    rows: dict[str, list[str]] = {}
    for path in tracks_files(run):
        for number, r in tracks_rows(path):
            try:
                if r["track_id"] < 0:
                    continue
                x1, y1, x2, y2 = r["bbox"]
                text = (f"{r['frame_index'] + 1},{r['track_id']},{x1:.2f},{y1:.2f},{x2 - x1:.2f},{y2 - y1:.2f},"
                        f"{r['confidence']:.4f},-1,-1,-1\n")
            except (ValueError, KeyError, TypeError):
                raise StreamerError(f"{path}:{number} is not a line of a tracks file") from None
            rows.setdefault(r["source"], []).append(text)
    for source, lines in rows.items():
        _write_text(out / f"{safe_name(source)}.txt", "".join(lines))
    return len(rows), sum(len(lines) for lines in rows.values())


def _write_text(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise cannot_write("export", path, exc) from None
