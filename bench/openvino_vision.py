"""Does OpenVINO make the slow part of a keyframe faster on this CPU? Florence-2-base's vision tower and projector
(the image features every task starts from; on a 2-core CPU most of a keyframe's time), full size with random
weights at 768x768: torch fp32 against OpenVINO fp32 (converted with `openvino.convert_model` from the loaded
module), OpenVINO int8 (NNCF post-training quantization, 4 calibration images) and OpenVINO with int8 weights
only (NNCF weight compression). A probe for `model.backend: openvino`, not the backend: OpenVINO and NNCF are
installed for it under `.cache/openvino-lib` (once), never into the project's environment.

    .venv/bin/python bench/openvino_vision.py [--runs 3]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIB = ROOT / ".cache" / "openvino-lib"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def install() -> None:
    if (LIB / ".installed").exists():
        return
    for package in ("openvino==2026.4.1", "nncf==3.4.0", "tabulate"):  # no deps: the project's numpy and torch stay
        deps = [] if package.startswith("openvino") else ["--no-deps"]
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--target", str(LIB), *deps, package], check=True)
    (LIB / ".installed").touch()


def best(call, runs: int) -> tuple[float, object]:
    call()
    times, out = [], None
    for _ in range(runs):
        started = time.perf_counter()
        out = call()
        times.append(time.perf_counter() - started)
    return min(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    install()
    sys.path.append(str(LIB))  # after the project's own numpy
    import numpy as np
    import torch
    from transformers import Florence2ForConditionalGeneration

    import model_throughput

    class Vision(torch.nn.Module):
        def __init__(self, model) -> None:
            super().__init__()
            self.model = model

        def forward(self, pixel_values):
            return self.model.get_image_features(pixel_values).pooler_output

    with tempfile.TemporaryDirectory() as tmp:
        folder = model_throughput.build("base", Path(tmp) / "base")
        vision = Vision(Florence2ForConditionalGeneration.from_pretrained(folder).eval().model).eval()
    pixels = torch.randn(1, 3, 768, 768)
    with torch.inference_mode():
        torch_s, reference = best(lambda: vision(pixels), args.runs)
    reference = reference.numpy()
    import nncf
    import openvino as ov

    started = time.perf_counter()
    converted = ov.convert_model(vision, example_input=pixels)
    convert_s = time.perf_counter() - started
    core, feed = ov.Core(), pixels.numpy()

    def timed(model) -> tuple[float, float]:
        compiled = core.compile_model(model, "CPU")
        seconds, out = best(lambda: compiled(feed)[0], args.runs)
        cosine = float((out * reference).sum() / (np.linalg.norm(out) * np.linalg.norm(reference)))
        return seconds, cosine

    rows = [("torch fp32", torch_s, 1.0), ("openvino fp32", *timed(converted))]
    calibration = nncf.Dataset([torch.randn(1, 3, 768, 768).numpy() for _ in range(4)])
    rows.append(("openvino int8", *timed(nncf.quantize(converted, calibration, subset_size=4,
                                                       model_type=nncf.ModelType.TRANSFORMER))))
    rows.append(("openvino int8 weights", *timed(nncf.compress_weights(converted))))
    print(f"\nFlorence-2-base vision tower + projector, 768x768, batch 1, {torch.get_num_threads()} threads; "
          f"converted in {convert_s:.0f} s")
    for name, seconds, cosine in rows:
        print(f"{name:24} {seconds * 1000:7.0f} ms  {torch_s / seconds:4.2f}x torch  cosine to torch {cosine:.4f}")


if __name__ == "__main__":
    main()
