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
