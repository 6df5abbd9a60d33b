"""Florence-2 through transformers' native classes: loading from a hub id or a folder, and keyframes to detections.

Loading never hangs offline: a hub id is tried from the local cache first, and the hub is contacted only when
it answers at all; otherwise the user gets one line naming the model and how to point `model.path` at a folder.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import supervision as sv
import torch

from streamer.config import ModelConfig
from streamer.errors import StreamerError
from streamer.records import FrameDetections, Keyframe
from streamer.tasks import TASKS

_HUB_TIMEOUT_S = 3.0


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise StreamerError("device 'cuda' was asked for, but torch sees no CUDA GPU; use --device cpu or auto")
    return torch.device(name)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """fp32 on CPU (half precision is slow there); bf16 on GPUs that have it, else fp16."""
    if name != "auto":
        return getattr(torch, name)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def _hub_reachable() -> bool:
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    parts = urlsplit(endpoint)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "", port), timeout=_HUB_TIMEOUT_S):
            return True
    except OSError:
        return False


def _offline_error(model_id: str) -> StreamerError:
    return StreamerError(
        f"model '{model_id}' is not in the local cache and the hub cannot be reached; download it once on a "
        f"connected machine, or set model.path (or --model) to a local folder holding a Florence-2 checkpoint"
    )


def load_florence(config: ModelConfig, device: torch.device, dtype: torch.dtype):
    """Return (model, processor) from `config.path` or `config.id`, or raise one clear StreamerError."""
    from transformers import AutoProcessor, Florence2ForConditionalGeneration
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    kwargs = {"trust_remote_code": config.trust_remote_code}

    def _load(ref: str, local_only: bool):
        model = Florence2ForConditionalGeneration.from_pretrained(
            ref, dtype=dtype, local_files_only=local_only, **kwargs
        )
        processor = AutoProcessor.from_pretrained(ref, local_files_only=local_only, **kwargs)
        return model, processor

    if config.path is not None:
        folder = Path(config.path).expanduser()
        if not (folder / "config.json").is_file():
            what = "does not exist" if not folder.exists() else "holds no config.json"
            raise StreamerError(f"model folder {folder} {what}; point model.path at a saved Florence-2 checkpoint")
        try:
            model, processor = _load(str(folder), True)
        except (OSError, ValueError, KeyError) as exc:
            raise StreamerError(f"cannot load a Florence-2 model from {folder}: {_first_line(exc)}") from None
    else:
        try:
            model, processor = _load(config.id, True)
        except OSError:
            if os.environ.get("HF_HUB_OFFLINE") == "1" or not _hub_reachable():
                raise _offline_error(config.id) from None
            try:
                model, processor = _load(config.id, False)
            except OSError as exc:
                if "not a valid model identifier" in str(exc) or "404" in str(exc):
                    raise StreamerError(f"model '{config.id}' was not found on the hub") from None
                raise _offline_error(config.id) from None
    return model.to(device).eval(), processor


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class Florence2Detector:
    """Runs one task on a batch of keyframes in one `generate` call and parses the answers."""

    def __init__(self, config: ModelConfig) -> None:
        self.config = config
        self.device = resolve_device(config.device)
        self.dtype = resolve_dtype(config.dtype, self.device)
        self.model, self.processor = load_florence(config, self.device, self.dtype)
        self.name = str(config.path) if config.path is not None else config.id

    @torch.inference_mode()
    def detect(self, keyframes: list[Keyframe]) -> list[FrameDetections]:
        if not keyframes:
            return []
        task = keyframes[0].task
        if any(k.task != task for k in keyframes):
            raise ValueError("a batch holds one task")
        prompts = [task + (f" {k.prompt}" if k.prompt else "") for k in keyframes]
        images = [np.ascontiguousarray(k.frame.image[..., ::-1]) for k in keyframes]  # BGR -> RGB
        inputs = self.processor(text=prompts, images=images, return_tensors="pt", padding="longest")
        inputs = inputs.to(self.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        generated = self.model.generate(
            **inputs,
            max_new_tokens=self.config.max_new_tokens,
            num_beams=self.config.num_beams,
            do_sample=False,
        )
        texts = self.processor.batch_decode(generated, skip_special_tokens=False)
        return [parse_answer(k, text, self.processor) for k, text in zip(keyframes, texts)]


def parse_answer(keyframe: Keyframe, text: str, processor) -> FrameDetections:
    """Turn Florence-2's raw answer into detections in source pixels (or frame-level text)."""
    height, width = keyframe.frame.image.shape[:2]
    task = TASKS[keyframe.task]
    parsed = processor.post_process_generation(text, task=task.token, image_size=(width, height))
    answer = parsed[task.token]
    if task.kind == "text":
        return FrameDetections(keyframe, _empty(), text=str(answer).strip())
    detections = sv.Detections.from_vlm(sv.VLM.FLORENCE_2, parsed, resolution_wh=(width, height))
    n = len(detections)
    names = detections.data.get("class_name")
    if task.kind == "ocr":
        detections.data["text"] = np.array(names if names is not None else [""] * n, dtype=object)
        names = ["text"] * n
    elif names is None or task.kind == "polygons":
        names = [keyframe.prompt or task.token.strip("<>").lower()] * n
    detections.data["class_name"] = np.array([str(x) for x in names], dtype=object)
    return FrameDetections(keyframe, detections)


def _empty() -> sv.Detections:
    detections = sv.Detections.empty()
    detections.data["class_name"] = np.array([], dtype=object)
    return detections
