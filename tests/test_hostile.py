"""What streamer promises against hostile or careless input, one test per promise kept.

Outputs never collide and never destroy an input: every output path is checked before anything is read, opened
or loaded. (Secrets in URLs: tests/test_reader.py and tests/test_url_files.py.)
"""

import os
import shutil
import time
from fractions import Fraction

import pytest

from streamer.cli import main
from tests.helpers import CLIP, probe_video, read_events, streamer, streamer_here


@pytest.fixture
def clip_copy(tmp_path):
    path = tmp_path / "input.mp4"
    shutil.copy(CLIP, path)
    return path


def ran(capsys, *args) -> tuple[int, str]:
    """`streamer run ARGS` in this process (refusals come before any thread or model): its code and stderr."""
    code = main(["run", *args])
    return code, capsys.readouterr().err


def refused(capsys, *args):
    """streamer run ARGS ends before the model loads, with one line on stderr; that line."""
    assert main(["run", *map(str, args), "--model", "/nonexistent/model/folder"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("streamer: error: ")
    return err


@pytest.mark.parametrize("flag", ["--events", "--out-video", "--db"])
def test_an_output_named_as_the_input_is_refused_and_the_input_kept(clip_copy, tmp_path, capsys, flag):
    before = clip_copy.read_bytes()
    others = {"--events": tmp_path / "e.jsonl", "--out-video": tmp_path / "v.mp4", "--db": tmp_path / "e.db"}
    others[flag] = clip_copy
    args = [a for pair in others.items() for a in pair]
    assert "is an input of this run" in refused(capsys, clip_copy, *args)
    assert clip_copy.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["input.mp4"]


@pytest.mark.parametrize("same", [("--events", "--db"), ("--events", "--out-video"), ("--out-video", "--db")])
def test_two_outputs_named_as_one_file_are_refused(clip_copy, tmp_path, capsys, same):
    target = tmp_path / "out.file"
    assert "is named as both the" in refused(capsys, clip_copy, same[0], target, same[1], target)
    assert not target.exists()


def test_a_source_name_given_twice_is_refused(clip_copy, capsys):
    assert "'cam' is given twice" in refused(capsys, f"cam={clip_copy}", f"cam={CLIP}")


def test_an_output_that_cannot_be_written_is_refused_before_the_model_loads(clip_copy, tmp_path, capsys):
    (tmp_path / "folder.jsonl").mkdir()
    assert "is a folder" in refused(capsys, clip_copy, "--events", tmp_path / "folder.jsonl")
    (tmp_path / "plain-file").write_text("x")
    assert "is not a writable folder" in refused(capsys, clip_copy, "--events", tmp_path / "plain-file" / "e.jsonl")


def test_two_sources_with_the_same_file_name_get_a_run_folder_each(tiny_od, tmp_path, capfd):
    for cam in ("cam1", "cam2"):
        (tmp_path / cam).mkdir()
        shutil.copy(CLIP, tmp_path / cam / "clip.mp4")
    result = streamer_here(capfd, "run", "cam1/clip.mp4", "cam2/clip.mp4", "--model", tiny_od, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    folders = sorted((tmp_path / "runs").iterdir())
    assert len(folders) == 2 and all(f.name.startswith("clip-") for f in folders)
    sources = [{e["source"] for e in read_events(f / "events.jsonl")} for f in folders]
    assert sorted(map(sorted, sources)) == [["cam1/clip.mp4"], ["cam2/clip.mp4"]]
    assert [probe_video(f / "annotated.mp4")["count"] for f in folders] == [150, 150]


def _config(tmp_path, text: str):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("args, message", [
    (["--prompt", "a car"], "task <OD> takes no prompt"),
    (["--task", "<CAPTION_TO_PHRASE_GROUNDING>", "--prompt", "car " * 100], "at most 200"),
    (["--http", "127.0.0.1:99999"], "port from 0 to 65535"),
    (["--mqtt", "mqtt://"], "MQTT URL must be mqtt://HOST[:PORT]"),
    (["--webhook", "hooks.example.com/x"], "webhook URL must be http://HOST[:PORT]"),
    (["--webhook", "http://[::1/hook"], "webhook URL must be http://HOST[:PORT]"),
    (["--mqtt", "mqtt://broker:port"], "MQTT URL must be mqtt://HOST[:PORT]"),
])
def test_bad_settings_are_refused_before_the_model_loads(clip_copy, capsys, args, message):
    assert message in refused(capsys, clip_copy, *args)


@pytest.mark.parametrize("text, message", [
    ("events: {zones: [{name: z, polygon: [[0, 0], [0.5, 0.5], [1, 1]]}]}", "must enclose an area"),
    ("events: {zones: [{name: z, polygon: [[0, 0], [.nan, 0.5], [1, 0]]}]}", "finite number"),
    ("events: {lines: [{name: l, start: [10, 10], end: [10, 10]}]}", "start and end must differ"),
    ("mqtt: {url: 'mqtt://127.0.0.1:1883', topic_prefix: 'site/#'}", "without the wildcards"),
    ("events: {zones: [{name: " + "z" * 1000 + ", polygon: [[0, 0], [1, 0], [1, 1]]}]}", "at most 64 characters"),
    ("sources: [{url: 'rtsp://127.0.0.1/x', name: " + "c" * 1000 + "}]", "at most 64 characters"),
])
def test_bad_areas_and_topics_in_a_config_are_refused(clip_copy, tmp_path, capsys, text, message):
    assert message in refused(capsys, clip_copy, "--config", _config(tmp_path, text))


def test_a_config_that_is_not_text_is_one_line(clip_copy, tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_bytes(b"\xff\xfe\x00binary")
    assert "not UTF-8 text" in refused(capsys, clip_copy, "--config", path)


def test_an_image_is_not_a_video(tmp_path, capsys):
    import cv2
    import numpy as np

    image = tmp_path / "photo.png"
    cv2.imwrite(str(image), np.zeros((40, 60, 3), np.uint8))
    assert "is a still image, not a video" in refused(capsys, image)


def test_a_duration_must_be_positive(clip_copy, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["run", str(clip_copy), "--duration", "-5"])
    assert exit_.value.code == 2 and "above 0" in capsys.readouterr().err


def test_export_into_a_file_is_refused(tmp_path, capsys):
    target = tmp_path / "dataset"
    target.write_text("keep me")
    assert main(["export", str(tmp_path), "--format", "coco", str(target)]) == 1
    assert "is a file" in capsys.readouterr().err and target.read_text() == "keep me"


@pytest.mark.parametrize("content", [b"", b"hello", "sqlite"])
def test_querying_something_that_is_not_a_store_leaves_it_alone(tmp_path, capsys, content):
    import sqlite3

    path = tmp_path / "x.db"
    if content == "sqlite":  # somebody else's database
        conn = sqlite3.connect(path)
        conn.execute("CREATE TABLE accounts (id INTEGER)")
        conn.commit()
        conn.close()
    else:
        path.write_bytes(content)
    before = path.read_bytes()
    for command in (["events", str(path)], ["clip", str(path), str(tmp_path / "c.mp4"), "--event", "1"],
                    ["export", str(path), "--format", "coco", str(tmp_path / "out")]):
        assert main(command) == 1, command
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and ("not a streamer event store" in err or "empty database" in err), err
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["x.db"]  # no -wal, no file


def test_an_odd_frame_size_is_padded_not_refused(tmp_path):
    import av
    import numpy as np

    from streamer.config import Config
    from streamer.pipeline.local import Pipeline
    from tests.helpers import moving_car
    from tests.scripted import ScriptedDetector

    clip = tmp_path / "odd.mkv"
    with av.open(str(clip), "w") as out:
        stream = out.add_stream("ffv1", rate=25)
        stream.width, stream.height, stream.pix_fmt = 321, 181, "yuv420p"
        for i in range(20):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(np.full((181, 321, 3), i * 10, np.uint8), format="bgr24")))
        out.mux(stream.encode(None))
    config = Config.model_validate({"sampler": {"every_n_frames": 5, "max_fps": None, "scene_threshold": None}})
    stats = Pipeline(config, lambda: ScriptedDetector(moving_car)).run(str(clip), tmp_path / "o.mp4", tmp_path / "e.jsonl")
    video = probe_video(tmp_path / "o.mp4")
    assert stats.frames == video["count"] == 20 and (video["width"], video["height"]) == (322, 182)


def test_a_bad_query_to_the_live_page_is_a_400_not_a_dropped_connection():
    import urllib.error
    import urllib.request

    from streamer.config import Config
    from streamer.pipeline.local import Pipeline
    from streamer.web.live import LiveView
    from streamer.web.server import StatusServer

    view = LiveView()
    server = StatusServer(Config.model_validate({"http": {"listen": "0"}}).http.listen,
                          Pipeline(Config(), lambda: None), view).start()
    try:
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(server.address + "/api/events?after=abc", timeout=5)
        assert error.value.code == 400
        with urllib.request.urlopen(server.address + "/api/events?after=0", timeout=5) as response:
            assert response.status == 200
        assert server.address.startswith("http://127.0.0.1:") and server.loopback  # a port alone is loopback
    finally:
        server.close()


def playable_frames(path) -> int:
    """Frames a player shows of a video whose end was cut off: up to the first damaged packet."""
    import av

    count = 0
    with av.open(str(path)) as container:
        try:
            for _ in container.decode(video=0):
                count += 1
        except av.error.InvalidDataError:
            pass
    return count


def test_a_full_disk_under_the_video_ends_the_run_with_one_line_and_a_playable_video(tiny_od, small_disk, tmp_path,
                                                                                    capfd):
    video = small_disk / "annotated.mp4"
    result = streamer_here(capfd, "run", CLIP, "--model", tiny_od, "--out-video", video, "--events", tmp_path / "e.jsonl",
                      "--config", _config(tmp_path, "output: {crf: 0, preset: ultrafast}"))
    assert result.returncode == 1
    assert result.stderr == f"streamer: error: cannot write the video {video}: no space left on device\n"
    assert "event log" not in result.stdout  # no summary that reads as success
    assert 0 < playable_frames(video) < 150  # what was written before plays
    assert read_events(tmp_path / "e.jsonl")  # and the other outputs were closed properly


@pytest.mark.parametrize("flag, what", [("--events", "event log"), ("--db", "event store")])
def test_a_full_disk_under_the_log_or_the_store_is_one_line(tiny_od, small_disk, tmp_path, flag, what, capfd):
    with pytest.raises(OSError):  # the disk fills up before the run starts writing
        (small_disk / "filler").write_bytes(b"\0" * 512 * 1024)
    target = small_disk / ("events.jsonl" if flag == "--events" else "events.db")
    others = {"--events": tmp_path / "e.jsonl", "--db": tmp_path / "e.db"}
    others[flag] = target
    result = streamer_here(capfd, "run", CLIP, "--model", tiny_od, "--no-video",
                           *[str(a) for pair in others.items() for a in pair])
    assert result.returncode == 1, result.stdout
    assert result.stderr.startswith(f"streamer: error: cannot write the {what} {target}: ")
    assert result.stderr.count("\n") == 1 and ("space" in result.stderr or "full" in result.stderr)


def test_a_full_disk_under_the_outbox_is_one_line_and_never_taken_for_damage(small_disk):
    from streamer.errors import StreamerError
    from streamer.outputs.outbox import Outbox

    outbox = Outbox(small_disk / "mqtt.outbox")
    with pytest.raises(OSError):
        (small_disk / "filler").write_bytes(b"\0" * 512 * 1024)
    with pytest.raises(StreamerError, match=r"^cannot write the outbox .*mqtt.outbox: database or disk is full"):
        for n in range(1000):  # an event the disk cannot take is said, never dropped without a word
            outbox.put({"n": n, "text": "x" * 2000})
    outbox.close()
    with pytest.raises(StreamerError, match=r"^cannot write the outbox"):
        for n in range(200):  # a new outbox on the full disk: said, not moved aside as damaged
            Outbox(small_disk / f"new-{n}.outbox").close()
    assert not list(small_disk.glob("*.damaged-*"))


def test_a_full_or_closed_standard_output_is_one_line_or_quiet(tmp_path):
    import subprocess
    import sys

    from tests.helpers import ROOT

    from streamer.outputs.store import EventStore

    EventStore(tmp_path / "e.db").close()
    command = [sys.executable, "-m", "streamer", "events", str(tmp_path / "e.db"), "--format", "json"]
    with open("/dev/full", "w") as full:
        result = subprocess.run(command, stdout=full, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    assert result.returncode == 1 and result.stderr == (
        "streamer: error: cannot write to standard output: No space left on device\n")
    reader = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    reader.stdout.close()  # the reader went away, as `| head` does
    assert reader.wait(timeout=60) == 141 and reader.stderr.read() == b""  # as SIGPIPE ends a command


@pytest.mark.parametrize("flag", ["--events", "--out-video"])
def test_an_earlier_runs_log_or_video_is_never_replaced(clip_copy, tmp_path, capsys, flag):
    earlier = tmp_path / ("old.jsonl" if flag == "--events" else "old.mp4")
    earlier.write_text('{"an": "earlier event"}\n')
    args = {"--events": tmp_path / "e.jsonl", "--out-video": tmp_path / "v.mp4", flag: earlier}
    assert "exists (an earlier run's?)" in refused(capsys, clip_copy, *[a for pair in args.items() for a in pair])
    assert earlier.read_text() == '{"an": "earlier event"}\n'


def test_a_stop_mid_file_does_not_wait_for_the_model_and_keeps_every_frame_read(tmp_path):
    import threading
    import time

    from streamer.config import Config
    from streamer.pipeline.local import Pipeline, SourceSpec
    from tests.helpers import moving_car
    from tests.scripted import ScriptedDetector

    def slow(index):
        time.sleep(0.5)  # a model far slower than the video: many keyframes wait with it
        return moving_car(index)

    config = Config.model_validate({"sampler": {"every_n_frames": 2, "max_fps": None, "scene_threshold": None},
                                    "model": {"batch_size": 1}})
    pipeline = Pipeline(config, lambda: ScriptedDetector(slow))
    spec = SourceSpec(str(CLIP), tmp_path / "e.jsonl", tmp_path / "v.mp4")
    threading.Timer(1.5, pipeline.stop).start()
    started = time.monotonic()
    [stats] = pipeline.run_many([spec])
    assert time.monotonic() - started < 1.5 + 10.0  # not the ~35 s the keyframes in hand would take (a loaded CI machine: 5 s seen)
    assert stats.stopped_early and 0 < stats.frames == probe_video(tmp_path / "v.mp4")["count"] < 150
    assert stats.keyframes > stats.detections  # keyframes were let go, not waited for


def test_a_stop_while_the_model_loads_opens_no_output(tmp_path):
    from streamer.config import Config
    from streamer.errors import Stopped
    from streamer.pipeline.local import Pipeline, SourceSpec
    from tests.scripted import ScriptedDetector

    def load():
        pipeline.stop()  # Ctrl-C or SIGTERM arriving during the load
        return ScriptedDetector(lambda i: [])

    pipeline = Pipeline(Config(), load)
    with pytest.raises(Stopped):
        pipeline.run_many([SourceSpec(str(CLIP), tmp_path / "e.jsonl", tmp_path / "v.mp4", db_path=tmp_path / "e.db")])
    assert list(tmp_path.iterdir()) == []


def test_a_killed_file_run_leaves_a_playable_video(tiny_od, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    from tests.helpers import OFFLINE, ROOT

    video = tmp_path / "v.mp4"
    config = _config(tmp_path, "sampler: {every_n_frames: 1, max_fps: null}\nmodel: {batch_size: 1}\n")
    proc = subprocess.Popen([sys.executable, "-m", "streamer", "run", str(CLIP), "--model", str(tiny_od), "--config",
                             str(config), "--out-video", str(video), "--events", str(tmp_path / "e.jsonl")],
                            cwd=ROOT, env=OFFLINE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not video.exists() or video.stat().st_size < 20_000):
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert playable_frames(video) > 0


def _encode(path, frames, rate=25, fmt=None, times=None, rotation=None):
    """A small H.264 video of `frames` (BGR arrays), at `times` (seconds) when given."""
    import av

    with av.open(str(path), "w", format=fmt) as out:
        stream = out.add_stream("libx264", rate=rate)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        if rotation is not None:
            stream.set_display_rotation(rotation)
        if times is not None:
            stream.codec_context.time_base = stream.time_base = Fraction(1, 1000)
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            if times is not None:
                frame.pts, frame.time_base = round(times[i] * 1000), Fraction(1, 1000)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def _run_clip(tmp_path, clip, every=5):
    from streamer.config import Config
    from streamer.pipeline.local import Pipeline
    from tests.helpers import moving_car
    from tests.scripted import ScriptedDetector

    config = Config.model_validate({"sampler": {"every_n_frames": every, "max_fps": 5.0, "scene_threshold": 0.1}})
    detector = ScriptedDetector(lambda i: moving_car(i)[:1] if i < 5 else [])
    stats = Pipeline(config, lambda: detector).run(str(clip), tmp_path / "o.mp4", tmp_path / "e.jsonl")
    return stats, detector


def test_a_stream_spliced_from_two_sizes_and_clocks_goes_on_to_its_end(tmp_path):
    """MPEG-TS cut from two recordings: the picture grows and the pts start again midway."""
    import numpy as np

    first = _encode(tmp_path / "a.ts", [np.full((96, 128, 3), 40 * (i % 5), np.uint8) for i in range(50)], fmt="mpegts")
    second = _encode(tmp_path / "b.ts", [np.full((120, 160, 3), 30 * (i % 7), np.uint8) for i in range(50)],
                     fmt="mpegts")
    spliced = tmp_path / "spliced.ts"
    spliced.write_bytes(first.read_bytes() + second.read_bytes())
    stats, detector = _run_clip(tmp_path, spliced)
    assert stats.error is None and stats.frames == 100
    keyframes = [i for call in detector.calls for i in call]
    assert max(keyframes) >= 90  # keyframes go on after the pts went back
    video = probe_video(tmp_path / "o.mp4")
    assert video["count"] == 100 and (video["width"], video["height"]) == (128, 96)  # one file, scaled


def test_phone_video_is_turned_upright(tmp_path):
    import numpy as np

    image = np.zeros((48, 96, 3), np.uint8)
    image[:, :16] = 255  # a white band along the left edge as stored
    clip = _encode(tmp_path / "phone.mp4", [image] * 10, rotation=90)
    stats, _ = _run_clip(tmp_path, clip)
    frame = probe_video(tmp_path / "o.mp4")["frames"][0]
    assert frame.shape[:2] == (96, 48) and stats.info.width == 48
    # Turned a quarter counterclockwise, as players show it: the band lies along the bottom.
    assert frame[-10:].mean() > 200 and frame[:10].mean() < 50


def test_a_variable_frame_rate_video_keeps_its_length(tmp_path):
    import numpy as np

    times = [round(i * 0.04 + (0.5 if i >= 25 else 0.0), 3) for i in range(50)]  # half a second of nothing
    clip = _encode(tmp_path / "vfr.mp4", [np.full((48, 64, 3), i * 5, np.uint8) for i in range(50)], times=times)
    _run_clip(tmp_path, clip)
    import av

    with av.open(str(tmp_path / "o.mp4")) as out:
        written = [f.time for f in out.decode(video=0)]
    assert len(written) == 50
    assert abs((written[-1] - written[0]) - (times[-1] - times[0])) < 0.05


def test_a_cut_mpeg_ts_is_reported_like_a_cut_mp4(tmp_path):
    import numpy as np

    from streamer.errors import StreamerError

    whole = _encode(tmp_path / "whole.ts", [np.full((48, 64, 3), 4 * i, np.uint8) for i in range(50)], fmt="mpegts")
    cut = tmp_path / "cut.ts"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size * 2 // 3 + 5])
    for folder in ("whole", "cut"):
        (tmp_path / folder).mkdir()
    stats, _ = _run_clip(tmp_path / "whole", whole)
    assert stats.frames == 50
    with pytest.raises(StreamerError, match=r"cut.ts ends inside a packet after frame \d+: the file is cut short"):
        _run_clip(tmp_path / "cut", cut)
    assert 0 < probe_video(tmp_path / "cut" / "o.mp4")["count"] < 50  # what was read is kept


@pytest.mark.ray
def test_two_files_on_ray_fit_a_two_core_machine(tiny_od, tmp_path):
    """A Ray instance of the run's own counts CPUs to hold the run: two sources and a worker on two cores."""
    pytest.importorskip("ray")
    for name in ("a", "b"):
        shutil.copy(CLIP, tmp_path / f"{name}.mp4")
    result = streamer("--debug", "run", "--ray", "a.mp4", "b.mp4", "--model", tiny_od, "--no-video", cwd=tmp_path,
                      timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("(file)") == 2 and "frames 150 of" in result.stdout


def test_an_earlier_tracks_file_beside_the_log_is_never_replaced(clip_copy, tmp_path, capsys):
    earlier = tmp_path / "e.tracks.jsonl"
    earlier.write_text('{"an": "earlier box"}\n')
    message = refused(capsys, clip_copy, "--events", tmp_path / "e.jsonl", "--no-video")
    assert f"the tracks file {earlier} exists" in message and earlier.read_text() == '{"an": "earlier box"}\n'


def test_a_pipe_where_a_file_belongs_is_one_line_not_a_hang(tmp_path):
    """FIFOs (and sockets) as the input, an output or the config: refused before anything waits on them."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    for args, said in (([str(fifo)], "is a pipe or a socket"),
                       ([str(CLIP), "--events", str(fifo)], "is not a regular file"),
                       ([str(CLIP), "--out-video", str(fifo), "--events", str(tmp_path / "e.jsonl")],
                        "is not a regular file"),
                       ([str(CLIP), "--config", str(fifo)], "is not a regular file")):
        result = streamer("run", *args, timeout=30)
        assert result.returncode == 1 and said in result.stderr and result.stderr.count("\n") == 1, result.stderr


@pytest.mark.parametrize("setting", ["live: {read_timeout_s: .inf}", "sampler: {max_fps: .nan}",
                                     "tracker: {lost_after_s: 1.0e+30}", "finetune: {seed: -1}",
                                     "events: {lines: [{name: l, start: [0, 0], end: [1.0e+30, 5]}]}"])
def test_infinite_or_absurd_numbers_in_a_config_are_one_line(tmp_path, capsys, setting):
    config = tmp_path / "c.yaml"
    config.write_text(setting + "\n")
    code, err = ran(capsys, str(CLIP), "--config", str(config))
    assert code == 1 and err.startswith("streamer: error: config") and err.count("\n") == 1, err


def test_a_yaml_alias_bomb_in_a_datasets_data_yaml_is_refused_at_once(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8))
    (tmp_path / "data.yaml").write_text(bomb + "names: *i\n")
    started = time.monotonic()
    result = streamer("evaluate", str(tmp_path), "--model", str(tmp_path / "none"), timeout=60)
    assert result.returncode == 1 and "anchors and aliases" in result.stderr and time.monotonic() - started < 20


def test_an_export_never_replaces_a_folder_that_holds_something(tmp_path, capsys):
    out = tmp_path / "dataset"
    out.mkdir()
    (out / "annotations.json").write_text('{"corrected": "by hand"}')
    assert main(["export", str(tmp_path / "missing.db"), "--format", "coco", str(out)]) == 1
    assert "not empty" in capsys.readouterr().err
    assert (out / "annotations.json").read_text() == '{"corrected": "by hand"}'


def test_two_runs_into_one_folder_and_one_store_keep_each_others_files(tmp_path):
    """Snapshots beside one log folder and keyframes beside one store, from two runs: named by their run, so
    neither takes the other's files, and the store's boxes are not doubled."""
    from streamer.config import Config
    from streamer.outputs.store import keyframe_boxes
    from streamer.pipeline.local import Pipeline, SourceSpec
    from tests.scripted import ScriptedDetector

    config = Config.model_validate({"sampler": {"every_n_frames": 10, "max_fps": None, "scene_threshold": None},
                                    "events": {"snapshots": True}, "output": {"save_keyframes": True}})
    for n in (1, 2):
        spec = SourceSpec(str(CLIP), tmp_path / f"run{n}.jsonl", None, name="street", db_path=tmp_path / "e.db")
        Pipeline(config, lambda: ScriptedDetector(lambda i: [("car", (10, 60, 90, 120), None)])).run_many([spec])
    first, second = (read_events(tmp_path / f"run{n}.jsonl") for n in (1, 2))
    snaps = [{e["snapshot"] for e in log if "snapshot" in e} for log in (first, second)]
    assert snaps[0] and snaps[1] and not snaps[0] & snaps[1]
    assert all((tmp_path / s).is_file() for s in snaps[0] | snaps[1])
    images, boxes = keyframe_boxes(tmp_path / "e.db")
    assert len(images) == 2 * 15 == len(set(images)) and all(len(b) == 1 for b in boxes.values())


def test_more_odd_input_is_one_line(tmp_path, capsys):
    from PIL import Image

    Image.new("RGB", (32, 32), "red").save(tmp_path / "one.gif")
    Image.new("RGB", (32, 32), "red").save(tmp_path / "icon.ico")
    for name in ("one.gif", "icon.ico"):
        code, err = ran(capsys, str(tmp_path / name))
        assert code == 1 and "is a still image" in err, err
    code, err = ran(capsys, str(tmp_path / "a\nb.mp4"))
    assert code == 1 and err.count("\n") == 1 and "a\\nb.mp4" in err


def test_odd_numbers_after_events_are_a_400_not_a_dropped_connection():
    import urllib.error
    import urllib.request

    from streamer.config import Config
    from streamer.pipeline.local import Pipeline
    from streamer.web.live import LiveView
    from streamer.web.server import StatusServer

    server = StatusServer("127.0.0.1:0", Pipeline(Config(), lambda: None), LiveView()).start()
    try:
        for after in ("%D9%A3", "9" * 5000, "-1", "1.5"):
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(f"{server.address}/api/events?after={after}", timeout=5)
            assert refused.value.code == 400
    finally:
        server.close()


def test_paths_the_system_refuses_and_yaml_nested_too_deep_are_one_line(tmp_path, capsys):
    (tmp_path / "loop.mp4").symlink_to(tmp_path / "loop.mp4")
    (tmp_path / "deep.yaml").write_text("a: " + "[" * 5000 + "]" * 5000 + "\n")
    long = "x" * 300
    for args, said in (([tmp_path / "loop.mp4"], "a loop of symbolic links"),
                       ([CLIP, "--events", tmp_path / "loop.mp4"], "a loop of symbolic links"),
                       ([tmp_path / f"{long}.mp4"], "File name too long"),
                       ([CLIP, "--events", tmp_path / f"{long}.jsonl"], "File name too long"),
                       ([CLIP, "--config", tmp_path / "deep.yaml"], "nested too deeply")):
        code, err = ran(capsys, *map(str, args))
        assert code == 1 and said in err and err.count("\n") == 1, err
        assert "internal error" not in err


def test_a_damaged_outbox_or_store_row_does_not_stop_a_run_or_a_query(tmp_path, capsys):
    import sqlite3

    from streamer.outputs.outbox import Outbox
    from streamer.outputs.store import EventStore, query
    from streamer.records import Event, Logged

    (tmp_path / "mqtt.outbox").write_bytes(b"not a database, a power cut's leftovers" * 100)
    outbox = Outbox(tmp_path / "mqtt.outbox")  # the damaged one is kept aside, a new one begins
    outbox.put({"topic": "t", "payload": "x"})
    assert len(outbox) == 1
    outbox.close()
    [aside] = tmp_path.glob("mqtt.outbox.damaged-*")
    assert aside.read_bytes().startswith(b"not a database")

    store = EventStore(tmp_path / "e.db").acquire()
    for n in range(3):
        store.write(Logged.of(Event("object_appeared", "cam", n, 0.0, 1767225600.0 + n, track_id=n)), tmp_path)
    store.close()
    conn = sqlite3.connect(tmp_path / "e.db")
    conn.execute("UPDATE events SET line = substr(line, 1, 20) WHERE id = 2")  # a row cut in half
    conn.commit()
    conn.close()
    assert [e["track_id"] for e in query(tmp_path / "e.db")] == [0, 2]
    assert main(["events", str(tmp_path / "e.db")]) == 0 and "(2 events)" in capsys.readouterr().out


@pytest.mark.parametrize("name, says", [("annotations.json", "is not COCO annotations"),
                                        ("project.json", "not a Label Studio JSON export")])
def test_annotations_nested_thousands_deep_are_one_line(tmp_path, capsys, name, says):
    (tmp_path / "images").mkdir()
    (tmp_path / name).write_text("[" * 100_000 + "]" * 100_000)
    assert main(["evaluate", str(tmp_path), "--model", str(tmp_path / "none")]) == 1
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1
