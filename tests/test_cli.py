"""`streamer run` as a user runs it: a subprocess, the tiny Florence-2 loaded from its folder, real files out."""

import subprocess
import sys

import pytest

from tests.helpers import CLIP, OFFLINE, ROOT, probe_video, read_events, streamer, streamer_here


def test_run_on_the_bundled_clip_with_a_local_model(tiny_od, tmp_path, event_validator, capfd):
    video, log = tmp_path / "annotated.mp4", tmp_path / "events.jsonl"
    result = streamer_here(capfd, "run", CLIP, "--model", tiny_od, "--out-video", video, "--events", log)
    assert result.returncode == 0, result.stderr
    out, source = probe_video(video), probe_video(CLIP)
    assert (out["count"], out["width"], out["height"], out["rate"], out["codec"]) == (
        source["count"], source["width"], source["height"], source["rate"], "h264")
    events = read_events(log)
    for event in events:
        event_validator.validate(event)
    appeared = [e for e in events if e["type"] == "object_appeared"]
    assert len(appeared) == 1
    assert appeared[0]["label"] == "car" and appeared[0]["bbox"] == [64.0, 72.0, 320.0, 216.0]
    assert appeared[0]["source"] == str(CLIP)
    assert [e["type"] for e in events][-1] == "object_left"
    assert "event log" in result.stdout and "keyframes" in result.stdout


def test_ocr_task_reads_text_onto_a_track(tiny_ocr, tmp_path, event_validator, capfd):
    log = tmp_path / "events.jsonl"
    result = streamer_here(capfd, "run", CLIP, "--model", tiny_ocr, "--task", "OCR_WITH_REGION", "--no-video", "--events", log)
    assert result.returncode == 0, result.stderr
    reads = [e for e in read_events(log) if e["type"] == "text_read"]
    assert len(reads) == 1 and reads[0]["text"] == "AB 42" and reads[0]["track_id"] is not None
    event_validator.validate(reads[0])
    assert not list(tmp_path.glob("*.mp4"))


