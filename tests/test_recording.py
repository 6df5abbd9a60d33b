"""Recordings: a camera's stream in segments (GStreamer's RTSP server), clips of events, retention."""

from __future__ import annotations

import datetime
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest

from streamer.cli import main
from streamer.config import Config, RecordConfig
from streamer.outputs.sinks import tracks_rows
from streamer.outputs.store import EventStore, query, recordings
from streamer.pipeline.local import Pipeline
from streamer.pipeline.source_run import SourceSpec
from streamer.recording.clip import cut, event_range
from streamer.recording.recorder import Segment
from streamer.recording.retention import Retention
from tests.helpers import OFFLINE, ROOT, probe_video
from tests.rtsp_server import RtspServer, require_gstreamer, wait_for
from tests.scripted import ScriptedDetector

# A noisy picture: about 1 MB/s of H.264, so a few seconds fill a small disk.
NOISY = ("videotestsrc is-live=true pattern=snow ! video/x-raw,width=320,height=240,framerate=25/1 ! "
         "x264enc tune=zerolatency speed-preset=ultrafast key-int-max=25 bitrate=8000 ! "
         "rtph264pay name=pay0 pt=96 config-interval=1")


def car_from(first: int):
    return lambda i: [("car", (40, 40, 140, 120), None)] if i >= first else []


def record(tmp_path: Path, url: str, seconds: float, script=lambda i: [], **record_settings):
    config = Config.model_validate({"record": {"segment_s": 2, **record_settings}, "output": {"write_video": False},
                                    "sampler": {"every_n_frames": 5, "max_fps": None, "scene_threshold": None}})
    spec = SourceSpec(url, tmp_path / "e.jsonl", None, name="cam", db_path=tmp_path / "e.db",
                      tracks_path=tmp_path / "t.jsonl")
    pipeline = Pipeline(config, lambda: ScriptedDetector(script))
    [stats] = pipeline.run_many([spec], duration_s=seconds)
    assert stats.error is None, stats.error
    return stats, spec, pipeline  # the pipeline: for a server over what it recorded


