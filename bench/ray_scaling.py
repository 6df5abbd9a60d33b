"""Keyframes/s on Ray with 1 and 2 model worker actors, against the single-process pipeline, same sources.

The model is a bench-only stand-in that answers each call after a fixed latency (`--latency-ms`, one keyframe
per call by default), so the model is the bottleneck, as a GPU is in production, and the figures show how the
work spreads over workers and what Ray's actors, object store and round trips cost. Sources: `--sources` copies
of a generated 640x360 H.264 clip, every `--every` frame a keyframe, event logs only (no video).

Keyframes/s = all keyframes of all sources / the longest source's processing time (model load not counted).
The last line is `workers1_kps=A workers2_kps=B single_process_kps=C`.
"""

from __future__ import annotations

import argparse
import functools
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import standins  # noqa: E402
from clipgen import make_clip  # noqa: E402

from streamer.config import Config  # noqa: E402
from streamer.pipeline.local import Pipeline, SourceSpec  # noqa: E402


def kps(all_stats) -> float:
    return sum(s.keyframes for s in all_stats) / max(s.seconds for s in all_stats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=12.0, help="length of each source clip")
    parser.add_argument("--every", type=int, default=2, help="a keyframe every this many frames")
    parser.add_argument("--latency-ms", type=float, default=40.0, help="stand-in model time per call")
    parser.add_argument("--batch", type=int, default=1, help="model.batch_size")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray instance")
    args = parser.parse_args()

    import ray

    ray.cloudpickle.register_pickle_by_value(standins)  # the actors cannot import bench/
    ray.init(num_cpus=args.cpus, include_dashboard=False, logging_level="ERROR")
    make_detector = functools.partial(standins.MovingBoxDetector, args.latency_ms / 1000.0)
    cpus_per_source = round(0.5 * args.cpus / args.sources, 3)
    base = {"sampler": {"every_n_frames": args.every, "max_fps": None, "scene_threshold": None},
            "model": {"batch_size": args.batch, "max_wait_ms": 0.0},
            "cluster": {"cpus_per_source": cpus_per_source, "cpus_per_worker": 0.25}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clip = make_clip(tmp / "clip.mp4", 640, 360, 25, args.seconds, preset="veryfast")

        def specs(tag: str):
            return [SourceSpec(str(clip), tmp / tag / f"s{i}.jsonl", name=f"s{i}") for i in range(args.sources)]

        results = {}
        for workers in (1, 2):
            from streamer.cluster import RayPipeline

            config = Config.model_validate({**base, "cluster": {**base["cluster"], "workers": workers}})
            stats = RayPipeline(config, make_detector).run_many(specs(f"ray{workers}"))
            results[f"workers{workers}_kps"] = kps(stats)
            print(f"ray, {workers} worker(s): {sum(s.keyframes for s in stats)} keyframes, "
                  f"{results[f'workers{workers}_kps']:.1f} keyframes/s", flush=True)
        ray.shutdown()
        config = Config.model_validate(base)
        stats = Pipeline(config, make_detector).run_many(specs("single"))
        results["single_process_kps"] = kps(stats)
        print(f"single process: {sum(s.keyframes for s in stats)} keyframes, {results['single_process_kps']:.1f} "
              f"keyframes/s", flush=True)
    ceiling = 1000.0 / args.latency_ms * args.batch
    print(f"model ceiling per worker: {ceiling:.1f} keyframes/s; Ray overhead at 1 worker: "
          f"{100 * (1 - results['workers1_kps'] / results['single_process_kps']):.1f}%")
    print(" ".join(f"{k}={v:.2f}" for k, v in results.items()))


if __name__ == "__main__":
    main()
