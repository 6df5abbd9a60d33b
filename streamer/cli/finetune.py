"""`streamer finetune`: Florence-2 taught a labelled dataset, on this machine."""

from __future__ import annotations

import argparse
from pathlib import Path

from streamer.cli.common import EXIT_INTERRUPTED, model_flags, model_overrides, note
from streamer.config import load_config
from streamer.errors import Stopped


def add(sub) -> None:
    command = sub.add_parser("finetune", help="fine-tune Florence-2 on a labelled dataset")
    command.add_argument("dataset", type=Path, help="a COCO or YOLO folder, or a CVAT XML / Label Studio JSON export "
                                                  "(the file, or its folder)")
    model_flags(command)
    command.add_argument("--out", type=Path, required=True, help="folder for the fine-tuned model (new, or a "
                                                                 "run to resume)")
    command.add_argument("--epochs", type=int, help="sets finetune.epochs")


def run(args: argparse.Namespace) -> int:
    """Every input checked before the model loads; Ctrl-C saves a checkpoint the same command resumes from."""
    overrides = model_overrides(args)
    if args.epochs is not None:
        overrides["finetune.epochs"] = args.epochs
    config = load_config(args.config, overrides)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from streamer.annotation.evaluate import side_by_side
    from streamer.interrupts import held_back

    with held_back():  # torch imports with it
        from streamer.annotation.finetune import finetune

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[loss]}"),
                  transient=True) as bar:
        task = bar.add_task("fine-tuning", total=None, loss="")

        def on_step(epoch: int, step: int, steps: int, loss: float) -> None:
            bar.update(task, description=f"epoch {epoch + 1}/{config.finetune.epochs}", completed=step, total=steps,
                       loss=f"loss {loss:.4f}")

        try:
            before, after, held_out = finetune(config, args.dataset, args.out, on_step)
        except Stopped as stop:
            note(str(stop))
            return EXIT_INTERRUPTED
    print(f"streamer: fine-tuned model saved to {args.out}\n{side_by_side(before, after, held_out)}")
    return 0
