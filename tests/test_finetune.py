"""From footage to a model that knows the scene: export a dataset from the bundled clip, correct its labels (a new
class name, boxes moved), evaluate, fine-tune a tiny Florence-2 on it on CPU, and run the result."""

import json
import shutil

import pytest

from streamer.annotation.finetune import Trainer
from streamer.cli import main
from streamer.outputs.sinks import tracks_rows
from tests.helpers import CLIP, read_events
from tests.tiny_florence import build_tiny_florence

COCO = "annotations/instances_default.json"  # where CVAT and streamer export put COCO annotations
SHIFT = 40  # px the corrected boxes lie right of where the model put them


@pytest.fixture(scope="module")
def dataset(tiny_od, tmp_path_factory):
    """The clip's keyframes as COCO, as a labeller left them: the car is a "van" and 40 px further right."""
    work = tmp_path_factory.mktemp("dataset")
    config = work / "keep.yaml"
    config.write_text("output:\n  save_keyframes: true\n")
    assert main(["run", str(CLIP), "--model", str(tiny_od), "--no-video", "--config", str(config),
                 "--events", str(work / "run" / "events.jsonl")]) == 0
    assert main(["export", str(work / "run"), "--format", "coco", str(work / "coco")]) == 0
    annotations = work / "coco" / "annotations" / "instances_default.json"
    coco = json.loads(annotations.read_text())
    for category in coco["categories"]:
        category["name"] = "van"
    for annotation in coco["annotations"]:
        annotation["bbox"][0] += SHIFT
    annotations.write_text(json.dumps(coco))
    return work / "coco"


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    """A tiny Florence-2 with random weights: knows nothing of vans."""
    return build_tiny_florence(tmp_path_factory.mktemp("fresh"), None)


def tune_config(folder, epochs=15):
    path = folder / "tune.yaml"
    path.write_text(f"model:\n  max_new_tokens: 24\nfinetune:\n  learning_rate: 0.002\n  epochs: {epochs}\n"
                    "  batch_size: 4\n  val_share: 0.2\n")
    return path