def frames_of(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """One camera recorded for 9 s (2-s segments; a car from frame 100 on; clips from 2 s before an event to 1 s
    after), read by the tests of what a recording holds; none of them changes it."""
    require_gstreamer()
    folder = tmp_path_factory.mktemp("recorded")
    with RtspServer() as camera:
        return (folder, *record(folder, camera.url(), 9, car_from(100), pre_s=2, post_s=1))


@pytest.mark.live
def test_a_camera_is_recorded_in_contiguous_indexed_segments_that_play(recorded):
    tmp_path, stats, spec, _ = recorded
    segments = recordings(spec.db_path)
    assert len(segments) >= 3 and stats.segments == len(segments)
    on_disk = sorted(p.relative_to(tmp_path).as_posix() for p in (tmp_path / "recordings").rglob("*.mp4"))
    assert on_disk == sorted(s.path for s in segments)  # every file indexed, nothing else written
    for before, after in zip(segments, segments[1:]):
        assert after.first_frame == before.last_frame + 1  # no frame lost at a cut
        assert abs(after.start_wall - before.end_wall) < 0.5
    for segment in segments:  # the frames the run saw (the last one may hold a frame the stop cut short)
        frames = frames_of(tmp_path / segment.path) - (segment.last_frame - segment.first_frame + 1)
        assert frames == 0 or (segment is segments[-1] and frames == 1)
        assert segment.bytes == (tmp_path / segment.path).stat().st_size
    for segment in segments[:-1]:  # cut on keyframes (one a second) once segment_s is reached
        assert 2.0 <= segment.end_wall - segment.start_wall <= 3.1


@pytest.mark.live
def test_a_clip_of_an_event_starts_pre_s_before_it_and_plays(recorded, tmp_path, capsys):
    _, _, spec, _ = recorded
    [appeared] = [e for e in query(spec.db_path, with_id=True) if e["type"] == "object_appeared"]
    made = cut(spec.db_path, event_range(spec.db_path, appeared["id"], 2, 1), tmp_path / "clip.mp4")
    appeared_at = datetime.datetime.fromisoformat(appeared["wall_time"]).timestamp()
    assert made.start <= appeared_at - 2 + 0.05  # at least pre_s before (to the keyframe before)
    assert frames_of(tmp_path / "clip.mp4") == made.frames >= 25 * 3
    # The command line does the same, never over an existing file, and says what is wrong in one line.
    assert main(["clip", str(spec.db_path), str(tmp_path / "again.mp4"), "--event", str(appeared["id"])]) == 0
    assert frames_of(tmp_path / "again.mp4") > 0
    assert main(["clip", str(spec.db_path), str(tmp_path / "drawn.mp4"), "--event", str(appeared["id"]),
                 "--annotate"]) == 0  # the boxes from beside each segment
    plain, drawn = probe_video(tmp_path / "again.mp4")["frames"], probe_video(tmp_path / "drawn.mp4")["frames"]
    assert len(drawn) == len(plain) and np.abs(drawn[-5].astype(int)[40, 45:135] - plain[-5][40, 45:135]).mean() > 40
    assert main(["clip", str(spec.db_path), str(tmp_path / "again.mp4"), "--event", str(appeared["id"])]) == 1
    assert main(["clip", str(spec.db_path), str(tmp_path / "c.mp4"), "--event", "999"]) == 1
    assert main(["clip", str(spec.db_path), str(tmp_path / "c.mp4"), "--source", "cam", "--from",
                 "2001-01-01T00:00:00", "--to", "2001-01-01T00:01:00"]) == 1
    assert main(["clip", str(spec.db_path), str(tmp_path / "c.mp4"), "--event", "9" * 30]) == 1  # no SQLite id
    err = capsys.readouterr().err.splitlines()
    assert "exists" in err[0] and "no event 999" in err[1] and "its recordings run from" in err[2]
    assert err[3].startswith("streamer: error: ") and "no event 999999" in err[3] and len(err) == 4
    assert not (tmp_path / "c.mp4").exists()


def test_a_looped_stream_whose_clock_goes_back_is_recorded_without_a_hole(tmp_path, clip):
    """A camera that loops a file (or splices streams) sends a keyframe whose time goes back: the segment ends
    there and the next starts on that keyframe; before, the muxer refused every packet to the next keyframe."""
    from streamer.recording.recorder import Recorder

    store = EventStore(tmp_path / "s.db")
    recorder = Recorder(store, "cam", RecordConfig(segment_s=60), "run-")
    with av.open(str(clip)) as first, av.open(str(clip)) as again:
        recorder.session(first.streams.video[0])
        for container in (first, again):
            for packet in container.demux(video=0):
                recorder.packet(packet)
    recorder.close()
    store.close()
    segments = recordings(tmp_path / "s.db")
    assert recorder.errors == 0 and len(segments) == 2
    assert [frames_of(tmp_path / s.path) for s in segments] == [150, 150]


def test_recording_switched_off_ends_the_open_segment_and_on_again_starts_at_the_next_keyframe(tmp_path, clip):
    """Home Assistant's recording switch: the footage while it was off is not on disk, and what is there plays."""
    from streamer.recording.recorder import Recorder

    store = EventStore(tmp_path / "s.db")
    wanted = [True]
    recorder = Recorder(store, "cam", RecordConfig(segment_s=60), "run-", wanted=lambda: wanted[0])
    with av.open(str(clip)) as container:
        recorder.session(container.streams.video[0])
        for n, packet in enumerate(container.demux(video=0)):
            wanted[0] = not 40 <= n < 100  # off for 60 packets (2.4 s of the 6 s clip)
            recorder.packet(packet)
    recorder.close()
    store.close()
    segments = recordings(tmp_path / "s.db")
    assert recorder.errors == 0 and len(segments) == 2
    first, second = (frames_of(tmp_path / s.path) for s in segments)
    assert first == 40 and 0 < second <= 50  # from the first keyframe after packet 100


@pytest.mark.live
def test_a_full_disk_under_the_recordings_makes_the_guard_delete_and_recording_go_on(tmp_path):
    require_gstreamer()
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        with RtspServer({"/live": NOISY}) as camera:
            stats, spec, _ = record(disk, camera.url(), 10, car_from(0), min_free_gb=0.003, segment_s=1)
        segments = recordings(spec.db_path)
        assert stats.segments_deleted > 0 and stats.segments > len(segments) >= 1
        assert os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize > 1e6  # room was kept
        newest = max(segments, key=lambda s: s.start_wall)
        assert frames_of(disk / newest.path) > 0 and newest.end_wall > time.time() - 3  # still recording at the end
        assert sorted(p.relative_to(disk).as_posix() for p in (disk / "recordings").rglob("*.mp4")) == sorted(
            s.path for s in segments)  # nothing indexed that is gone, nothing on disk unindexed
        for event in query(spec.db_path, with_id=True):  # every event whose footage is left still clips
            span = event_range(spec.db_path, event["id"], 1, 1)
            if recordings(spec.db_path, "cam", span.start, span.end):
                assert cut(spec.db_path, span, tmp_path / f"{event['id']}.mp4").frames > 0
    finally:
        subprocess.run(["umount", "-l", str(disk)])


@pytest.mark.live
def test_a_killed_run_leaves_every_closed_segment_indexed_and_the_open_one_playable(tmp_path):
    require_gstreamer()
    config = tmp_path / "c.yaml"
    config.write_text("record: {segment_s: 2}\noutput: {write_video: false}\n")
    model = tmp_path / "m"
    from tests.tiny_florence import build_tiny_florence
    from tests.helpers import OD_ANSWER

    build_tiny_florence(model, OD_ANSWER)
    db = tmp_path / "e.db"
    with RtspServer() as camera:
        args = [sys.executable, "-m", "streamer", "run", f"cam={camera.url()}", "--config", config, "--model",
                model, "--events", tmp_path / "e.jsonl", "--db", db, "--no-video"]
        first = subprocess.Popen([str(a) for a in args], cwd=ROOT, env=OFFLINE, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, text=True)
        try:
            assert wait_for(lambda: db.exists() and len(recordings(db)) >= 2, 60), first.stderr
            time.sleep(1.6)  # well into the next segment: a fragment (a second) of it is on disk
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait(10)
    indexed = {s.path for s in recordings(db)}
    files = {p.relative_to(tmp_path).as_posix() for p in (tmp_path / "recordings").rglob("*.mp4")}
    [open_one] = files - indexed  # every closed segment is indexed; the open one is on disk
    assert indexed < files and frames_of(tmp_path / open_one) > 0
    # The camera recorded again: its recorder indexes what the killed run left open before anything else
    from streamer.recording.recorder import Recorder

    store = EventStore(db)
    Recorder(store, "cam", RecordConfig(segment_s=2), "again-").close()
    store.close()
    assert {s.path for s in recordings(db)} == files  # the index picked up where it was, the open one too


def _segments(tmp_path: Path, store: EventStore, hours: list[float], size: int, now: float,
              source: str = "cam") -> None:
    for i, age in enumerate(hours):
        path = tmp_path / "recordings" / source / f"{i:03d}.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * size)
        start = now - age * 3600
        store.add_segment(Segment(source, path.relative_to(tmp_path).as_posix(), start, start + 10, None, None,
                                  None, None, size))


def test_retention_deletes_oldest_first_keeps_footage_of_events_and_holds_the_cap(tmp_path):
    from streamer.records import Event, Logged

    now = time.time()
    store = EventStore(tmp_path / "e.db").acquire()
    # Ten segments of 400 kB, 100 to 10 hours old; an event 50 hours ago.
    _segments(tmp_path, store, [100, 90, 80, 70, 60, 50, 40, 30, 20, 10], 400_000, now)
    store.write(Logged.of(Event("object_appeared", "cam", 0, 0.0, now - 50 * 3600 + 5, track_id=1)), tmp_path)
    store.write(Logged.of(Event("source_down", "cam", 0, 0.0, now - 80 * 3600 + 5)), tmp_path)  # keeps nothing
    config = RecordConfig(retain_days=2, events_retain_days=3, retain_gb=0.002, min_free_gb=0)
    retention = Retention(store, config)
    retention.enforce(now)
    ages = [round((now - s.start_wall) / 3600) for s in store.segments()]
    # Older than 2 days goes, but the one around the event (50 h, within events_retain_days); then the cap of
    # 2 MB (five segments) takes nothing more: 4 left.
    assert ages == [50, 40, 30, 20, 10] and retention.deleted == 5
    assert sorted(p.name for p in (tmp_path / "recordings" / "cam").iterdir()) == ["005.mp4", "006.mp4", "007.mp4",
                                                                                    "008.mp4", "009.mp4"]
    retention.config = config.model_copy(update={"retain_gb": 0.001})
    retention.enforce(now)  # 1 MB: the oldest plain footage goes first, the event's last
    assert [round((now - s.start_wall) / 3600) for s in store.segments()] == [50, 10]
    retention.config = config.model_copy(update={"events_retain_days": 2})
    retention.enforce(now)  # the event is past its days: its footage goes too
    assert [round((now - s.start_wall) / 3600) for s in store.segments()] == [10]
    store.close()


def test_retention_never_deletes_outside_its_own_tree(tmp_path):
    """A camera's recordings folder replaced by a link to elsewhere, a segment that is itself a link, and index
    rows whose paths lead out of the store (a tampered store): retention forgets them, and deletes nothing but
    its own files and links."""
    now = time.time()
    store = EventStore(tmp_path / "store" / "e.db").acquire()
    base = tmp_path / "store"
    _segments(base, store, [100, 90], 1000, now, source="cam")
    _segments(base, store, [100], 1000, now, source="gate")
    elsewhere = tmp_path / "elsewhere"
    shutil.move(base / "recordings" / "cam", elsewhere)  # the user's other folder, with files of the same names
    (base / "recordings" / "cam").symlink_to(elsewhere, target_is_directory=True)
    precious = tmp_path / "precious.mp4"
    precious.write_bytes(b"keep")
    (base / "recordings" / "gate" / "000.mp4").unlink()
    (base / "recordings" / "gate" / "000.mp4").symlink_to(precious)
    for path in ("../precious.mp4", str(precious), "recordings/../../precious.mp4"):
        store.add_segment(Segment("cam", path, now - 99 * 3600, now - 99 * 3600 + 10, None, None, None, None, 10))
    Retention(store, RecordConfig(retain_days=1, events_retain_days=1, min_free_gb=0)).enforce(now)
    assert store.segments() == []  # every entry past its days is gone from the index
    assert sorted(p.name for p in elsewhere.iterdir()) == ["000.mp4", "001.mp4"] and precious.read_bytes() == b"keep"
    assert not (base / "recordings" / "gate" / "000.mp4").is_symlink()  # its own link went, not what it pointed to
    store.close()


def test_a_camera_can_keep_less_than_its_store(tmp_path):
    now = time.time()
    store = EventStore(tmp_path / "e.db").acquire()
    _segments(tmp_path, store, [30, 20, 10, 5], 400_000, now, "gate")
    _segments(tmp_path, store, [30, 20, 10, 5], 400_000, now, "yard")
    config = RecordConfig(retain_days=2, retain_gb=1, min_free_gb=0,
                          sources={"yard": {"retain_days": 0.5}, "gate": {"retain_gb": 0.001}})
    Retention(store, config).enforce(now)
    kept = [(s.source, round((now - s.start_wall) / 3600)) for s in store.segments()]
    # yard: half a day (20 h and older go); gate: 1 MB (the two newest); the store's 2 days and 1 GB hold both
    assert sorted(kept) == [("gate", 5), ("gate", 10), ("yard", 5), ("yard", 10)]
    store.close()


def test_a_retention_that_cannot_hold_one_segment_is_one_line(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("record: {segment_s: 60, retain_days: 0.0001}\n")
    assert main(["run", "x.mp4", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot hold one segment" in err


@pytest.mark.live
def test_segments_deleted_cut_or_replaced_by_hand_leave_the_rest_of_a_clip_playable(recorded, tmp_path):
    """Footage touched by hand under a running store: a segment deleted, one cut in half, one replaced by text.
    A clip over all of them has what is left, and plays; before, the first unreadable file failed the clip."""
    from streamer.recording.clip import Span

    shutil.copytree(recorded[0], tmp_path, dirs_exist_ok=True)  # damaged below: on a copy
    db = tmp_path / recorded[2].db_path.name
    segments = recordings(db)
    assert len(segments) >= 4
    whole = cut(db, Span("cam", segments[0].start_wall, segments[-1].end_wall), tmp_path / "whole.mp4").frames
    (tmp_path / segments[1].path).unlink()
    cut_short = tmp_path / segments[2].path
    cut_short.write_bytes(cut_short.read_bytes()[: cut_short.stat().st_size // 2])
    (tmp_path / segments[3].path).write_text("not a video any more")
    made = cut(db, Span("cam", segments[0].start_wall, segments[-1].end_wall), tmp_path / "left.mp4")
    assert 0 < made.frames < whole and probe_video(tmp_path / "left.mp4")["count"] == made.frames


@pytest.mark.live
def test_a_recorded_cameras_tracks_go_beside_each_segment_and_are_pruned_with_it(recorded, tmp_path):
    from streamer.outputs.sinks import tracks_beside

    shutil.copytree(recorded[0], tmp_path, dirs_exist_ok=True)  # retention below deletes: on a copy
    db = tmp_path / recorded[2].db_path.name
    assert not (tmp_path / "t.jsonl").exists()
    segments = recordings(db)
    cars = set()
    for segment in segments:
        beside = tracks_beside(tmp_path / segment.path)
        frames = [json_line["frame_index"] for json_line in _lines(beside)]
        # every frame the segment holds has its line, and no other; the car on those from frame 100 on
        assert frames == list(range(segment.first_frame, segment.last_frame + 1))
        assert {r["label"] for _, r in tracks_rows(beside)} <= {"car"}
        cars |= {r["frame_index"] for _, r in tracks_rows(beside)}
    assert cars and min(cars) >= 100 and max(cars) == segments[-1].last_frame
    store = EventStore(db).acquire()
    Retention(store, RecordConfig(retain_gb=0.001, min_free_gb=0, retain_days=0.0001, segment_s=1,
                                  events_retain_days=0.0001)).enforce(time.time() + 3600)
    store.close()
    assert not list((tmp_path / "recordings").rglob("*.tracks.jsonl.gz"))  # gone with their footage


def _lines(path: Path) -> list[dict]:
    import gzip
    import json

    with gzip.open(path, "rt") as f:
        return [json.loads(line) for line in f]


def test_a_cameras_event_log_rotates_at_midnight_and_old_days_are_deleted(tmp_path):
    from streamer.outputs.sinks import EventLog
    from streamer.records import Event, Logged

    log = tmp_path / "events.jsonl"
    (tmp_path / "events.2001-01-01.jsonl").write_text("{}\n")  # a day long past
    (tmp_path / "notes.2001-01-01.txt").write_text("a user's file")
    day = datetime.datetime(2026, 11, 30, 23, 59, 58).timestamp()
    out = EventLog(log, keep_days=14)
    for t in (day, day + 1, day + 3, day + 4):  # two events before midnight, two after
        out.event(Logged.of(Event("object_appeared", "cam", 0, 0.0, t, track_id=1)))
    out.close()
    assert len((tmp_path / "events.2026-11-30.jsonl").read_text().splitlines()) == 2
    assert len(log.read_text().splitlines()) == 2
    assert not (tmp_path / "events.2001-01-01.jsonl").exists() and (tmp_path / "notes.2001-01-01.txt").exists()


@pytest.mark.live
def test_the_server_serves_an_events_clip_and_any_stretch_with_range_requests(recorded, tmp_path):
    import json
    import urllib.error
    import urllib.request

    from streamer.web.live import LiveView
    from streamer.web.server import StatusServer

    folder, _, spec, pipeline = recorded

    def get(path, **headers):
        request = urllib.request.Request(server.address + path, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.headers, response.read()
        except urllib.error.HTTPError as err:
            return err.code, err.headers, err.read()

    server = StatusServer("127.0.0.1:0", pipeline, LiveView()).start()
    try:
        [appeared] = [e for e in query(spec.db_path, with_id=True) if e["type"] == "object_appeared"]
        status, headers, whole = get(f"/api/events/{appeared['id']}/clip.mp4")
        assert status == 200 and headers["Content-Type"] == "video/mp4" and headers["Accept-Ranges"] == "bytes"
        (tmp_path / "whole.mp4").write_bytes(whole)
        assert frames_of(tmp_path / "whole.mp4") >= 25
        status, headers, part = get(f"/api/events/{appeared['id']}/clip.mp4", Range="bytes=100-199")
        assert status == 206 and part == whole[100:200] and headers["Content-Range"] == f"bytes 100-199/{len(whole)}"
        assert get(f"/api/events/{appeared['id']}/clip.mp4", Range=f"bytes={len(whole)}-")[0] == 416
        assert get("/api/events/999/clip.mp4")[0] == 404
        status, _, body = get("/api/recordings/cam")
        listed = json.loads(body)
        assert status == 200 and listed and all(set(s) == {"start", "end", "seconds", "bytes"} for s in listed)
        assert str(folder) not in body.decode()  # no server paths
        status, _, stretch = get(f"/api/recordings/cam?from={listed[1]['start']}&to={listed[1]['end']}".replace(
            "+", "%2B"))
        (tmp_path / "stretch.mp4").write_bytes(stretch)
        assert status == 200 and frames_of(tmp_path / "stretch.mp4") >= 25
        status, _, body = get("/api/recordings/cam?from=2001-01-01T00:00:00&to=2001-01-01T00:01:00")
        assert status == 404 and b"its recordings run from" in body and str(folder).encode() not in body
    finally:
        server.close()


def test_a_file_is_its_own_recording_and_its_events_clip_from_it(tmp_path, clip):
    from tests.helpers import moving_car

    config = Config.model_validate({"sampler": {"every_n_frames": 5, "max_fps": None, "scene_threshold": None},
                                    "record": {"pre_s": 0.5, "post_s": 0.5}})
    spec = SourceSpec(str(clip), tmp_path / "e.jsonl", None, name="street", db_path=tmp_path / "e.db",
                      tracks_path=tmp_path / "t.jsonl")
    Pipeline(config, lambda: ScriptedDetector(lambda i: moving_car(i) if 30 <= i < 100 else [])).run_many([spec])
    store = EventStore(spec.db_path).acquire()
    assert store.segments() == []  # the user's file: nothing retention could ever delete
    store.close()
    events = query(spec.db_path, with_id=True)
    appeared = next(e for e in events if e["type"] == "object_appeared")
    left = next(e for e in events if e["type"] == "object_left")
    made = cut(spec.db_path, event_range(spec.db_path, appeared["id"], 0.5, 0.5), tmp_path / "car.mp4")
    with av.open(str(tmp_path / "car.mp4")) as container:
        count = sum(1 for _ in container.decode(video=0))
    # from the keyframe at or before 0.5 s ahead of its first sighting to 0.5 s after it left, no more than a GOP
    assert count == made.frames and (left["pts"] - appeared["pts"] + 1.0) * 25 <= count <= 150
    assert clip.stat().st_size > 0  # the original is untouched
    # --annotate draws each frame's boxes from the run's tracks file where they are on that frame
    assert main(["clip", str(spec.db_path), str(tmp_path / "drawn.mp4"), "--event", str(appeared["id"]), "--pre",
                 "0.5", "--post", "0.5", "--annotate"]) == 0
    plain, drawn, source = (probe_video(p)["frames"] for p in (tmp_path / "car.mp4", tmp_path / "drawn.mp4", clip))
    assert len(drawn) == len(plain)
    first = next(i for i, f in enumerate(source) if (f == plain[0]).all())  # the stream copy is bit-exact
    boxes = {r["frame_index"]: r["bbox"] for _, r in tracks_rows(spec.tracks_path) if r["track_id"] >= 0}
    checked = 0
    for n in range(len(plain)):
        if first + n in boxes:
            x1, y1, x2, _ = (int(round(v)) for v in boxes[first + n])
            edge = np.s_[y1, x1 + 2 : x2 - 2]
            assert np.abs(drawn[n][edge].astype(int) - plain[n][edge]).mean() > 40, n
            checked += 1
    assert checked >= 25
