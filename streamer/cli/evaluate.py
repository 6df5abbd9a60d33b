"""`streamer evaluate`: a model scored on a labelled dataset (mAP, precision and recall, text)."""

from __future__ import annotations

import argparse
from pathlib import Path

from streamer.cli.common import model_flags, model_overrides
from streamer.config import load_config
from streamer.model.worker import load_detector


def add(sub) -> None:
    command = sub.add_parser("evaluate", help="score a Florence-2 on a labelled dataset (mAP, P/R)")
    command.add_argument("dataset", type=Path, help="a COCO or YOLO folder, or a CVAT XML / Label Studio JSON export "
                                                  "(the file, or its folder)")
    model_flags(command)
    command.add_argument("--task", default="<OD>", choices=["<OD>"],
                         help="boxes are scored with <OD>; text, where the dataset has any, with <OCR_WITH_REGION>")
    command.add_argument("--format", choices=["table", "json"], default="table",
                         help="a table for people (default) or JSON for programs")


def run(args: argparse.Namespace) -> int:
    """Every input checked before the model loads."""
    from streamer.annotation.dataset import load_dataset
    from streamer.annotation.evaluate import evaluate, render

    config = load_config(args.config, model_overrides(args))
    dataset = load_dataset(args.dataset)
    print(render(evaluate(load_detector(config.model), dataset, config.model.batch_size), args.format))
    return 0
