"""What streamer promises against hostile or careless input, one test per promise kept.

Outputs never collide and never destroy an input: every output path is checked before anything is read, opened
or loaded. (Secrets in URLs: tests/test_reader.py and tests/test_url_files.py.)
"""

import shutil

import pytest

from streamer.cli import main
from tests.helpers import CLIP, probe_video, read_events, streamer


@pytest.fixture
def clip_copy(tmp_path):
    path = tmp_path / "input.mp4"
    shutil.copy(CLIP, path)
    return path


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


def test_two_sources_with_the_same_file_name_get_a_run_folder_each(tiny_od, tmp_path):
    for cam in ("cam1", "cam2"):
        (tmp_path / cam).mkdir()
        shutil.copy(CLIP, tmp_path / cam / "clip.mp4")
    result = streamer("run", "cam1/clip.mp4", "cam2/clip.mp4", "--model", tiny_od, cwd=tmp_path)
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
    (["--http", "127.0.0.1:99999"], "port from 0 to 65535"),
    (["--mqtt", "mqtt://"], "MQTT URL must be mqtt://HOST[:PORT]"),
    (["--webhook", "hooks.example.com/x"], "webhook URL must be http://HOST[:PORT]"),
])
def test_bad_settings_are_refused_before_the_model_loads(clip_copy, capsys, args, message):
    assert message in refused(capsys, clip_copy, *args)


@pytest.mark.parametrize("text, message", [
    ("events: {zones: [{name: z, polygon: [[0, 0], [0.5, 0.5], [1, 1]]}]}", "must enclose an area"),
    ("events: {zones: [{name: z, polygon: [[0, 0], [.nan, 0.5], [1, 0]]}]}", "finite numbers"),
    ("events: {lines: [{name: l, start: [10, 10], end: [10, 10]}]}", "start and end must differ"),
    ("mqtt: {url: 'mqtt://127.0.0.1:1883', topic_prefix: 'site/#'}", "without the wildcards"),
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
    assert main(["events", str(path)]) == 1
    assert "not a streamer event store" in capsys.readouterr().err and path.read_bytes() == before


def test_an_odd_frame_size_is_padded_not_refused(tmp_path):
    import av
    import numpy as np

    from streamer.config import Config
    from streamer.pipeline import Pipeline
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
    from streamer.pipeline import Pipeline
    from streamer.server import LiveView, StatusServer

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
