"""What the commands share: exit statuses, the model's flags, argparse types, notes on stderr."""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
from pathlib import Path

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130


def model_flags(parser: argparse.ArgumentParser) -> None:
    """The flags of every command that loads the model, the same everywhere."""
    parser.add_argument("--config", type=Path, help="YAML config (see configs/default.yaml)")
    parser.add_argument("--model", help="hub id or local Florence-2 folder (sets model.id or model.path)")
    parser.add_argument("--device", metavar="DEVICE",  # checked by the config, as model.device in a file is
                        help="where the model runs: auto, cpu or cuda; with --backend openvino CPU, GPU (GPU.1 ...), "
                             "NPU or AUTO (sets model.device)")
    parser.add_argument("--backend", choices=["torch", "openvino"],
                        help="what runs the model (sets model.backend; openvino: the vision tower on OpenVINO)")


def model_overrides(args: argparse.Namespace) -> dict:
    out = {"model.device": args.device, "model.backend": args.backend}
    if args.model:
        out["model.path" if looks_like_folder(args.model) else "model.id"] = args.model
    return out


def _seconds_in(fits, wanted: str):
    """An argparse type: a finite number of seconds that `fits`, else one line saying what was `wanted`."""
    def parse(value: str) -> float:
        try:
            seconds = float(value)
        except ValueError:
            seconds = math.nan
        if not math.isfinite(seconds) or not fits(seconds):
            raise argparse.ArgumentTypeError(f"expected a number of seconds {wanted}, got '{value}'")
        return seconds
    return parse


seconds = _seconds_in(lambda s: s > 0, "above 0")
seconds_or_zero = _seconds_in(lambda s: 0 <= s <= 3600, "from 0 to 3600")


def looks_like_folder(value: str) -> bool:
    return Path(value).expanduser().exists() or value.startswith((".", "/", "~")) or os.sep * 2 in value


def named(value: str) -> tuple[str | None, str]:
    """`cam1=rtsp://...` -> ("cam1", "rtsp://..."); a plain path or URL has no name."""
    name, sep, url = value.partition("=")
    if sep and re.fullmatch(r"[A-Za-z0-9._-]+", name) and ("://" in url or Path(url).suffix):
        return name, url
    return None, value


def note(line: str) -> None:
    print(f"streamer: {line}", file=sys.stderr, flush=True)
