"""What streamer's pipeline costs on top of decoding (and transcoding) the video itself.

In one run, alternating, on a generated 1280x720 H.264 clip (30 s at 30 fps by default):
  (a) a plain PyAV decode loop (threaded decoding, each frame converted to a BGR array: what any consumer needs),
  (b) streamer's pipeline with a no-op model (bench-only stand-in), no video output,
  (c) a plain PyAV decode + encode loop with the pipeline's encoder settings (libx264, preset, CRF, threads),
  (d) the pipeline with annotated video output,
  (e) as (b), but with a box tracked on every frame (the stand-in's sweeping box, followed by optical flow between
      keyframes) and the tracks file written: what per-frame motion costs.
Prints frames/s for each (median of --runs) and the ratios b/a, d/c and e/a; the last line is
`decode_fps=A pipeline_fps=B ratio_b_a=R1 transcode_fps=C pipeline_video_fps=D ratio_d_c=R2 ... ratio_e_a=R3`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from clipgen import make_clip  # noqa: E402
from standins import MovingBoxDetector, NoOpDetector  # noqa: E402

from streamer.config import Config  # noqa: E402
from streamer.pipeline.local import Pipeline  # noqa: E402


def decode(clip: Path) -> int:
    n = 0
    with av.open(str(clip)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            frame.to_ndarray(format="bgr24")
            n += 1
    return n


def transcode(clip: Path, out: Path, config: Config) -> int:
    n = 0
    with av.open(str(clip)) as src, av.open(str(out), "w") as dst:
        in_stream = src.streams.video[0]
        in_stream.thread_type = "AUTO"
        stream = dst.add_stream(config.output.codec, rate=in_stream.average_rate)
        stream.width, stream.height, stream.pix_fmt = in_stream.width, in_stream.height, "yuv420p"
        stream.options = {"preset": config.output.preset, "crf": str(config.output.crf)}
        stream.codec_context.thread_type = "AUTO"
        stream.time_base = Fraction(1) / in_stream.average_rate
        for frame in src.decode(in_stream):
            image = frame.to_ndarray(format="bgr24")
            out_frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            out_frame.pts = n
            dst.mux(stream.encode(out_frame))
            n += 1
        dst.mux(stream.encode(None))
    return n


def pipeline(clip: Path, tmp: Path, config: Config, video: bool, tracked: bool = False) -> int:
    model, tracks = (MovingBoxDetector, tmp / "p.tracks.jsonl") if tracked else (NoOpDetector, None)
    stats = Pipeline(config, model).run(str(clip), tmp / "p.mp4" if video else None, tmp / "p.jsonl",
                                        tracks_path=tracks)
    return stats.frames


def fps(fn) -> float:
    started = time.perf_counter()
    frames = fn()
    return frames / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--config", type=Path, help="streamer config (default: the defaults)")
    args = parser.parse_args()
    from streamer.config import load_config

    config = load_config(args.config)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        clip = make_clip(tmp / "clip.mp4", 1280, 720, args.fps, args.seconds)
        print(f"clip: 1280x720 {args.fps} fps {args.seconds:.0f} s H.264; encoder {config.output.codec} "
              f"preset={config.output.preset} crf={config.output.crf}", flush=True)
        results: dict[str, list[float]] = {k: [] for k in "abcde"}
        for run in range(args.runs):
            results["a"].append(fps(lambda: decode(clip)))
            results["b"].append(fps(lambda: pipeline(clip, tmp, config, video=False)))
            results["c"].append(fps(lambda: transcode(clip, tmp / "t.mp4", config)))
            results["d"].append(fps(lambda: pipeline(clip, tmp, config, video=True)))
            results["e"].append(fps(lambda: pipeline(clip, tmp, config, video=False, tracked=True)))
            print(f"run {run + 1}: " + "  ".join(f"{k}={v[-1]:.1f}" for k, v in results.items()), flush=True)
    a, b, c, d, e = (statistics.median(results[k]) for k in "abcde")
    print(f"(a) decode              {a:8.1f} fps")
    print(f"(b) pipeline, no video  {b:8.1f} fps   b/a = {b / a:.3f}  (target >= 0.9)")
    print(f"(c) decode + encode     {c:8.1f} fps")
    print(f"(d) pipeline + video    {d:8.1f} fps   d/c = {d / c:.3f}  (target >= 0.8)")
    print(f"(e) as (b), one tracked box {e:8.1f} fps   e/a = {e / a:.3f}  (target >= 0.9)")
    print(f"decode_fps={a:.1f} pipeline_fps={b:.1f} ratio_b_a={b / a:.3f} "
          f"transcode_fps={c:.1f} pipeline_video_fps={d:.1f} ratio_d_c={d / c:.3f} "
          f"tracked_fps={e:.1f} ratio_e_a={e / a:.3f}")


if __name__ == "__main__":
    main()
