"""Where a CPU keyframe's time goes on the full-size Florence-2-base (random weights, `<OD>`, 64 tokens forced):
the vision tower, the text encoder, and the decoder token by token, with the decoder's top operators from
torch's profiler. It tells whether converting the decoder (with its KV cache) to OpenVINO could pay: a decoder
bound by reading its weights for every token reads as many bytes in OpenVINO as in torch.

    python bench/text_side.py
"""

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


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = mt.build("base", Path(tmp) / "base")
        detector = Florence2Detector(ModelConfig(path=folder, device="cpu", max_new_tokens=TOKENS),
                                     min_new_tokens=TOKENS)
        keyframes = [Keyframe(f, "<OD>") for f in mt.frames(1)]
        print(mt.device_name(torch.device("cpu")))
        with torch.inference_mode():
            for round in ("warm-up", "measured"):
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
                print(f"{round}: vision tower {vision:.2f} s, text encoder {encoder:.2f} s, decoder {decoder:.2f} s "
                      f"for {TOKENS} tokens ({1000 * decoder / TOKENS:.1f} ms a token)")
            lm_head = detector.model.lm_head.weight
            decoder_layers = detector.model.model.language_model.decoder.layers
            layers = sum(p.numel() * p.element_size() for p in decoder_layers.parameters())
            print(f"weights read per token: lm_head {lm_head.numel() * lm_head.element_size() / 1e6:.0f} MB, the "
                  f"decoder's layers {layers / 1e6:.0f} MB (their cross-attention keys and values are computed once)")
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CPU]) as prof:
                detector.model.generate(**encoded, max_new_tokens=TOKENS, min_new_tokens=TOKENS, do_sample=False)
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=6))


if __name__ == "__main__":
    main()
