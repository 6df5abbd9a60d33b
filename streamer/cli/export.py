"""`streamer export`: a run as a dataset (COCO, YOLO) or as tracks (MOT, CVAT, Label Studio)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add(sub) -> None:
    command = sub.add_parser("export", help="write a run's keyframes and boxes as a COCO or YOLO dataset, or its "
                                            "tracks on video for CVAT, Label Studio or MOT evaluators")
    command.add_argument("run", type=Path, help="run folder, or its events.db (mot: or a tracks file)")
    command.add_argument("--format", choices=["coco", "yolo", "mot", "cvat", "label-studio"], required=True,
                         help="coco, yolo: the kept keyframes; mot: tracks of every frame (CVAT's MOT 1.1); cvat: "
                              "CVAT for video 1.1 XML; label-studio: video tasks with track predictions")
    command.add_argument("--media-url", metavar="PREFIX",
                         help="label-studio: URL the tasks' videos are under (default: Label Studio's local files, "
                              "/data/local-files/?d=OUT_NAME/videos/)")
    command.add_argument("out", type=Path, help="folder to write (new or empty)")


def run(args: argparse.Namespace) -> int:
    from streamer.annotation.export import export

    images, boxes = export(args.run, args.format, args.out, args.media_url)
    what = {"mot": "sources", "cvat": "videos", "label-studio": "videos"}.get(args.format, "keyframes")
    print(f"streamer: wrote {images} {what} with {boxes} boxes as {args.format} to {args.out}")
    return 0
