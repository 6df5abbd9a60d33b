"""Fine-tuning Florence-2 on the user's own labelled footage, for `<OD>`, and `<OCR_WITH_REGION>` where the
dataset has text.

The targets are written the way Florence-2 writes its answers (each box as its label and four `<loc_N>` bins,
N = coordinate / size x 1000; each text as itself and the eight bins of its box's corners), and the model
learns them by teacher forcing: transformers'
`Florence2ForConditionalGeneration` given `labels`. The vision tower is frozen by default (what the published
recipes do on a few hundred images); LoRA adapters (peft) are an option and are merged at the end; bf16 on
CUDA. A checkpoint is written after every epoch (and on Ctrl-C) to `OUT/checkpoints/last`, atomically, and the
same command resumes from it. The result is a `save_pretrained` folder that `streamer run --model OUT` and
`streamer evaluate --model OUT` load as they are; it appears in OUT only when it is complete.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import pickle
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError

from streamer.annotation.dataset import load_dataset, split
from streamer.annotation.evaluate import Report, evaluate
from streamer.annotation.samples import Dataset, Sample
from streamer.config import Config
from streamer.errors import Stopped, StreamerError, cannot_write, first_line

_CHECKPOINT = "checkpoints/last"
OCR = "<OCR_WITH_REGION>"
Example = tuple[Sample, str]  # an image and the task it is taught


def target_text(sample: Sample, classes: list[str], task: str = "<OD>") -> str:
    """A sample's labels as Florence-2 writes the task's answer: `<OD>`: `label<loc_x1><loc_y1><loc_x2><loc_y2>`
    per box; `<OCR_WITH_REGION>`: `text` and the bins of the box's four corners, per box with text."""
    h, w = sample.shape

    def bins(*points) -> str:
        return "".join(f"<loc_{min(999, max(0, int(v / (w if i % 2 == 0 else h) * 1000)))}>"
                       for i, v in enumerate(points))

    parts = []
    for i, ((x1, y1, x2, y2), class_id) in enumerate(zip(sample.boxes.xyxy, sample.boxes.class_id)):
        if task == OCR:
            text = (sample.texts or [""] * len(sample.boxes))[i]
            if text:
                parts.append(text + bins(x1, y1, x2, y1, x2, y2, x1, y2))
        else:
            parts.append(classes[int(class_id)] + bins(x1, y1, x2, y2))
    return "".join(parts)


def examples(samples: list[Sample]) -> list[Example]:
    """Every image is taught `<OD>`; those with text `<OCR_WITH_REGION>` too."""
    return [(s, "<OD>") for s in samples] + [(s, OCR) for s in samples if any(s.texts or [])]


def check_out(out: Path) -> None:
    """Refuse, before anything loads, an output that is a file or already holds a finished model."""
    if out.exists() and not out.is_dir():
        raise StreamerError(f"{out} is a file: name a folder for the fine-tuned model")
    if (out / "config.json").exists():
        raise StreamerError(f"{out} holds a model already: name a new folder")
    ancestor = next(p for p in [out, *out.parents] if p.exists())
    if not os.access(ancestor, os.W_OK):
        raise StreamerError(f"cannot write the fine-tuned model {out}: {ancestor} is not a writable folder")


def _saved_state(checkpoint: Path) -> dict:
    """Where an interrupted run stood (`state.json`), checked: a damaged one is said, never trained on."""
    with _damaged(checkpoint):
        state = json.loads((checkpoint / "state.json").read_text(encoding="utf-8"))
        if not (isinstance(state, dict) and isinstance(state.get("epoch"), int) and state["epoch"] >= 0
                and (state.get("before") is None or isinstance(state["before"], dict))):
            raise ValueError("state.json is not one streamer wrote")
        if state["before"] is not None:
            Report.from_dict(state["before"])
        return state


@contextlib.contextmanager
def _damaged(checkpoint: Path):
    """Any failure reading a checkpoint is one line: which, and how to start again."""
    try:
        yield
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, EOFError, pickle.UnpicklingError) as exc:
        raise StreamerError(f"the checkpoint {checkpoint} is damaged ({first_line(exc, 200)}): remove it to start "
                            "this fine-tuning again from the start") from None