def test_without_paths_outputs_go_to_a_new_run_folder(tiny_od, tmp_path, capfd):
    (tmp_path / "keep.yaml").write_text("output: {save_keyframes: true}\nevents: {snapshots: true}\n")
    result = streamer_here(capfd, "run", CLIP, "--model", tiny_od, "--config", "keep.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    [folder] = list((tmp_path / "runs").iterdir())
    assert folder.name.startswith("street-")
    assert (folder / "annotated.mp4").stat().st_size > 0 and (folder / "events.jsonl").stat().st_size > 0
    assert str(folder.relative_to(tmp_path)) in result.stdout
    # One name for the source in every file the run writes, and in what is exported from it.
    named = list((folder / "keyframes").iterdir()) + list((folder / "snapshots").iterdir())
    assert named and all(p.name.startswith("street-") for p in named)
    assert streamer_here(capfd, "export", folder, "--format", "mot", tmp_path / "mot").returncode == 0
    assert sorted(p.name for p in (tmp_path / "mot").iterdir()) == ["results", "street"]
    assert (tmp_path / "mot" / "results" / "street.txt").stat().st_size > 0


def test_a_failed_source_hides_no_other_sources_summary(tiny_od, tmp_path, capfd):
    result = streamer_here(capfd, "run", f"whole={CLIP}", f"cut={_truncated(tmp_path)}", "--model", tiny_od, "--no-video",
                      cwd=tmp_path)
    assert result.returncode == 1
    assert "streamer: whole (file)\n  frames 150 of 640x360" in result.stdout  # finished whole, and said so
    assert "streamer: cut (file, failed)" in result.stdout
    [line] = result.stderr.strip().splitlines()[-1:]
    assert line.startswith("streamer: error: cut ended after ") and "truncated" in line


def _truncated(tmp_path):
    path = tmp_path / "truncated.mp4"
    path.write_bytes(CLIP.read_bytes()[:20000])  # moov is at the front (faststart): frames stop early
    return path


BAD_INPUTS = {
    "missing file": (lambda p, m: ["run", p / "nope.mp4", "--model", m], "input not found"),
    "not a video": (lambda p, m: ["run", _write(p / "x.mp4", b"hello"), "--model", m], "not a video file"),
    "bad yaml": (lambda p, m: ["run", CLIP, "--config", _write(p / "c.yaml", b"model: [x\n")], "not valid YAML"),
    "unknown key": (lambda p, m: ["run", CLIP, "--config", _write(p / "c.yaml", b"modle: {}\n")], "unknown key 'modle'"),
    "unknown task": (lambda p, m: ["run", CLIP, "--model", m, "--task", "<FLY>"], "unknown task '<FLY>'"),
    "model folder missing": (lambda p, m: ["run", CLIP, "--model", p / "no-model"], "does not exist"),
    "hub model offline": (lambda p, m: ["run", CLIP, "--model", "florence-community/Florence-2-base"], "model.path"),
}


def _write(path, data):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_and_opens_no_output(case, tiny_od, tmp_path):
    make_args, message = BAD_INPUTS[case]
    video, log = tmp_path / "out.mp4", tmp_path / "out.jsonl"
    env = {**OFFLINE, "HF_HOME": str(tmp_path / "hf")}
    result = streamer(*make_args(tmp_path, tiny_od), "--out-video", video, "--events", log, env=env)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not video.exists() and not log.exists() and not log.with_suffix(".db").exists()


def test_truncated_video_fails_but_keeps_what_was_read(tiny_od, tmp_path, event_validator, capfd):
    video, log = tmp_path / "out.mp4", tmp_path / "events.jsonl"
    result = streamer_here(capfd, "run", _truncated(tmp_path), "--model", tiny_od, "--out-video", video, "--events", log)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "truncated" in lines[0] and "Traceback" not in result.stderr
    written = probe_video(video)
    assert 0 < written["count"] < 150
    events = read_events(log)
    assert [e["type"] for e in events] == ["object_appeared", "object_left"]
    for event in events:
        event_validator.validate(event)


def test_a_stop_ends_cleanly_with_a_playable_video_however_often_it_is_asked(tiny_od, tmp_path):
    """SIGTERM as a process manager sends it, then an impatient Ctrl-C twice, 0.3 s apart: the later signals do
    not cut the stop short (a second one killed the process by the signal before: exit -2)."""
    import signal
    import time

    video, log = tmp_path / "out.mp4", tmp_path / "events.jsonl"
    config = tmp_path / "every-frame.yaml"
    config.write_text("sampler: {every_n_frames: 1, max_fps: null}\nmodel: {batch_size: 1}\n")
    proc = subprocess.Popen([sys.executable, "-m", "streamer", "run", str(CLIP), "--model", str(tiny_od),
                             "--config", str(config), "--out-video", str(video), "--events", str(log)],
                            cwd=ROOT, env=OFFLINE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not log.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGINT):
        proc.send_signal(sig)
        time.sleep(0.3)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr
    assert "stopped early" in stdout and "Traceback" not in stderr
    written = probe_video(video)
    assert 0 < written["count"] < 150
    assert read_events(log)[-1]["type"] == "object_left"


def test_ctrl_c_twice_while_the_model_loads_ends_with_130_and_no_output(tiny_od, tmp_path):
    import signal
    import time

    proc = subprocess.Popen([sys.executable, "-m", "streamer", "run", str(CLIP), "--model", str(tiny_od), "--events",
                             str(tmp_path / "e.jsonl"), "--out-video", str(tmp_path / "v.mp4")], cwd=ROOT,
                            env=OFFLINE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(3.0)  # the libraries imported, the model loading
    for _ in range(2):
        proc.send_signal(signal.SIGINT)
        time.sleep(0.3)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "Traceback" not in stderr, stderr
    assert not (tmp_path / "e.jsonl").exists() and not (tmp_path / "v.mp4").exists()


class _Interrupted(Exception):
    pass


def test_a_ctrl_c_while_torch_imports_is_handled_right_after_the_import():
    """Raised inside torch's C++ initialisers, an interrupt aborted the process (-6) or left it killed by SIGINT (-2)."""
    import os
    import signal

    from streamer.interrupts import held_back

    def handler(sig, _frame):
        raise _Interrupted(sig)

    previous = signal.signal(signal.SIGINT, handler)
    steps = []
    try:
        with pytest.raises(_Interrupted):
            with held_back():
                os.kill(os.getpid(), signal.SIGINT)
                os.kill(os.getpid(), signal.SIGINT)
                for _ in range(1000):  # bytecode boundaries, where a handler would run
                    steps.append(1)
                steps.append("import done")
        assert steps[-1] == "import done" and signal.getsignal(signal.SIGINT) is handler
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize("argv, address, sources", [
    (["--ray", "clips/street.mp4"], "local", ["clips/street.mp4"]),
    (["--ray", "cam=rtsp://127.0.0.1:8554/live"], "local", ["cam=rtsp://127.0.0.1:8554/live"]),
    (["--ray", "auto", "a.mp4"], "auto", ["a.mp4"]),
    (["--ray", "10.0.0.5:6379", "a.mp4"], "10.0.0.5:6379", ["a.mp4"]),
    (["--ray", "ray://head:10001", "a.mp4"], "ray://head:10001", ["a.mp4"]),
    (["a.mp4", "--ray"], "local", ["a.mp4"]),
])
def test_ray_takes_an_address_or_leaves_the_source_alone(argv, address, sources):
    from streamer.cli import parse_args

    args = parse_args(["run", *argv])
    assert (args.ray, args.sources) == (address, sources)


def test_debug_shows_the_traceback_of_a_bug_in_a_source(tiny_od, tmp_path, monkeypatch, capsys):
    from streamer.cli import main

    def broken(self, *args):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr("streamer.pipeline.task_tracking.TaskTracking.update", broken)
    args = ["run", str(CLIP), "--model", str(tiny_od), "--no-video", "--events", str(tmp_path / "e.jsonl")]
    assert main(args) == 1
    plain = capsys.readouterr().err
    assert plain == f"streamer: error: {CLIP}: ZeroDivisionError: a bug\n"
    assert main(["--debug", *args]) == 1
    debug = capsys.readouterr().err
    assert "Traceback" in debug and "in broken" in debug and debug.rstrip().endswith("ZeroDivisionError: a bug")


def test_every_flag_has_help_and_the_readme_lists_every_flag():
    import argparse
    import re

    from streamer.cli import parser

    usage = (ROOT / "README.md").read_text().split("## Usage", 1)[1].split("```")[1]
    sub = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name, command in sub.choices.items():
        blocks = re.split(r"streamer (?:\[--debug\] )?", usage)
        block = next(part for part in blocks if part.split(None, 1)[:1] == [name])
        for action in command._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help, (name, action.dest)
            for flag in (f for f in action.option_strings if f.startswith("--") and not f.startswith("--no-")):
                assert flag in block, (name, flag)
    for name in ("run", "evaluate", "finetune"):  # every command that loads the model takes the same three
        flags = {f for a in sub.choices[name]._actions for f in a.option_strings}
        assert {"--model", "--device", "--config"} <= flags, name
