"""Fine-tuning speed of the full-size Florence-2 architectures: training images/s and peak memory.

The architecture is built from bench/configs (random weights, no download) and saved with a locally made
processor, like bench/model_throughput.py; a generated dataset (COCO, a few boxes per 1280x720 image) goes
through streamer's own `Trainer` (the code `streamer finetune` runs): a warm-up step, then --steps timed
optimiser steps at --batch images, vision tower frozen (the default) and, with --full, trained too. Peak memory
is the process's resident set on CPU, torch's peak allocation on CUDA.

    python bench/finetune_speed.py                 # CPU here: base, batch 2, 3 steps
    python bench/finetune_speed.py --batch 8 16    # a GPU (bf16)

The last line: `model=base device=... images_per_s=X peak_mem_gib=Y` for the first batch size.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from model_throughput import build, device_name  # noqa: E402

from streamer.annotation.dataset import load_dataset  # noqa: E402
from streamer.annotation.finetune import Trainer  # noqa: E402
from streamer.config import Config  # noqa: E402


def make_dataset(folder: Path, n: int) -> Path:
    rng = np.random.default_rng(0)
    (folder / "images").mkdir(parents=True)
    images, annotations = [], []
    for i in range(n):
        name = f"{i:04d}.jpg"
        cv2.imwrite(str(folder / "images" / name), rng.integers(0, 255, (720, 1280, 3), dtype=np.uint8))
        images.append({"id": i + 1, "file_name": name, "width": 1280, "height": 720})
        for _ in range(3):
            x, y = rng.uniform(0, 1000), rng.uniform(0, 500)
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": 1,
                                "bbox": [x, y, 200, 150], "area": 30000, "iscrowd": 0})
    coco = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "car"}]}
    (folder / "annotations.json").write_text(json.dumps(coco))
    return folder


def peak_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="base", choices=["base", "large"])
    parser.add_argument("--batch", type=int, nargs="+", default=[2])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--full", action="store_true", help="train the vision tower too")
    args = parser.parse_args()
    figures = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        model = build(args.model, tmp / "model")
        dataset = load_dataset(make_dataset(tmp / "data", max(args.batch) * (args.steps + 1)))
        for batch in args.batch:
            config = Config.model_validate({"model": {"path": str(model)}, "finetune": {
                "batch_size": batch, "val_share": 0, "freeze_vision": not args.full}})
            trainer = Trainer(config, dataset, tmp / f"out{batch}")
            device = trainer.device
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            trainer.model.train()
            times = []
            for step in range(args.steps + 1):  # the first is a warm-up
                samples = dataset.samples[step * batch : (step + 1) * batch]
                if device.type == "cuda":
                    torch.cuda.synchronize()
                started = time.perf_counter()
                loss = trainer.loss([(s, "<OD>") for s in samples])
                trainer.optimizer.zero_grad()
                loss.backward()
                trainer.optimizer.step()
                if device.type == "cuda":
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - started)
            per_s = batch * args.steps / sum(times[1:])
            figures.append((batch, per_s, peak_gib(device)))
            print(f"{args.model} batch {batch:>3}: {per_s:7.2f} images/s, step {np.median(times[1:]):.2f} s, "
                  f"peak memory {figures[-1][2]:.1f} GiB ({'whole model' if args.full else 'vision frozen'}, "
                  f"{'bf16' if trainer.autocast else 'fp32'})", flush=True)
            del trainer
    batch, per_s, peak = figures[0]
    print(f"model={args.model} device={device_name(device).replace(' ', '_')} batch={batch} "
          f"images_per_s={per_s:.2f} peak_mem_gib={peak:.1f}")


if __name__ == "__main__":
    main()
