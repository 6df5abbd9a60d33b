"""A Ray cluster that loses a node mid-run, on this machine: `ray.cluster_utils.Cluster` starts a head that
holds only the driver's own state (no CPUs: just the progress board, pinned there) and two nodes for the actors,
then removes the node a camera's actor runs on (its raylet and every process on it killed). The slow cases (a
full head, files redone, a node coming back) are in bench/ray_faults.py."""

import sqlite3
import time

import pytest

from streamer.config import Config
from streamer.pipeline.local import SourceSpec
from tests.helpers import probe_video, read_events
from tests.rtsp_server import RtspServer, require_gstreamer, wait_for
from tests.test_cluster import FAST_LIVE, OnRay

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.ray


def _node_of(handle) -> str:
    """Ray's id of the node an actor runs on (its 8 first digits, as `where` prints it)."""
    return ray.get(handle.where.remote(), timeout=30).rsplit("(", 1)[1].rstrip(")")


def _driver_on_the_head(cluster) -> None:
    """Join the cluster as the run's driver, attached to the head. Three raylets on one machine share its address,
    and Ray attaches a driver to any of them that it finds when the head is not among them yet; a node the driver
    is attached to cannot be removed ("Removing a node that is connected to this Ray client is not allowed"), and
    the test would fail by chance. The run then finds Ray joined and uses this connection."""
    from streamer.cluster.driver import _QUIET

    for _ in range(10):
        ray.init(address=cluster.address, namespace="streamer", logging_level="WARNING", **_QUIET)
        if ray.get_runtime_context().get_node_id() == cluster.head_node.node_id:
            return
        ray.shutdown()
        time.sleep(1)
    pytest.fail("Ray attached the driver to a node other than the head ten times in a row")


def test_a_camera_whose_node_is_lost_comes_back_on_another_with_down_up_and_new_ids(tiny_od, tmp_path, capfd,
                                                                                     event_validator):
    require_gstreamer()
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    try:
        nodes = [cluster.add_node(num_cpus=2) for _ in range(2)]
        cluster.wait_for_nodes()
        _driver_on_the_head(cluster)
        config = Config.model_validate({
            "model": {"path": str(tiny_od)}, "live": FAST_LIVE, "output": {"dir": str(tmp_path / "runs")},
            "cluster": {"address": cluster.address, "cpus_per_source": 0.5, "cpus_per_worker": 0.5,
                        "max_restarts": 2, "restart_timeout_s": 30}})
        log, db = tmp_path / "cam.jsonl", tmp_path / "cam.db"
        with RtspServer() as server:
            run = OnRay(config, [SourceSpec(server.url(), log, tmp_path / "cam.mp4", name="cam", db_path=db)])
            assert wait_for(lambda: any(e["type"] == "object_appeared" for e in read_events(log)), 60), run.result
            run.wait_frames(100)
            camera = run.pipeline.runs[0].handle
            lost = _node_of(camera)
            [node] = [n for n in nodes if n.node_id.startswith(lost)]
            assert ray.get_runtime_context().get_node_id() != node.node_id  # the head's: no camera runs there
            removed = time.monotonic()
            cluster.remove_node(node)

            shown = []  # the camera's state as the console shows it, while it is gone and back

            def back_with_a_new_track() -> bool:
                state = run.pipeline.runs[0].stats().state
                if not shown or shown[-1] != state:
                    shown.append(state)
                types = [e["type"] for e in read_events(log)]
                return "source_up" in types and "object_appeared" in types[types.index("source_up"):]

            assert wait_for(back_with_a_new_track, 60), f"the camera never came back: {read_events(log)[-3:]}"
            back_after = time.monotonic() - removed
            now = _node_of(camera)
            assert now != lost
            # The driver said where the camera ran, and where it runs after the move.
            assert any(line.startswith("[cam] source on node") and f"({lost})" in line for line in run.said)
            assert wait_for(lambda: any(line.startswith("[cam] source restarted, now on node") and f"({now})" in line
                                        for line in run.said), 10), run.said
            assert {"restarting", "silent"} & set(shown) and shown[-1] == "up", f"shown {shown} while it was gone"
            run.pipeline.stop()
            [stats] = run.join(within=60)
    finally:  # whatever happened: no test after this one may join what this one leaves
        try:
            ray.shutdown()
        finally:
            cluster.shutdown()
    events = read_events(log)
    for event in events:
        event_validator.validate(event)
    types = [e["type"] for e in events]
    down = types.index("source_down")
    assert events[down]["reason"] == "source actor restarted" and types[down + 1] == "source_up", types
    assert events[down + 1]["gap_s"] > 0 and events[down + 1]["pts"] > events[down]["pts"]
    before = {e["track_id"] for e in events[:down] if e["track_id"] is not None}
    after = {e["track_id"] for e in events[down:] if e["track_id"] is not None}
    assert before and after and min(after) > max(before), "a track id was reused after the restart"
    # The lost actor's open tracks end where it stopped (else they stay present for ever)...
    appeared = {e["track_id"] for e in events[:down] if e["type"] == "object_appeared"}
    assert appeared == {e["track_id"] for e in events[:down] if e["type"] == "object_left"}
    assert "source_restarted" in {e["reason"] for e in events[:down] if e["type"] == "object_left"}
    # ... the summary counts what both actors did, the store holds every event once ...
    assert stats.error is None and stats.events == len(events)
    assert stats.event_counts["object_appeared"] == types.count("object_appeared")
    with sqlite3.connect(db) as store:
        assert store.execute("SELECT count(*) FROM events").fetchone()[0] == len(events)
    # ... and the lost actor's recording plays up to about its last second; the new one goes on beside it.
    assert probe_video(tmp_path / "cam.mp4")["count"] >= 50 and probe_video(tmp_path / "cam.part1.mp4")["count"] > 0
    # Ray's news of the restart ("Task SourceActor.run failed ... will be retried") is not among our lines.
    out, err = capfd.readouterr()
    assert "will be retried" not in out + err and "(raylet)" not in out + err
    print(f"back with a new track {back_after:.1f} s after the node was removed; shown {shown}")
