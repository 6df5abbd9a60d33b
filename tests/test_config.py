from pathlib import Path

import pytest

from streamer.config import Config, load_config
from streamer.errors import StreamerError
from tests.helpers import ROOT


def test_default_yaml_spells_out_the_defaults():
    assert load_config(ROOT / "configs" / "default.yaml") == Config()


def test_overrides_win_over_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  task: <OCR_WITH_REGION>\n  batch_size: 2\n")
    config = load_config(path, {"model.task": "od", "model.device": "cpu"})
    assert config.model.task == "<OD>"
    assert config.model.batch_size == 2
    assert config.model.device == "cpu"


@pytest.mark.parametrize(
    "text, message",
    [
        ("model:\n  tsk: <OD>\n", "unknown key 'model.tsk'"),
        ("sampler:\n  every_n_frames: -3\n", "sampler.every_n_frames"),
        ("tracker:\n  kind: deepsort\n", "tracker.kind"),
        ("model:\n  task: <FLY>\n", "unknown task '<FLY>'"),
        ("model:\n  task: <CAPTION_TO_PHRASE_GROUNDING>\n", "needs a prompt"),
        ("model: [unclosed\n", "not valid YAML at line"),
        ("- just\n- a list\n", "expected a mapping"),
    ],
)
def test_bad_config_is_one_clear_line(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(StreamerError) as err:
        load_config(path)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_config_file():
    with pytest.raises(StreamerError, match="config file not found"):
        load_config(Path("/nonexistent/config.yaml"))
