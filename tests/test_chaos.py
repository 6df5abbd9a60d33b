"""A short chaos run (bench/chaos.py runs an accelerated day of it): `streamer run` on two RTSP cameras and an
HTTP MPEG-TS one that loops, with recording, retention, the store, MQTT with discovery, a webhook and watchers of
the live view, while seeded faults of every class hit the cameras, the broker, the webhook receiver and the disk.
Whatever the timing, every fault must be survived and nothing lost (see `tests/chaos.py` for what is checked)."""

import pytest

from tests.chaos import CAMERA_FAULTS, LIVE, PROCESS_FAULTS, Chaos
from tests.rtsp_server import require_gstreamer

pytestmark = pytest.mark.live


def test_a_seeded_minute_of_every_fault_is_survived_and_nothing_is_lost(tiny_od, tmp_path):
    require_gstreamer()
    # Up again within the backoff cap + 5 s is the bar bench/chaos.py holds to; here + 10 s, for a loaded machine.
    chaos = Chaos(tmp_path, tiny_od, cameras=2, seconds=55, every_s=5, longest_s=4, process_every_s=5, seed=3,
                  disk_mb=64, recover_s=LIVE["backoff_max_s"] + 10)
    report = chaos.run()
    print("\n".join(report.lines()))
    injected = {fault.kind for fault in report.faults}
    assert injected >= set(CAMERA_FAULTS) | {k for k in PROCESS_FAULTS if k != "disk" or chaos.disk}, injected
    assert report.returncode == 0 and report.alive_to_the_end
    assert report.problems == []
    assert "Traceback" not in report.stderr
    assert min(report.figures["watcher_frames"]) > 50  # the watchers that stayed saw the cameras all along
