"""A video behind a URL is a file when its media has an end: every frame once, the run ends with the media, a
broken download is resumed where it broke. A URL without an end stays a camera. Served from 127.0.0.1."""

import shutil
import time

import av
import pytest

from streamer.config import Config
from streamer.errors import StreamerError
from streamer.pipeline.local import Pipeline, SourceSpec
from streamer.pipeline.reader import open_reader
from tests.helpers import CLIP, moving_car, read_events, streamer, streamer_here, without_wall_time
from tests.httpmedia import MediaServer
from tests.scripted import ScriptedDetector

FAST = {"open_timeout_s": 2.0, "read_timeout_s": 1.0, "backoff_initial_s": 0.2, "backoff_max_s": 2.0}


def run(url, out, live=None, duration_s=None, **timeouts):
    config = Config.model_validate({"sampler": {"every_n_frames": 5, "max_fps": None, "scene_threshold": None},
                                    "tracker": {"lost_after_s": 1.0}, "live": {**FAST, **timeouts}})
    spec = SourceSpec(url, out / "events.jsonl", out / "annotated.mp4", name="street", live=live)
    [stats] = Pipeline(config, lambda: ScriptedDetector(moving_car)).run_many([spec], duration_s=duration_s)
    return stats


def decoded(path):
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]


@pytest.fixture
def served(tmp_path):
    """The bundled clip, an HLS VOD of it (FFmpeg's hls muxer, no re-encode) and the same playlist without its
    end (a live playlist)."""
    folder = tmp_path / "www"
    folder.mkdir()
    shutil.copy(CLIP, folder / "clip.mp4")
    with av.open(str(CLIP)) as src, av.open(str(folder / "vod.m3u8"), "w", format="hls", options={
            "hls_time": "2", "hls_playlist_type": "vod", "hls_segment_filename": str(folder / "seg%03d.ts")}) as dst:
        out = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(video=0):
            if packet.dts is not None:
                packet.stream = out
                dst.mux(packet)
    playlist = (folder / "vod.m3u8").read_text()
    assert "#EXT-X-ENDLIST" in playlist
    live = playlist.replace("#EXT-X-ENDLIST\n", "").replace("#EXT-X-PLAYLIST-TYPE:VOD\n", "")
    (folder / "live.m3u8").write_text(live)
    return folder


@pytest.fixture(scope="module")
def from_disk(tmp_path_factory):
    out = tmp_path_factory.mktemp("disk")
    stats = run(str(CLIP), out)
    return stats, read_events(out / "events.jsonl"), decoded(out / "annotated.mp4")


def test_an_mp4_over_http_is_the_same_file_as_on_disk(served, from_disk, tmp_path):
    disk_stats, disk_events, disk_frames = from_disk
    with MediaServer(served) as server:
        stats = run(f"{server.base}/clip.mp4", tmp_path)
    assert not stats.live and stats.dropped == 0 and stats.reconnects == 0
    assert (stats.frames, stats.keyframes) == (disk_stats.frames, disk_stats.keyframes) == (150, 30)
    assert without_wall_time(read_events(tmp_path / "events.jsonl")) == without_wall_time(disk_events)
    frames = decoded(tmp_path / "annotated.mp4")
    assert len(frames) == len(disk_frames) and all((a == b).all() for a, b in zip(frames, disk_frames))


def test_a_download_that_breaks_off_is_resumed_where_it_broke(served, from_disk, tmp_path):
    _, disk_events, _ = from_disk
    with MediaServer(served, drop_after=15_000) as server:
        stats = run(f"{server.base}/clip.mp4", tmp_path)
    assert stats.frames == 150 and not stats.live
    assert without_wall_time(read_events(tmp_path / "events.jsonl")) == without_wall_time(disk_events)
    ranges = [r for path, r in server.requests if path == "clip.mp4"]
    assert ranges[0] in (None, "bytes=0-") and "bytes=15000-" in ranges  # asked again from the break, not from 0


def test_a_slow_but_steady_download_is_read_to_its_end(served, from_disk, tmp_path):
    """1 kB every 0.1 s: never a silence as long as the read timeout, though a packet takes longer than it."""
    _, disk_events, _ = from_disk
    with MediaServer(served, trickle=(1000, 0.1)) as server:
        stats = run(f"{server.base}/clip.mp4", tmp_path, read_timeout_s=0.4)
    assert stats.frames == 150 and not stats.live
    assert without_wall_time(read_events(tmp_path / "events.jsonl")) == without_wall_time(disk_events)


def test_a_download_that_cannot_be_finished_says_how_far_it_got(served, tmp_path):
    with MediaServer(served, drop_after=15_000, gone_after_drop=True) as server:
        with pytest.raises(StreamerError, match=r"street.* after frame \d+ of 150") as error:
            run(f"{server.base}/clip.mp4", tmp_path)
    events = read_events(tmp_path / "events.jsonl")
    assert events and "token" not in str(error.value)
    assert len(decoded(tmp_path / "annotated.mp4")) > 0  # what was read is kept, playable


