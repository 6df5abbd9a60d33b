"""Dataset export: a run's saved keyframes and their tracked boxes as a COCO or YOLO dataset.

For people annotating recorded video, and for fine-tuning Florence-2 on their own footage. The run must have
kept its keyframes (`output.save_keyframes: true`); the boxes are the confirmed tracks at each keyframe, after
`model.min_confidence`. Writing is supervision's own `DetectionDataset.as_coco` / `as_yolo`. The run folder may
have been moved since: images are found relative to the store.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import supervision as sv

from streamer.errors import StreamerError
from streamer.runfolder import find_store
from streamer.store import keyframe_boxes


def build_dataset(store: Path) -> sv.DetectionDataset:
    images, boxes = keyframe_boxes(store)
    if not images:
        raise StreamerError(f"{store} holds no saved keyframes: run with output.save_keyframes: true to export")
    missing = [image for image in images if not image.is_file()]
    if missing:
        raise StreamerError(f"keyframe image missing: {missing[0]} ({len(missing)} in all)")
    classes = sorted({label for pairs in boxes.values() for label, _ in pairs})
    index = {name: i for i, name in enumerate(classes)}
    annotations = {}
    for image in images:
        pairs = boxes.get(image, [])
        annotations[str(image)] = sv.Detections(
            xyxy=np.array([b for _, b in pairs], dtype=np.float32).reshape(-1, 4),
            class_id=np.array([index[label] for label, _ in pairs], dtype=int),
        )
    return sv.DetectionDataset(classes=classes, images=[str(image) for image in images], annotations=annotations)


def export(run_or_db: Path, fmt: str, out: Path) -> tuple[int, int]:
    """Write the dataset to `out`; return (images, boxes)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise StreamerError(f"{out} is a file: name a folder for the dataset")
    dataset = build_dataset(find_store(run_or_db))
    out.mkdir(parents=True, exist_ok=True)
    if fmt == "coco":
        dataset.as_coco(images_directory_path=str(out / "images"), annotations_path=str(out / "annotations.json"))
    elif fmt == "yolo":
        dataset.as_yolo(images_directory_path=str(out / "images"), annotations_directory_path=str(out / "labels"),
                        data_yaml_path=str(out / "data.yaml"))
    else:
        raise StreamerError(f"unknown export format '{fmt}': coco or yolo")
    return len(dataset), sum(len(d) for _, _, d in dataset)
