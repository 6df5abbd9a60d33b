"""How well streamer tracks between sparse keyframes, scored with the `trackers` package's own evaluator.

Generated scenes (bench/scenes.py: a fast small mover, a slow large one, a crossing with partial occlusion,
stop-and-go, an exit and an entry at the same place), encoded as H.264 and decoded back; a detector answers each
keyframe from the truth with noise, misses and false positives. Every scene goes through the real per-source
run (`SourceRun`, with the frames held in memory in place of the reader thread) for keyframe intervals 5, 10 and
25 frames, as a file (frames wait for the next keyframe) and as a camera (no waiting). Scored with
`trackers.eval.evaluate_mot_sequence` (HOTA, MOTA, IDF1, ID switches, fragmentations):

  full      streamer's output on every frame (its tracks file)
  keyframes only the boxes detected on keyframes
  hold      each keyframe's boxes held still until the next
  upper     the same detector on every frame, tracked by the `trackers` package's ByteTrack at full rate

and `fast`: the share of the fast mover's frames, from the first keyframe that detects it, covered by an output
box with an id (IoU >= 0.5). The last line has the
figures the targets are set in (ratios of full to upper HOTA, summed over seeds).

    .venv/bin/python bench/track_quality.py [--seeds 0 1 2 3 4] [--intervals 5 10 25] [--flat] [--hard]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from concurrent.futures import Future
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from scenes import FPS, FRAMES, H, NoisyDetector, W, make_scene, render  # noqa: E402
from trackers import ByteTrackTracker  # noqa: E402
from trackers.eval import evaluate_mot_sequence  # noqa: E402

from streamer.config import Config  # noqa: E402
from streamer.model.worker import KeyframeModel  # noqa: E402
from streamer.outputs.sinks import tracks_rows  # noqa: E402
from streamer.pipeline.reader import FrameQueue, Reader  # noqa: E402
from streamer.pipeline.source_run import SourceRun, SourceSpec  # noqa: E402
from streamer.pipeline.tracker import _IOU  # noqa: E402
from streamer.records import Frame, StreamInfo  # noqa: E402


class HeldFrames(Reader):
    """Decoded frames from memory, as a file or as a camera."""

    def __init__(self, images: list[np.ndarray], live: bool) -> None:
        info = StreamInfo("scene", W, H, Fraction(FPS), None if live else len(images))
        super().__init__("scene", "scene", FrameQueue(4, drop_oldest=live), info=info)
        self.live, self.images = live, images
        self.state = "up" if live else "reading"

    def start(self) -> None:
        pass

    def frames(self, stop=None):
        for i, image in enumerate(self.images):
            yield Frame("scene", i, i / FPS, time.time(), image.copy())


class AnswerAtOnce(KeyframeModel):
    """A keyframe model that answers on the spot (the camera's answer arrives with its next frame)."""

    def __init__(self, detector: NoisyDetector) -> None:
        self.detector = detector

    def submit(self, keyframe) -> Future:
        future: Future = Future()
        [result] = self.detector.detect([keyframe])
        future.set_result(result)
        return future


def config(interval: int) -> Config:
    return Config.model_validate({"sampler": {"every_n_frames": interval, "max_fps": None, "scene_threshold": None},
                                  "output": {"write_video": False}})


def run_streamer(images, detector, interval: int, live: bool, folder: Path) -> list[dict]:
    spec = SourceSpec("scene", folder / "events.jsonl", tracks_path=folder / "tracks.jsonl")
    run = SourceRun(spec, config(interval), HeldFrames(images, live), AnswerAtOnce(detector))
    stats = run.run(threading.Event())
    if stats.error is not None:
        raise stats.error
    return [row for _, row in tracks_rows(spec.tracks_path)]


def write_gt(truth, path: Path) -> None:
    with path.open("w") as out:
        for f, rows in enumerate(truth):
            for gt_id, _, (x1, y1, x2, y2), visible in rows:
                out.write(f"{f + 1},{gt_id},{x1:.2f},{y1:.2f},{x2 - x1:.2f},{y2 - y1:.2f},1,1,{visible:.3f}\n")


def write_mot(rows: list[tuple[int, int, list[float], float]], path: Path) -> None:
    """(frame index, track id, xyxy, confidence) rows as a MOTChallenge results file."""
    with path.open("w") as out:
        for f, track_id, (x1, y1, x2, y2), conf in rows:
            out.write(f"{f + 1},{track_id},{x1:.2f},{y1:.2f},{x2 - x1:.2f},{y2 - y1:.2f},{conf:.3f},-1,-1,-1\n")


def variants(tracks: list[dict], interval: int) -> dict[str, list]:
    """streamer's full-rate rows, and the keyframes-only and hold-still baselines made from its keyframe rows."""
    full = [(r["frame_index"], r["track_id"], r["bbox"], r["confidence"]) for r in tracks if r["track_id"] >= 0]
    detected: dict[int, list] = {}
    for r in tracks:
        if r["track_id"] >= 0 and r["kind"] == "detected":
            detected.setdefault(r["frame_index"], []).append((r["track_id"], r["bbox"], r["confidence"]))
    keyframes = [(f, t, b, c) for f, rows in detected.items() for t, b, c in rows]
    hold, last = [], []
    for f in range(FRAMES):
        if f % interval == 0:
            last = detected.get(f, [])
        hold += [(f, t, b, c) for t, b, c in last]
    return {"full": full, "keyframes": keyframes, "hold": hold}


def upper_bound(detector: NoisyDetector) -> list:
    tracker = ByteTrackTracker(frame_rate=FPS)
    rows = []
    for f in range(FRAMES):
        det = tracker.update(detector.answer(f))
        for i in range(len(det)):
            if det.tracker_id[i] >= 0:
                rows.append((f, int(det.tracker_id[i]), det.xyxy[i].tolist(), float(det.confidence[i])))
    return rows


def score(gt: Path, rows: list, path: Path) -> dict[str, float]:
    write_mot(rows, path)
    result = evaluate_mot_sequence(gt, path, metrics=["CLEAR", "HOTA", "Identity"])
    return {"HOTA": float(result.HOTA.HOTA), "MOTA": float(result.CLEAR.MOTA), "IDF1": float(result.Identity.IDF1),
            "IDSW": int(result.CLEAR.IDSW), "Frag": int(result.CLEAR.Frag)}


def coverage(truth, rows: list, gt_id: int, detector: NoisyDetector, interval: int) -> float:
    """The share of an object's frames, from the first keyframe that detects it (no tracker can know it before),
    on which some output box with an id overlaps it with IoU >= 0.5."""
    by_frame: dict[int, list] = {}
    for f, _, box, _ in rows:
        by_frame.setdefault(f, []).append(box)
    first = next((f for f in range(0, FRAMES, interval) for gid, _, box, _ in truth[f] if gid == gt_id
                  and len(d := detector.answer(f)) and _IOU.compute(np.array([box]), d.xyxy).max() >= 0.5), FRAMES)
    frames = hit = 0
    for f, objects in enumerate(truth):
        for gid, _, box, _ in objects:
            if gid != gt_id or f < first:
                continue
            frames += 1
            boxes = by_frame.get(f)
            if boxes and _IOU.compute(np.array([box]), np.array(boxes)).max() >= 0.5:
                hit += 1
    return hit / max(frames, 1)


def decode(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="bgr24") for frame in container.decode(video=0)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--intervals", type=int, nargs="+", default=[5, 10, 25])
    parser.add_argument("--flat", action="store_true", help="objects of one colour, without texture")
    parser.add_argument("--hard", action="store_true", help="25 objects (10 under 30 px, a group abreast, crossings), "
                        "a shaking camera (3 px) and a detector that finds 80%% of what is there")
    args = parser.parse_args()
    totals: dict[tuple, list[float]] = {}
    switches: dict[tuple, list[int]] = {}
    fast: dict[tuple, list[float]] = {}
    print(f"{'seed':>4} {'mode':<6} {'int':>3} {'output':<10} {'HOTA':>6} {'MOTA':>7} {'IDF1':>6} {'IDSW':>5} "
          f"{'Frag':>5} {'fast':>5}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for seed in args.seeds:
            actors = make_scene(seed, flat=args.flat, hard=args.hard)
            clip, truth = render(actors, tmp / f"scene{seed}.mp4", seed, shake=3.0 if args.hard else 0.0)
            images = decode(clip)
            gt = tmp / f"gt{seed}.txt"
            write_gt(truth, gt)
            detector = NoisyDetector(truth, seed, miss=0.2 if args.hard else 0.08)
            upper_rows = upper_bound(detector)
            upper = score(gt, upper_rows, tmp / "upper.txt")
            cover = coverage(truth, upper_rows, 1, detector, 1)
            print(f"{seed:>4} {'-':<6} {1:>3} {'upper':<10} {upper['HOTA']:6.3f} {upper['MOTA']:7.3f} "
                  f"{upper['IDF1']:6.3f} {upper['IDSW']:5d} {upper['Frag']:5d} {cover:5.2f}")
            for live in (False, True):
                mode = "camera" if live else "file"
                for interval in args.intervals:
                    folder = tmp / f"{seed}-{mode}-{interval}"
                    folder.mkdir()
                    outputs = variants(run_streamer(images, detector, interval, live, folder), interval)
                    if live:  # a camera's keyframes are drawn before their answer: the baselines are the file's
                        outputs = {"full": outputs["full"]}
                    for name, rows in outputs.items():
                        s = score(gt, rows, folder / f"{name}.txt")
                        cover = coverage(truth, rows, 1, detector, interval)
                        print(f"{seed:>4} {mode:<6} {interval:>3} {name:<10} {s['HOTA']:6.3f} {s['MOTA']:7.3f} "
                              f"{s['IDF1']:6.3f} {s['IDSW']:5d} {s['Frag']:5d} {cover:5.2f}", flush=True)
                        if name == "full":
                            key = (mode, interval)
                            totals.setdefault(key, []).append(s["HOTA"] / upper["HOTA"])
                            switches.setdefault(key, []).append(s["IDSW"] - upper["IDSW"])
                            fast.setdefault(key, []).append(cover)
    print()
    for key in sorted(totals):
        print(f"{key[0]:<6} one keyframe in {key[1]:>2}: full/upper HOTA {np.mean(totals[key]):.3f} "
              f"(min {min(totals[key]):.3f}), ID switches over upper {max(switches[key]):+d} at most, "
              f"fast mover covered {min(fast[key]):.2f} at least")
    print(" ".join(f"{m}_{i}_hota_ratio={np.mean(v):.3f}" for (m, i), v in sorted(totals.items()))
          + " " + " ".join(f"{m}_{i}_fast={min(v):.2f}" for (m, i), v in sorted(fast.items())))


if __name__ == "__main__":
    main()