def test_an_hls_vod_playlist_is_a_file_and_ends(served, tmp_path):
    with MediaServer(served) as server:
        started = time.monotonic()
        stats = run(f"{server.base}/vod.m3u8", tmp_path)
    assert not stats.live and stats.frames == 150 and stats.dropped == 0
    assert time.monotonic() - started < 30
    assert [e["type"] for e in read_events(tmp_path / "events.jsonl")] == ["object_appeared", "object_left"]


def test_a_live_hls_playlist_stays_a_camera(served, tmp_path):
    with MediaServer(served) as server:
        stats = run(f"{server.base}/live.m3u8", tmp_path, duration_s=4)
    assert stats.live and stats.frames > 0


def test_the_mode_can_be_forced_either_way(served):
    with MediaServer(served) as server:
        readers = [open_reader(f"{server.base}/clip.mp4", live=True), open_reader(f"{server.base}/live.m3u8", live=False),
                   open_reader(f"{server.base}/clip.mp4"), open_reader(f"{server.base}/live.m3u8")]
        for reader in readers:
            reader.stop()
    assert [reader.live for reader in readers] == [True, False, False, True]
    unreachable = open_reader("rtsp://127.0.0.1:1/cam")  # a camera that is off now: retried, not an error
    unreachable.stop()
    assert unreachable.live and not open_reader(str(CLIP)).live


def test_the_summary_says_which_mode_each_source_ran_in(served, tiny_od, tmp_path, capfd):
    # A link read as a file: see the presigned link below; --live makes the same link a camera.
    with MediaServer(served) as server:
        forced = streamer_here(capfd, "run", f"{server.base}/clip.mp4", "--model", tiny_od, "--no-video", "--live",
                          "--duration", "2", "--events", tmp_path / "f.jsonl")
    assert forced.returncode == 0, forced.stderr
    assert "/clip.mp4 (camera)" in forced.stdout


def test_a_token_in_a_presigned_link_never_leaves_the_url(served, tiny_od, tmp_path, capfd):
    secret = "TOPSECRET0123456789"
    with MediaServer(served) as server:
        ok = streamer_here(capfd, "run", f"{server.base}/clip.mp4?X-Amz-Credential=AKIA{secret}&X-Amz-Signature={secret}",
                      "--model", tiny_od, cwd=tmp_path)
        missing = streamer_here(capfd, "run", f"{server.base}/nothing.mp4?token={secret}", "--model", tiny_od, cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert "=*** (file)\n  frames 150 of" in ok.stdout  # a link to a file is read as one, its secrets masked
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1 and "nothing.mp4" in missing.stderr
    written = [p for p in (tmp_path / "runs").rglob("*")]
    assert any(p.name == "events.jsonl" for p in written)
    for text in [ok.stdout, ok.stderr, missing.stdout, missing.stderr, *map(str, written),
                 *(p.read_bytes().decode("latin-1") for p in written if p.is_file())]:
        assert secret not in text


def test_a_bug_in_the_camera_reader_is_that_cameras_down_with_backoff_not_the_runs_end(served, tmp_path, monkeypatch):
    """Whatever fails in a camera's stream is the camera's: one source_down naming it, then reconnects that back
    off (no hot loop, no storm of events), and the run goes on to its --duration."""
    def broken(self, raw):
        raise ZeroDivisionError("a bug in the clock")

    monkeypatch.setattr("streamer.pipeline.reader.MediaClock.next", broken)
    with MediaServer(served) as server:
        started = time.monotonic()
        stats = run(f"{server.base}/live.m3u8", tmp_path, duration_s=6)
    assert 5 < time.monotonic() - started < 15 and stats.error is None
    downs = [e for e in read_events(tmp_path / "events.jsonl") if e["type"] == "source_down"]
    assert [d["reason"] for d in downs] == ["internal error: ZeroDivisionError: a bug in the clock"]
    assert 2 <= stats.reconnects <= 10  # 0.2 s doubling to 2 s: backed off, not a hot loop


@pytest.mark.parametrize("body", [b"<!doctype html><html><body>Sign in</body></html>", bytes(range(256)) * 64])
def test_a_url_that_serves_a_page_or_garbage_is_one_line_not_a_camera(tmp_path, body):
    (tmp_path / "cam.mp4").write_bytes(body)
    with MediaServer(tmp_path) as server:
        result = streamer("run", f"{server.base}/cam.mp4", "--no-video", "--events", tmp_path / "e.jsonl", timeout=60)
    assert result.returncode == 1 and "is not a video" in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert not (tmp_path / "e.jsonl").exists()
