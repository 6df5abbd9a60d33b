"""The chaos soak: an accelerated day of what cameras do to a process that watches them for months.

`streamer run` on N RTSP cameras (GStreamer test servers, each behind tests/faultproxy.py) and one HTTP MPEG-TS
camera that loops a clip, with recording, retention and the storage guard (the store on a small tmpfs), MQTT
with Home Assistant discovery (Mosquitto), a webhook receiver and the live view with watchers coming and going,
while seeded random faults hit every part: stalls, half-open connections, resets, trickles, flipped bytes,
refused connections, the server frozen (SIGSTOP) or restarted at another resolution, a camera that answers RTSP
but sends no video, the broker and the webhook receiver down for a while, the disk nearly full. What it checks
and prints is in tests/chaos.py (`Chaos._check`); the suite runs a short one (tests/test_chaos.py).

    .venv/bin/python bench/chaos.py                      # the day: 4 cameras, 60 minutes, a fault every ~15 s each
    .venv/bin/python bench/chaos.py --minutes 5 --cameras 2
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.chaos import Chaos  # noqa: E402
from tests.helpers import OD_ANSWER  # noqa: E402
from tests.tiny_florence import build_tiny_florence  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cameras", type=int, default=4, help="RTSP cameras (the MPEG-TS one comes on top)")
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--every", type=float, default=15.0, help="seconds between a camera's faults, on average")
    parser.add_argument("--longest", type=float, default=30.0, help="the longest fault, seconds (refusals: 4x)")
    parser.add_argument("--process-every", type=float, default=120.0,
                        help="seconds between broker, webhook and disk faults, on average")
    parser.add_argument("--watchers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, help="a folder to keep the run in (default: a temporary one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        model = build_tiny_florence(Path(tmp) / "tiny", OD_ANSWER)
        chaos = Chaos(folder / "chaos", model, cameras=args.cameras, seconds=args.minutes * 60, every_s=args.every,
                      longest_s=args.longest, process_every_s=args.process_every, seed=args.seed,
                      watchers=args.watchers, sample_after_s=min(120.0, args.minutes * 60 / 4))
        started = time.monotonic()
        report = chaos.run()
        print(f"chaos: {args.cameras} RTSP cameras + 1 MPEG-TS, {args.minutes:g} min, a fault every ~{args.every:g} s "
              f"per camera, seed {args.seed}, disk {'tmpfs' if chaos.disk else 'not mounted: no disk faults'}")
        for line in report.lines():
            print(line)
        print(f"wall {time.monotonic() - started:.0f} s")
        sys.exit(0 if not report.problems else 1)


if __name__ == "__main__":
    main()
