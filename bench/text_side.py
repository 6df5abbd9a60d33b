"""Where a CPU keyframe's time goes on the full-size Florence-2-base (random weights, `<OD>`, 64 tokens forced),
each backend in turn in one run: the vision tower, the text encoder, and the decoder token by token; for torch,
the decoder's weights read per token and its top operators in torch's profiler. A decoder bound by reading its
weights for every token goes as fast as the bytes it reads: int8 weights are what cut them.

    python bench/text_side.py [--backends torch torch-int8 openvino openvino-int8]
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import model_throughput as mt  # noqa: E402
from streamer.config import ModelConfig  # noqa: E402
from streamer.model.florence import Florence2Detector  # noqa: E402
from streamer.records import Keyframe  # noqa: E402

TOKENS = 64


def split(detector: Florence2Detector, keyframes: list[Keyframe]) -> tuple[float, float, float]:
    """Seconds for (vision tower, text encoder, decoder) of one keyframe, the second of two rounds."""
    with torch.inference_mode():
        for _ in range(2):
            detector.forget_images()
            started = time.perf_counter()
            detector.image_features(keyframes)
            vision = time.perf_counter() - started
            started = time.perf_counter()
            encoded = detector.encoded(keyframes)  # the image's features are cached: the text encoder alone
            encoder = time.perf_counter() - started
            started = time.perf_counter()
            detector.model.generate(**encoded, max_new_tokens=TOKENS, min_new_tokens=TOKENS, do_sample=False)
            decoder = time.perf_counter() - started
    return vision, encoder, decoder


def profile_torch(detector: Florence2Detector, keyframes: list[Keyframe]) -> None:
    lm_head = detector.model.lm_head.weight
    decoder_layers = detector.model.model.language_model.decoder.layers
    layers = sum(p.numel() * p.element_size() for p in decoder_layers.parameters())
    print(f"torch: weights read per token: lm_head {lm_head.numel() * lm_head.element_size() / 1e6:.0f} MB, the "
          f"decoder's layers {layers / 1e6:.0f} MB (their cross-attention keys and values are computed once)")
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
        detector.model.generate(**detector.encoded(keyframes), max_new_tokens=TOKENS, min_new_tokens=TOKENS,
                                do_sample=False)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=6))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", nargs="+", default=["torch", "openvino", "openvino-int8"],
                        choices=list(mt.BACKENDS))
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = mt.build("base", Path(tmp) / "base")
        keyframes = [Keyframe(f, "<OD>") for f in mt.frames(1)]
        print(mt.device_name(torch.device("cpu")))
        for backend in args.backends:
            on = dict(mt.BACKENDS[backend])
            if "openvino_cache" in on:
                on.update(openvino_cache=Path(tmp) / "openvino-cache", device="CPU")
            detector = Florence2Detector(ModelConfig(**{"path": folder, "device": "cpu", "max_new_tokens": TOKENS,
                                                        **on}), min_new_tokens=TOKENS)
            rows.append((backend, *split(detector, keyframes)))
            vision, encoder, decoder = rows[-1][1:]
            print(f"{backend}: vision tower {vision:.2f} s, text encoder {encoder:.2f} s, decoder {decoder:.2f} s "
                  f"for {TOKENS} tokens ({1000 * decoder / TOKENS:.1f} ms a token)", flush=True)
            if backend == "torch":
                profile_torch(detector, keyframes)
            detector = None
    print(f"\n{'backend':14} {'vision s':>9} {'encoder s':>10} {'decoder s':>10} {'ms/token':>9} {'keyframe s':>11}")
    for backend, vision, encoder, decoder in rows:
        print(f"{backend:14} {vision:9.2f} {encoder:10.2f} {decoder:10.2f} {1000 * decoder / TOKENS:9.1f} "
              f"{vision + encoder + decoder:11.2f}")


if __name__ == "__main__":
    main()
