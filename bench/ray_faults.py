"""A Ray cluster that loses a node mid-run: no hang, outputs whole where they can be, and a report that says so.

Two nodes on this machine (`ray.cluster_utils.Cluster`: a head and a second node, each its own raylet), two file
sources (the bundled clip four times over, 600 frames each) and two model workers, a CPU each, so Ray places
actors on both nodes. When the first source passes frame 100 the second node is removed (its raylet and every
worker process on it killed), in two shapes:

- head with room: the head has CPUs to spare, so what the lost node ran is restarted there; every source
  should end whole, its log equal to a run in one process, its store without a duplicate row;
- head full: the head's CPUs are all taken, so what the lost node ran stays RESTARTING; a source whose worker
  was there should move to the surviving worker after `cluster.restart_timeout_s` (here 10 s), a source that
  was there should end as lost; either way the run ends and reports every source;
- node back: the head full again, and a node like the lost one joins 40 s after the loss (within
  `cluster.restart_timeout_s`, here 90 s): what was RESTARTING is placed there and every source ends whole;
- stop while stuck: the head full, `restart_timeout_s` 90 s, and the run stopped (as Ctrl-C does) 3 s after the
  loss: it should end within seconds, not wait for what is RESTARTING.

Prints, per shape: where each actor ran, how long the run took after the loss, each source's frames, events and
whether its log and store are whole, and how the run ended. Not part of the test suite.

    python bench/ray_faults.py [room] [full] [back] [stop]    (all when none is named)
"""

from __future__ import annotations

import json
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from streamer.config import Config  # noqa: E402
from streamer.pipeline.local import Pipeline, SourceSpec  # noqa: E402
from tests.tiny_florence import build_tiny_florence  # noqa: E402
from tests.helpers import OD_ANSWER, clip_times  # noqa: E402


def events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def plain(rows: list[dict]) -> list[tuple]:
    """What the video showed, without the cluster's own news (worker_restarted, worker_lost)."""
    return [(e["type"], e["frame_index"], e.get("track_id"), e.get("label")) for e in rows
            if not e["type"].startswith("worker_")]


def shape(name: str, head_cpus: int, node_cpus: int, clip: Path, model: Path, reference: list[tuple],
          restart_timeout_s: float = 10, back_after_s: float | None = None, stop_after_s: float | None = None) -> None:
    import ray
    from ray.cluster_utils import Cluster

    from streamer.cluster import RayPipeline

    work = Path(tempfile.mkdtemp(prefix=f"ray-faults-{name}-"))
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": head_cpus})
    second = cluster.add_node(num_cpus=node_cpus)
    cluster.wait_for_nodes()
    config = Config.model_validate({
        "model": {"path": str(model)}, "sampler": {"every_n_frames": 2, "max_fps": None, "scene_threshold": None},
        "output": {"dir": str(work / "runs")},
        "cluster": {"address": cluster.address, "workers": 2, "cpus_per_source": 1, "cpus_per_worker": 1,
                    "max_restarts": 3, "restart_timeout_s": restart_timeout_s}})
    specs = [SourceSpec(str(clip), work / f"{s}.jsonl", None, name=s, db_path=work / f"{s}.db") for s in "ab"]
    pipeline = RayPipeline(config, notify=lambda line: print(f"  {line}", flush=True))
    result: dict = {}

    def run() -> None:
        try:
            result["stats"] = pipeline.run_many(specs)
        except Exception as exc:  # noqa: BLE001 - the report is the point
            result["error"] = exc

    print(f"{name}: head {head_cpus} CPUs, second node {node_cpus} CPUs", flush=True)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and not (pipeline.runs and pipeline.runs[0].stats().frames >= 100):
        time.sleep(0.2)
    lost_at = time.monotonic()
    cluster.remove_node(second)
    print(f"  second node removed at frame {pipeline.runs[0].stats().frames} of source a", flush=True)
    if stop_after_s is not None:
        thread.join(timeout=stop_after_s)
        pipeline.stop()
        print(f"  stopped {time.monotonic() - lost_at:.0f} s after the loss", flush=True)
    if back_after_s is not None:
        thread.join(timeout=back_after_s)
        cluster.add_node(num_cpus=node_cpus)
        print(f"  a new node joined {time.monotonic() - lost_at:.0f} s after the loss"
              + (" (the run had ended)" if not thread.is_alive() else ""), flush=True)
    thread.join(timeout=240)
    took = time.monotonic() - lost_at
    if thread.is_alive():
        print(f"  HANG: the run had not ended {took:.0f} s after the loss", flush=True)
    else:
        stats = getattr(result.get("error"), "results", None) or result.get("stats") or []
        for st in stats:
            log = events(work / f"{st.source}.jsonl")
            with sqlite3.connect(work / f"{st.source}.db") as db:
                rows = db.execute("SELECT count(*) FROM events").fetchone()[0]
            whole = plain(log) == reference and rows == len(log)
            news = sorted({e["type"] for e in log if e["type"].startswith("worker_")})
            print(f"  {st.source}: frames {st.frames}, events {len(log)} {news or ''}, store rows {rows}, "
                  f"{'whole (as one process)' if whole else 'not whole'}"
                  + (f"; {st.error}" if st.error is not None else ""), flush=True)
        print(f"  ended {took:.1f} s after the loss: "
              + (f"error: {result['error']}" if "error" in result else "every source whole"), flush=True)
    ray.shutdown()
    cluster.shutdown()


def main(names: list[str]) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="ray-faults-"))
    clip = clip_times(tmp / "long.mp4", 4)
    model = build_tiny_florence(tmp / "tiny", OD_ANSWER)
    config = Config.model_validate({"model": {"path": str(model)},
                                    "sampler": {"every_n_frames": 2, "max_fps": None, "scene_threshold": None}})
    from streamer.model.florence import Florence2Detector

    Pipeline(config, lambda: Florence2Detector(config.model)).run_many(
        [SourceSpec(str(clip), tmp / "reference.jsonl", None, name="a")])
    reference = plain(events(tmp / "reference.jsonl"))
    shapes = {"room": lambda: shape("head with room", 4, 4, clip, model, reference),
              "full": lambda: shape("head full", 2, 2, clip, model, reference),
              "back": lambda: shape("node back", 2, 2, clip, model, reference, restart_timeout_s=90,
                                    back_after_s=40),
              "stop": lambda: shape("stop while stuck", 2, 2, clip, model, reference, restart_timeout_s=90,
                                    stop_after_s=3)}
    for name in names or list(shapes):
        shapes[name]()


if __name__ == "__main__":
    main(sys.argv[1:])