class Trainer:
    """One fine-tuning run: the model, its optimiser, and where it saves."""

    def __init__(self, config: Config, dataset: Dataset, out: Path, on_step=None) -> None:
        from streamer.model.florence import Florence2Detector, torch_device

        self.config, self.tune, self.dataset, self.out = config, config.finetune, dataset, out
        self.on_step = on_step  # called with (epoch, step, steps, loss)
        self.train, self.val = split(dataset.samples, self.tune.val_share, self.tune.seed)
        self.state = {"epoch": 0, "before": None}
        checkpoint = out / _CHECKPOINT
        model_config = config.model
        if (checkpoint / "state.json").is_file():
            self.state = _saved_state(checkpoint)
            model_config = model_config.model_copy(update={"path": checkpoint / "model"})
        # Trained in torch, in fp32 with float linear layers: int8 ones (model.quantize) have no gradients to learn
        # with, and an OpenVINO vision tower converted before training would not learn at all.
        model_config = model_config.model_copy(update={"dtype": "float32", "quantize": None, "backend": "torch",
                                                       "device": str(torch_device(model_config).type)})
        device = torch_device(model_config)
        self.device = device
        self.detector = Florence2Detector(model_config)
        self.model, self.processor = self.detector.model, self.detector.processor
        try:  # made only once the model loads: a run that cannot start leaves nothing behind
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise cannot_write("fine-tuned model", out, exc) from None
        self.autocast = device.type == "cuda" and torch.cuda.is_bf16_supported()
        if self.tune.freeze_vision:
            for p in self.model.model.vision_tower.parameters():
                p.requires_grad = False
        if self.tune.lora:
            self._wrap_lora(checkpoint)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=self.tune.learning_rate)
        if (checkpoint / "optimizer.pt").is_file():
            with _damaged(checkpoint):
                self.optimizer.load_state_dict(torch.load(checkpoint / "optimizer.pt", map_location=device))

    def _wrap_lora(self, checkpoint: Path) -> None:
        try:
            from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
        except ImportError:
            raise StreamerError("finetune.lora needs the peft package: pip install peft") from None
        lora = LoraConfig(r=self.tune.lora_rank, lora_alpha=2 * self.tune.lora_rank, lora_dropout=0.05,
                          target_modules=["q_proj", "k_proj", "v_proj", "out_proj"])
        self.model = get_peft_model(self.model, lora)
        if (checkpoint / "adapter.pt").is_file():
            with _damaged(checkpoint):
                set_peft_model_state_dict(self.model, torch.load(checkpoint / "adapter.pt", map_location=self.device))

    def evaluate(self, samples: list[Sample]) -> Report:
        self.model.eval()
        return evaluate(self.detector, Dataset(self.dataset.classes, samples), self.config.model.batch_size)

    def loss(self, batch: list[Example]) -> torch.Tensor:
        inputs = self.processor(text=[task for _, task in batch],
                                images=[s.image[..., ::-1].copy() for s, _ in batch], return_tensors="pt", padding=True)
        labels = self.processor.tokenizer([target_text(s, self.dataset.classes, task) for s, task in batch],
                                          return_tensors="pt", padding=True, return_token_type_ids=False)["input_ids"]
        labels[labels == self.processor.tokenizer.pad_token_id] = -100
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            return self.model(**inputs, labels=labels.to(self.device)).loss

    def run(self) -> tuple[Report, Report]:
        """Train the epochs left; return the evaluation (on the validation images, or all) before and after."""
        held_out = self.val or self.train
        if self.state["before"] is None:
            self.state["before"] = asdict(self.evaluate(held_out))
        bs = self.tune.batch_size
        train = examples(self.train)
        steps = math.ceil(len(train) / bs)
        try:
            for epoch in range(self.state["epoch"], self.tune.epochs):
                self.model.train()
                order = np.random.default_rng(self.tune.seed + epoch).permutation(len(train))
                for step in range(steps):
                    batch = [train[i] for i in order[step * bs : (step + 1) * bs]]
                    loss = self.loss(batch)
                    self.optimizer.zero_grad()
                    loss.backward()
                    self.optimizer.step()
                    if self.on_step is not None:
                        self.on_step(epoch, step + 1, steps, float(loss.detach()))
                self.state["epoch"] = epoch + 1
                self.state["val_loss"] = self.validation_loss(examples(held_out))
                self.checkpoint()
        except KeyboardInterrupt:
            self.checkpoint()
            raise Stopped(f"interrupted after {self.state['epoch']} epochs; run the same command to resume") from None
        self.save_final()
        shutil.rmtree(self.out / _CHECKPOINT.split("/")[0], ignore_errors=True)  # a finished model needs none
        return Report.from_dict(self.state["before"]), self.evaluate(held_out)

    @torch.no_grad()
    def validation_loss(self, held_out: list[Example]) -> float:
        self.model.eval()
        losses = [float(self.loss(held_out[i : i + self.tune.batch_size]))
                  for i in range(0, len(held_out), self.tune.batch_size)]
        return float(np.mean(losses)) if losses else float("nan")

    def checkpoint(self) -> None:
        """The model (or its adapters), the optimiser and where training stands, replacing the last one whole."""
        final = self.out / _CHECKPOINT
        tmp = final.with_name("last.partial")
        try:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            if self.tune.lora:
                from peft import get_peft_model_state_dict

                save_tensors(get_peft_model_state_dict(self.model), tmp / "adapter.pt")
                base = self.model.get_base_model()
                base.save_pretrained(tmp / "model")  # the base weights, as loaded (LoRA leaves them alone)
            else:
                self.model.save_pretrained(tmp / "model")
            self.processor.save_pretrained(tmp / "model")
            save_tensors(self.optimizer.state_dict(), tmp / "optimizer.pt")
            (tmp / "state.json").write_text(json.dumps(self.state))
            shutil.rmtree(final, ignore_errors=True)
            tmp.rename(final)
        except (OSError, SafetensorError) as exc:  # safetensors says a full disk its own way
            shutil.rmtree(tmp, ignore_errors=True)
            raise cannot_write("checkpoint", final, exc) from None

    def save_final(self) -> None:
        """The trained model (LoRA merged) as a `save_pretrained` folder; `config.json` is moved in last, so OUT
        never holds half a model that loads."""
        model = self.model.merge_and_unload() if self.tune.lora else self.model
        self.model = model
        self.detector.model = model
        tmp = self.out / ".final.partial"
        try:
            shutil.rmtree(tmp, ignore_errors=True)
            model.save_pretrained(tmp)
            self.processor.save_pretrained(tmp)
            names = sorted(p.name for p in tmp.iterdir())
            for name in [n for n in names if n != "config.json"] + ["config.json"]:
                os.replace(tmp / name, self.out / name)
            tmp.rmdir()
        except (OSError, SafetensorError) as exc:  # safetensors says a full disk its own way
            shutil.rmtree(tmp, ignore_errors=True)
            raise cannot_write("fine-tuned model", self.out, exc) from None


def save_tensors(obj, path: Path) -> None:
    """`torch.save`, its failed writes as the OSErrors they are: torch's zip writer says a full disk as a
    RuntimeError ("[enforce fail at inline_container.cc] ... unexpected pos", "file write failed")."""
    try:
        torch.save(obj, path)
    except RuntimeError as exc:
        if not any(words in str(exc) for words in ("unexpected pos", "write failed", "inline_container")):
            raise
        full = shutil.disk_usage(path.parent).free < 1 << 20
        code = errno.ENOSPC if full else errno.EIO
        raise OSError(code, os.strerror(code), str(path)) from None


def finetune(config: Config, dataset_path: Path, out: Path, on_step=None) -> tuple[Report, Report, bool]:
    """Validate everything, train, save; return the evaluation before and after, and whether it was on images
    held out of training."""
    out = Path(out)
    check_out(out)
    dataset = load_dataset(dataset_path)  # with a single image, it is both trained and scored on
    trainer = Trainer(config, dataset, out, on_step)
    return *trainer.run(), bool(trainer.val)