def evaluate(capsys, dataset, model):
    assert main(["evaluate", str(dataset), "--model", str(model), "--format", "json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture(scope="module")
def tuned(dataset, fresh, tmp_path_factory):
    work = tmp_path_factory.mktemp("tuned")
    out = work / "model"
    assert main(["finetune", str(dataset), "--model", str(fresh), "--out", str(out),
                 "--config", str(tune_config(work))]) == 0
    return out


def test_a_fine_tuned_model_answers_the_new_labels_at_the_new_places(dataset, fresh, tuned, tiny_od, capsys):
    before = evaluate(capsys, dataset, tiny_od)  # the model the dataset came from: car, 40 px off
    assert before["images"] == 15 and before["boxes"] == 15 and before["map50"] < 0.1  # every keyframe, its box
    assert evaluate(capsys, dataset, fresh)["map50"] < 0.1
    after = evaluate(capsys, dataset, tuned)
    assert after["map50"] >= 0.9 and after["classes"][0]["name"] == "van" and after["recall"] >= 0.9


def test_the_fine_tuned_folder_runs_as_a_model(tuned, tmp_path, capsys):
    assert main(["run", str(CLIP), "--model", str(tuned), "--events", str(tmp_path / "e.jsonl"),
                 "--out-video", str(tmp_path / "v.mp4")]) == 0
    appeared = [e for e in read_events(tmp_path / "e.jsonl") if e["type"] == "object_appeared"]
    assert [e["label"] for e in appeared] == ["van"]
    labels = {r["label"] for r in (row for _, row in tracks_rows(tmp_path / "e.tracks.jsonl"))}  # what the video draws
    assert labels == {"van"}


def test_int8_keeps_what_fine_tuning_taught(dataset, tuned, tmp_path, capsys):
    exact = evaluate(capsys, dataset, tuned)
    config = tmp_path / "int8.yaml"
    config.write_text("model:\n  device: cpu\n  quantize: int8\n")
    assert main(["evaluate", str(dataset), "--model", str(tuned), "--config", str(config), "--format", "json"]) == 0
    int8 = json.loads(capsys.readouterr().out)
    assert int8["map50"] >= 0.9 and abs(int8["map50"] - exact["map50"]) <= 0.05 and int8["recall"] >= 0.9
    # Fine-tuning with the same settings trains float layers: int8 ones would have nothing to learn with.
    from torch.ao.nn.quantized.dynamic import Linear as Int8Linear

    from streamer.annotation.dataset import load_dataset
    from streamer.config import Config

    settings = Config.model_validate({"model": {"path": str(tuned), "device": "cpu", "quantize": "int8"}})
    trainer = Trainer(settings, load_dataset(dataset), tmp_path / "tuned-again")
    assert not any(isinstance(m, Int8Linear) for m in trainer.model.modules())
    assert trainer.model.model.language_model.encoder.layers[0].fc1.weight.requires_grad


def test_finetune_prints_before_and_after_side_by_side(dataset, fresh, tmp_path, capsys):
    assert main(["finetune", str(dataset), "--model", str(fresh), "--out", str(tmp_path / "m"),
                 "--config", str(tune_config(tmp_path, epochs=1))]) == 0
    out = capsys.readouterr().out
    assert f"fine-tuned model saved to {tmp_path / 'm'}" in out and "before" in out and "after" in out
    assert "van mAP@50" in out and (tmp_path / "m" / "config.json").is_file()
    assert "on 3 validation images (3 boxes) held out of training" in out  # val_share 0.2 of 15 keyframes
    assert not (tmp_path / "m" / "checkpoints").exists()  # a finished model folder is the model alone
    # A finished model is never overwritten by another run.
    assert main(["finetune", str(dataset), "--model", str(fresh), "--out", str(tmp_path / "m")]) == 1
    assert "holds a model already" in capsys.readouterr().err


def test_an_interrupted_finetune_resumes_from_its_last_epoch(dataset, fresh, tmp_path, capsys, monkeypatch):
    config, out = tune_config(tmp_path, epochs=3), tmp_path / "m"
    calls = {"n": 0}
    original = Trainer.loss

    def interrupting(self, batch):
        calls["n"] += 1
        if calls["n"] == 9:  # in the third epoch (three steps each)
            raise KeyboardInterrupt
        return original(self, batch)

    monkeypatch.setattr(Trainer, "loss", interrupting)
    assert main(["finetune", str(dataset), "--model", str(fresh), "--out", str(out), "--config", str(config)]) == 130
    assert "interrupted after 2 epochs" in capsys.readouterr().err
    assert not (out / "config.json").exists()  # no half-trained model passed off as one
    assert json.loads((out / "checkpoints" / "last" / "state.json").read_text())["epoch"] == 2
    monkeypatch.setattr(Trainer, "loss", original)
    epochs = []
    monkeypatch.setattr(Trainer, "checkpoint", lambda self: epochs.append(self.state["epoch"]))
    assert main(["finetune", str(dataset), "--model", str(fresh), "--out", str(out), "--config", str(config)]) == 0
    assert epochs == [3] and (out / "config.json").is_file()


def test_text_labels_are_scored_and_learned(dataset, fresh, tmp_path, capsys):
    """A plate read on each van (the COCO attribute `text`): its character error rate, before and after."""
    plates = tmp_path / "plates"
    shutil.copytree(dataset, plates)
    coco = json.loads((plates / COCO).read_text())
    for annotation in coco["annotations"]:
        annotation["attributes"]["text"] = "AB 42"
    (plates / COCO).write_text(json.dumps(coco))
    before = evaluate(capsys, plates, fresh)
    assert before["texts"] == 15 and before["cer"] >= 0.8
    assert main(["finetune", str(plates), "--model", str(fresh), "--out", str(tmp_path / "m"),
                 "--config", str(tune_config(tmp_path, epochs=20))]) == 0
    assert "character error rate" in capsys.readouterr().out
    after = evaluate(capsys, plates, tmp_path / "m")
    assert after["cer"] <= 0.2 and after["map50"] >= 0.9


def test_lora_adapters_are_merged_into_a_plain_model(dataset, fresh, tmp_path, capsys):
    config = tune_config(tmp_path, epochs=2)
    config.write_text(config.read_text() + "  lora: true\n  lora_rank: 4\n")
    assert main(["finetune", str(dataset), "--model", str(fresh), "--out", str(tmp_path / "m"),
                 "--config", str(config)]) == 0
    from safetensors import safe_open

    with safe_open(str(tmp_path / "m" / "model.safetensors"), "pt") as weights:
        names = list(weights.keys())
    assert names and not any("lora" in name for name in names)  # merged: loads without peft
    capsys.readouterr()
    assert evaluate(capsys, dataset, tmp_path / "m")["images"] == 15


def test_a_class_with_no_box_in_the_dataset_gets_no_score(tiny_od, dataset, tmp_path, capsys):
    copy = tmp_path / "with-bus"
    shutil.copytree(dataset, copy)
    coco = json.loads((copy / COCO).read_text())
    coco["categories"].append({"id": 99, "name": "bus", "supercategory": ""})
    (copy / COCO).write_text(json.dumps(coco))
    assert [c["name"] for c in evaluate(capsys, copy, tiny_od)["classes"]] == ["van"]


def test_a_yolo_dataset_is_read_too(tiny_od, dataset, tmp_path, capsys):
    run = dataset.parent / "run"
    assert main(["export", str(run), "--format", "yolo", str(tmp_path / "yolo")]) == 0
    capsys.readouterr()
    report = evaluate(capsys, tmp_path / "yolo", tiny_od)  # the model's own boxes: it agrees with itself
    assert report["images"] == 15 and report["map50"] >= 0.9


def broken_copy(dataset, tmp_path, change):
    copy = tmp_path / "broken"
    shutil.copytree(dataset, copy)
    coco = json.loads((copy / COCO).read_text())
    change(copy, coco)
    (copy / COCO).write_text(json.dumps(coco))
    return copy


def missing_image(copy, coco):
    (copy / "images" / "default" / coco["images"][3]["file_name"]).unlink()


def box_outside(copy, coco):
    coco["annotations"][0]["bbox"][0] = 5000


def no_images(copy, coco):
    coco["images"], coco["annotations"] = [], []


def no_classes(copy, coco):
    coco["categories"], coco["annotations"] = [], []


@pytest.mark.parametrize("change, says", [(missing_image, "dataset image missing"),
                                          (box_outside, "lies outside its 640x360 image"),
                                          (no_images, "holds no images"), (no_classes, "names no classes")])
def test_a_bad_dataset_is_one_line_before_any_model_loads(dataset, tmp_path, capsys, change, says):
    broken = broken_copy(dataset, tmp_path, change)
    for command in (["evaluate", str(broken)], ["finetune", str(broken), "--out", str(tmp_path / "m")]):
        assert main([*command, "--model", "/nonexistent/model"]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and says in err, err
    assert not (tmp_path / "m").exists()


def test_a_folder_that_is_not_florence2_is_one_line(dataset, tmp_path, capsys):
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text('{"model_type": "bert"}')
    assert main(["finetune", str(dataset), "--model", str(tmp_path / "other"), "--out", str(tmp_path / "m")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "other" in err and "Traceback" not in err
    assert not (tmp_path / "m").exists()


def test_no_space_for_a_checkpoint_is_one_line_and_no_model(dataset, fresh, small_disk, tmp_path, capsys):
    out = small_disk / "model"
    assert main(["finetune", str(dataset), "--model", str(fresh), "--out", str(out),
                 "--config", str(tune_config(tmp_path, epochs=1))]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"streamer: error: cannot write the checkpoint {out / 'checkpoints' / 'last'}: ")
    assert err.count("\n") == 1 and not (out / "config.json").exists()


@pytest.mark.parametrize("damage", ["state", "optimizer"])
def test_a_damaged_checkpoint_is_one_line_that_says_how_to_start_again(dataset, fresh, tmp_path, capsys, damage):
    out = tmp_path / "m"
    last = out / "checkpoints" / "last"
    shutil.copytree(fresh, last / "model")
    (last / "state.json").write_text('{"epoch": 1, "before": null}' if damage == "optimizer" else '{"epoch": "one')
    if damage == "optimizer":
        (last / "optimizer.pt").write_bytes(b"PK\x03\x04 cut short")
    assert main(["finetune", str(dataset), "--model", str(fresh), "--out", str(out),
                 "--config", str(tune_config(tmp_path, epochs=2))]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"streamer: error: the checkpoint {last} is damaged (") and "remove it" in err
    assert err.count("\n") == 1 and not (out / "config.json").exists()


def test_weights_that_are_not_the_models_are_one_line(fresh, tmp_path, capsys):
    """A pickle that would run code is refused unread; a config.json of another size than its weights is said."""
    import pickle

    class Payload:
        def __reduce__(self):
            return (print, ("ran",))

    evil, other = tmp_path / "evil", tmp_path / "other"
    shutil.copytree(fresh, evil)
    (evil / "model.safetensors").unlink()
    (evil / "pytorch_model.bin").write_bytes(pickle.dumps({"w": Payload()}))
    shutil.copytree(fresh, other)
    config = json.loads((other / "config.json").read_text())
    config["text_config"]["d_model"] *= 2
    (other / "config.json").write_text(json.dumps(config))
    for folder, says in ((evil, "a pickle that holds more than weights"), (other, "do not fit its config.json")):
        assert main(["run", str(CLIP), "--model", str(folder), "--no-video", "--events",
                     str(tmp_path / folder.name / "e.jsonl")]) == 1
        said = capsys.readouterr()
        assert said.err.startswith("streamer: error: cannot load a Florence-2 model") and says in said.err
        assert said.err.count("\n") == 1 and "ran" not in said.out


def test_a_checkpoint_that_fills_the_disk_is_the_disks_fault_not_torchs_assertion(small_disk):
    """torch's zip writer says a full disk as "RuntimeError: [enforce fail at inline_container.cc] ... unexpected
    pos": it is the OSError it is, which the checkpoint reports as one line (no space left on device)."""
    import errno

    import torch

    from streamer.annotation.finetune import save_tensors

    with pytest.raises(OSError) as error:
        save_tensors({"weights": torch.zeros(1_000_000)}, small_disk / "optimizer.pt")
    assert error.value.errno == errno.ENOSPC


def test_the_fine_tuned_folder_answers_through_openvino_as_through_torch(dataset, tuned, tmp_path, capsys):
    """A user's own checkpoint through the OpenVINO backend: fp32 scores as torch does; int8 (NNCF's weight
    compression of every part) keeps what fine-tuning taught. Fine-tuning itself stays in torch whatever the
    backend says."""
    pytest.importorskip("openvino")
    exact = evaluate(capsys, dataset, tuned)
    for quantize in (None, "int8"):
        config = tmp_path / f"openvino-{quantize}.yaml"
        config.write_text(f"model:\n  backend: openvino\n  device: CPU\n  openvino_cache: {tmp_path / 'cache'}\n"
                          + (f"  quantize: {quantize}\n" if quantize else ""))
        assert main(["evaluate", str(dataset), "--model", str(tuned), "--config", str(config), "--format",
                     "json"]) == 0
        scored = json.loads(capsys.readouterr().out)
        if quantize is None:
            assert scored["map50"] == exact["map50"] and scored["recall"] == exact["recall"]
        else:
            assert scored["map50"] >= 0.9 and abs(scored["map50"] - exact["map50"]) <= 0.05
    from streamer.annotation.dataset import load_dataset
    from streamer.config import Config

    settings = Config.model_validate({"model": {"path": str(tuned), "backend": "openvino", "device": "CPU"}})
    trainer = Trainer(settings, load_dataset(dataset), tmp_path / "tuned-again")
    assert trainer.detector.openvino is None and trainer.model.model.vision_tower.training is False
