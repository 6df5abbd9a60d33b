"""Florence-2 keyframe throughput: streamer's worker path against the naive loop a user would write.

The full-size Florence-2-base and -large architectures are built from the config files in bench/configs (no
download) with random weights, saved with a locally made processor, and loaded back through streamer's own
loader. Every generate call is forced to write exactly --tokens tokens, so runs compare whatever the weights say.

- streamer: `Florence2Detector.detect` on batches of 1, 4, 8, 16, 32 keyframes (bf16/fp16 on CUDA, fp32 on CPU,
  greedy, SDPA, images preprocessed once), parsing and per-box confidences included; --variants compares
  generate settings: sdpa (the default), static (a preallocated KV cache), compile (torch.compile over it).
- naive: per frame, `processor(text, images)` + `generate(num_beams=3)` in fp32 + decode + parse, batch 1.

    python bench/model_throughput.py --quick                 # CPU here: base at 768 px, batches 1, 2, 4
    python bench/model_throughput.py --quick --quantize int8 # CPU, streamer's path with int8 linear layers
    python bench/model_throughput.py --quick --backends torch torch-int8 openvino openvino-int8  # side by side
    python bench/model_throughput.py --model base large      # a GPU: the full table
    bash bench/gpu_check.sh                                  # on a lent GPU, with every GPU figure (see there)

Prints a table, writes JSON (--json), and ends with the device on one line and
`best_variant=V best_batch=B keyframes_per_s=X naive_per_s=Y speedup=Z` (for the first model) on the last.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from streamer.config import ModelConfig  # noqa: E402
from streamer.model.florence import Florence2Detector  # noqa: E402
from streamer.records import Frame, Keyframe  # noqa: E402
from tests.tiny_florence import make_processor  # noqa: E402

IMAGE_SIDE = 768


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"GPU {torch.cuda.get_device_name(device)}"
    cpu = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU {cpu} ({torch.get_num_threads()} threads)"


def build(name: str, folder: Path) -> Path:
    """Random-weight Florence-2 of the named size plus a processor, saved as a checkpoint folder."""
    from transformers import Florence2Config, Florence2ForConditionalGeneration

    processor = make_processor(IMAGE_SIDE)
    tokenizer = processor.tokenizer
    spec = json.loads((ROOT / "bench" / "configs" / f"florence2-{name}.json").read_text())
    spec = {k: v for k, v in spec.items() if k not in ("model_type", "architectures")}
    spec["image_token_id"] = tokenizer.image_token_id
    torch.manual_seed(0)
    model = Florence2ForConditionalGeneration(Florence2Config(**spec)).eval()
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def frames(n: int) -> list[Frame]:
    rng = np.random.default_rng(0)
    return [Frame("bench", i, i / 25, 0.0, rng.integers(0, 255, (720, 1280, 3), dtype=np.uint8)) for i in range(n)]


def timed(fn, calls: int) -> list[float]:
    out = []
    for _ in range(calls):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        started = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        out.append(time.perf_counter() - started)
    return out


def summary(latencies: list[float], batch: int) -> dict:
    ordered = sorted(latencies)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    return {"batch": batch, "calls": len(latencies), "keyframes_per_s": batch * len(latencies) / sum(latencies),
            "latency_p50_ms": 1000 * statistics.median(ordered), "latency_p95_ms": 1000 * p95}


VARIANTS = {  # name -> (ModelConfig changes, generate kwargs)
    "sdpa": ({}, {}),  # streamer's default: SDPA attention, the dynamic KV cache
    "static": ({}, {"cache_implementation": "static"}),  # a preallocated KV cache
    "compile": ({"compile": True}, {"cache_implementation": "static"}),  # torch.compile over the static cache
}


BACKENDS = {  # name -> ModelConfig changes: what runs the model
    "torch": {},
    "torch-int8": {"quantize": "int8"},
    "openvino": {"backend": "openvino", "openvino_cache": None},
    "openvino-int8": {"backend": "openvino", "quantize": "int8", "openvino_cache": None},
}


def tokens(detector: Florence2Detector, keyframes: list[Keyframe], count: int) -> list[list[int]]:
    """The tokens `detect` generates for these keyframes, as ids."""
    with torch.inference_mode():
        return detector.model.generate(**detector.encoded(keyframes), max_new_tokens=count, min_new_tokens=count,
                                       do_sample=False).tolist()


def bench_variant(name: str, variant: str, folder: Path, pool: list[Frame], args, device: torch.device,
                  backend: str = "torch", reference: dict | None = None) -> list:
    """streamer's path with one variant's settings and one backend, a row per batch size. `reference`: the
    tokens torch fp32 generated (filled by the first such run), which OpenVINO fp32 must repeat."""
    changes, generate = VARIANTS[variant]
    on = dict(BACKENDS[backend])
    if "openvino_cache" in on:
        on["openvino_cache"] = folder.parent / "openvino-cache"
        changes = {**changes, "device": "CPU"}
    config = ModelConfig(**{"path": folder, "device": device.type, "max_new_tokens": args.tokens,
                            "batch_size": max(args.batches), "quantize": args.quantize, **on, **changes})
    started = time.perf_counter()
    fast = Florence2Detector(config, min_new_tokens=args.tokens, **generate)
    loaded_s = time.perf_counter() - started
    path = variant if backend == "torch" else f"{backend} {variant}"
    same = None
    if reference is not None and config.quantize is None:
        said = tokens(fast, [Keyframe(f, "<OD>") for f in pool[:2]], args.tokens)
        same = reference.setdefault("tokens", said) == said
        print(f"{name:6} streamer {path:8} loaded in {loaded_s:.1f} s; tokens as torch fp32's: {same}", flush=True)
    rows = []
    for batch in args.batches:
        keyframes = [Keyframe(f, "<OD>") for f in pool[:batch]]

        def run():
            fast.forget_images()  # each call sees new frames, as in a stream
            fast.detect(keyframes)

        for _ in range(2 if variant == "compile" else 1):  # warm-up (allocator, kernels, compiled graphs)
            run()
        rows.append({"variant": path, "tokens_as_torch": same, **summary(timed(run, args.calls), batch)})
        print(f"{name:6} streamer {path:8} batch {batch:3}: {rows[-1]['keyframes_per_s']:8.2f} keyframes/s  "
              f"p50 {rows[-1]['latency_p50_ms']:8.1f} ms  p95 {rows[-1]['latency_p95_ms']:8.1f} ms", flush=True)
    return rows


def bench_model(name: str, args, device: torch.device) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        folder = build(name, Path(tmp) / "model")  # beside it: the OpenVINO cache
        pool = frames(max(args.batches))
        rows, reference = [], {}
        for backend in args.backends:
            for variant in args.variants if backend == "torch" else ["sdpa"]:
                try:  # one run on a lent GPU: a variant that fails there must not take the others with it
                    rows += bench_variant(name, variant, folder, pool, args, device, backend, reference)
                except Exception as exc:  # noqa: BLE001
                    print(f"{name:6} streamer {backend} {variant} failed: {type(exc).__name__}: "
                          f"{str(exc).splitlines()[0]}", flush=True)
            if device.type == "cuda":
                torch.cuda.empty_cache()

        # The naive loop: what the model card's example does, frame by frame.
        from transformers import AutoProcessor, Florence2ForConditionalGeneration

        model = Florence2ForConditionalGeneration.from_pretrained(folder, dtype=torch.float32).to(device).eval()
        processor = AutoProcessor.from_pretrained(folder)
        image = np.ascontiguousarray(pool[0].image[..., ::-1])

        def naive():
            inputs = processor(text="<OD>", images=image, return_tensors="pt").to(device)
            generated = model.generate(**inputs, max_new_tokens=args.tokens, min_new_tokens=args.tokens, num_beams=3,
                                       do_sample=False)
            text = processor.batch_decode(generated, skip_special_tokens=False)[0]
            processor.post_process_generation(text, task="<OD>", image_size=(1280, 720))

        naive()
        naive_row = summary(timed(naive, args.naive_calls), 1)
        print(f"{name:6} naive    batch   1: {naive_row['keyframes_per_s']:8.2f} keyframes/s  "
              f"p50 {naive_row['latency_p50_ms']:8.1f} ms", flush=True)
        model = None
    if not rows:
        raise SystemExit(f"{name}: every variant failed")
    best = max(rows, key=lambda r: r["keyframes_per_s"])
    return {"model": name, "tokens": args.tokens, "streamer": rows, "naive": naive_row, "best": best,
            "speedup": best["keyframes_per_s"] / naive_row["keyframes_per_s"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", nargs="+", default=["base"], choices=["base", "large"])
    parser.add_argument("--batches", type=lambda s: [int(x) for x in s.split(",")], default=[1, 4, 8, 16, 32])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--calls", type=int, default=5, help="timed calls per batch size")
    parser.add_argument("--naive-calls", type=int, default=5)
    parser.add_argument("--variants", nargs="+", default=["sdpa"], choices=list(VARIANTS),
                        help="generate settings to compare (a GPU: sdpa static compile)")
    parser.add_argument("--quantize", choices=["int8"], help="model.quantize for the streamer path (CPU)")
    parser.add_argument("--backends", nargs="+", default=["torch"], choices=list(BACKENDS),
                        help="what runs the model, side by side (a CPU: torch torch-int8 openvino openvino-int8)")
    parser.add_argument("--quick", action="store_true", help="CPU-sized run: batches 1,2,4, two calls each")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "model_throughput.json")
    args = parser.parse_args()
    if args.quick:
        args.batches, args.calls, args.naive_calls = [1, 2, 4], 2, 2
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    results = [bench_model(name, args, device) for name in args.model]

    print()
    print(f"{'model':6} {'path':18} {'batch':>5} {'keyframes/s':>12} {'p50 ms':>9} {'p95 ms':>9}")
    for result in results:
        for row in result["streamer"]:
            path = f"streamer {row['variant']}"
            print(f"{result['model']:6} {path:18} {row['batch']:5} {row['keyframes_per_s']:12.2f} "
                  f"{row['latency_p50_ms']:9.1f} {row['latency_p95_ms']:9.1f}")
        row = result["naive"]
        print(f"{result['model']:6} {'naive':18} {1:5} {row['keyframes_per_s']:12.2f} "
              f"{row['latency_p50_ms']:9.1f} {row['latency_p95_ms']:9.1f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    name = device_name(device)
    args.json.write_text(json.dumps({"device": name, "tokens": args.tokens, "results": results}, indent=2))
    print(f"json: {args.json}")
    first = results[0]
    print(f"device: {name}")
    best = first["best"]
    print(f"best_variant={best['variant']} best_batch={best['batch']} keyframes_per_s={best['keyframes_per_s']:.2f} "
          f"naive_per_s={first['naive']['keyframes_per_s']:.2f} speedup={first['speedup']:.2f}")


if __name__ == "__main__":
    main()
