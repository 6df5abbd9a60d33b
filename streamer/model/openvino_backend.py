"""Florence-2 on OpenVINO (`model.backend: openvino`), for the Intel CPUs and iGPUs cameras run on.

The whole model is converted (vision tower and projector, text encoder, decoder; see `openvino_graphs`) from the
checkpoint as loaded, a user's fine-tuned folder the same as a hub model, with OpenVINO's own converter, once, and
kept in a cache keyed by the checkpoint's files, the OpenVINO version and the settings that change the converted
model. transformers' `generate` still drives decoding around the converted step, so every task, batching, beams,
per-box confidences and the shared image features are exactly as with torch; on an iGPU (`device: GPU`) nothing
of the model is left on the CPU but the token embedding and the search.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from transformers.cache_utils import DynamicCache, EncoderDecoderCache
from transformers.modeling_outputs import BaseModelOutput, Seq2SeqLMOutput

from streamer.config import ModelConfig
from streamer.errors import StreamerError, first_line
from streamer.interrupts import held_back
from streamer.model.openvino_graphs import NAMES, convert, layout

log = logging.getLogger("streamer.openvino")

_FORMAT = 2  # what is converted and how: a change here makes every cached model stale
_WEIGHTS = ("*.safetensors", "*.bin", "*.pt", "*.pth")


def openvino_device(name: str) -> str:
    """The OpenVINO device a `model.device` names: its own names as they are, `auto`/`cpu` as AUTO/CPU."""
    return {"auto": "AUTO", "cpu": "CPU"}.get(name, name)


def cache_root(config: ModelConfig) -> Path:
    if config.openvino_cache is not None:
        return Path(config.openvino_cache).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "streamer" / "openvino"


def checkpoint_folder(config: ModelConfig) -> Path | None:
    """The folder the checkpoint was loaded from: `model.path`, or the hub cache's snapshot of `model.id`."""
    if config.path is not None:
        return Path(config.path).expanduser().resolve()
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(config.id, "config.json")
    # the snapshot's folder (named by the revision; its files are links into the cache's blobs, not resolved)
    return Path(found).parent if isinstance(found, str) else None


def cache_key(config: ModelConfig, folder: Path | None, size: tuple[int, int], version: str) -> str:
    """Changes with the checkpoint's weights (their names, sizes and times), the OpenVINO version, the image size
    and the settings that shape the converted model; nothing else."""
    files = sorted(
        (p.name, p.stat().st_size, p.stat().st_mtime_ns)
        for pattern in _WEIGHTS for p in (folder.glob(pattern) if folder is not None else ())
    )
    described = {"format": _FORMAT, "openvino": version, "folder": str(folder), "files": files, "size": size,
                 "quantize": config.quantize, "dtype": config.dtype, "id": config.id if folder is None else None}
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:20]


def open_device(config: ModelConfig) -> tuple:
    """(the openvino module, its Core, the device to compile for) as `model.device` names it, checked before any
    model loads: a missing OpenVINO or a device this machine lacks is one StreamerError naming what to do."""
    try:
        with held_back():  # a Ctrl-C inside a C++ extension's import kills the process (see interrupts)
            import openvino as ov
    except ImportError:
        raise StreamerError("model.backend openvino needs OpenVINO: pip install openvino (or streamer[openvino]), "
                            "or set model.backend: torch") from None
    core = ov.Core()
    device = openvino_device(config.device)
    there = core.available_devices
    if device == "AUTO" and there == ["CPU"]:
        device = "CPU"  # nothing to choose: the CPU, with the settings `load` gives it
    if device != "AUTO" and device not in there and not (device == "GPU" and any(d.startswith("GPU") for d in there)):
        raise StreamerError(f"OpenVINO device '{device}' is not on this machine (it has: {', '.join(there)}); "
                            "set model.device to one of them, or AUTO")
    return ov, core, device


class OpenVinoFlorence:
    """The converted model compiled for one OpenVINO device, called where the torch model's parts would be: the
    vision tower as `get_image_features`, the text encoder as `get_encoder()`, and a decoding step as the model's
    `forward` is by `generate` (whose cache keeps the keys and values, so beams reorder them as they do in torch)."""

    def __init__(self, compiled: dict, dtype: torch.dtype, layers: int, heads: int, head: int) -> None:
        self.requests = {name: compiled[name].create_infer_request() for name in NAMES}
        self.dtype, self.layers, self.heads, self.head = dtype, layers, heads, head

    def _run(self, name: str, *inputs: torch.Tensor) -> list[torch.Tensor]:
        arrays = [np.ascontiguousarray(x.numpy() if x.dtype == torch.long else x.to(torch.float32).numpy())
                  for x in inputs]
        out = self.requests[name].infer(arrays, share_inputs=True)
        return [torch.from_numpy(out[i]) for i in range(len(out))]  # copies: the request's buffers are reused

    def vision(self, pixels: torch.Tensor) -> torch.Tensor:
        return self._run("vision", pixels)[0].to(self.dtype)

    def encoder(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor) -> BaseModelOutput:
        return BaseModelOutput(last_hidden_state=self._run("encoder", inputs_embeds, attention_mask)[0])

    def forward(self, decoder_input_ids: torch.Tensor, encoder_outputs=None, attention_mask=None, cache=None,
                **_) -> Seq2SeqLMOutput:
        """What `generate` asks the model for at each step: the logits of the tokens given (one a row once the
        cache holds the start), the cache grown by their keys and values."""
        if cache is None:
            cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        mine, theirs = cache.self_attention_cache, cache.cross_attention_cache
        rows = decoder_input_ids.shape[0]
        if theirs.get_seq_length() == 0:
            keys_values = self._run("cross", encoder_outputs[0])
            for i in range(self.layers):
                theirs.update(keys_values[2 * i], keys_values[2 * i + 1], i)
                cache.is_updated[i] = True
        cross = [x for layer in theirs.layers[: self.layers] for x in (layer.keys, layer.values)]
        mask = attention_mask if attention_mask is not None else torch.ones(encoder_outputs[0].shape[:2],
                                                                            dtype=torch.long)
        logits = []
        for t in range(decoder_input_ids.shape[1]):
            seen = mine.get_seq_length()
            past = ([x for layer in mine.layers[: self.layers] for x in (layer.keys, layer.values)] if seen else
                    [torch.zeros(rows, self.heads, 0, self.head)] * (2 * self.layers))
            out = self._run("decoder", decoder_input_ids[:, t : t + 1], torch.full((rows, 1), seen), mask.long(),
                            *past, *cross)
            for i in range(self.layers):
                mine.update(out[1 + 2 * i], out[2 + 2 * i], i)
            logits.append(out[0])
        return Seq2SeqLMOutput(logits=torch.cat(logits, 1), cache=cache)

    def take_over(self, model) -> None:
        """`model` decodes through the converted step from now on, and lets go of its own copies of what was
        converted, which nothing runs any more (Florence-2-base: 190 M of its 231 M parameters). What stays is what
        `generate` and the prompt's embedding use: the config, the token embedding and the output layer tied to it."""
        model.forward = self.forward
        inner = model.model
        inner.vision_tower = inner.multi_modal_projector = None
        for part in (inner.language_model.encoder, inner.language_model.decoder):
            part.layers = torch.nn.ModuleList()

    @classmethod
    def load(cls, model, config: ModelConfig, size: tuple[int, int], opened: tuple) -> "OpenVinoFlorence":
        """Converted from `model` (the loaded torch checkpoint) or read from the cache; compiled for the device
        `open_device` found. A model that cannot be converted or run there is one StreamerError."""
        ov, core, device = opened
        folder = checkpoint_folder(config)
        key = cache_key(config, folder, size, ov.__version__)
        place = cache_root(config) / key
        converted = _read(core, place)
        if converted is None:
            # said whatever the log level: the first start waits for it (about a minute for Florence-2-base)
            log.warning("converting the model to OpenVINO, once for this checkpoint (kept in %s)", place)
            converted = _convert(ov, model, config, size)
            _keep(ov, converted, place, config)
        properties = compile_properties(device, config)
        compiled = {}
        for name in NAMES:
            try:
                compiled[name] = core.compile_model(converted[name], device, properties)
            except RuntimeError as exc:
                raise StreamerError(f"OpenVINO cannot run the model's {name} on '{device}': "
                                    f"{first_line(exc, 300)}") from None
        layers, heads, head, _ = layout(model)
        return cls(compiled, next(model.parameters()).dtype if _is_half(model) else torch.float32, layers, heads, head)


def compile_properties(device: str, config: ModelConfig) -> dict:
    """What the CPU is told when it runs the model (AUTO passes it on to its CPU).

    - Separate operations for attention, not OpenVINO's fused attention kernels ("snippets"): in OpenVINO 2026.4
      on an AVX2 CPU these give wrong numbers once the keys are 8 or more long with lengths left free, as the
      decoder's cache is (logits off by 5 at the 8th token; measured, and as fast without them).
    - fp32, for the same answers as torch, unless `model.dtype` asks for half (CPUs with bf16 default to it).
    """
    cpu = {"SNIPPETS_MODE": "DISABLE"}
    if config.dtype in ("auto", "float32"):
        cpu["INFERENCE_PRECISION_HINT"] = "f32"
    if device.startswith("CPU"):
        return cpu
    return {"DEVICE_PROPERTIES": {"CPU": cpu}} if device == "AUTO" else {}


def _read(core, place: Path) -> dict | None:
    """The cached graphs by name, or None (none yet, or one missing or damaged: all converted again)."""
    if not _whole(place):
        return None
    try:
        return {name: core.read_model(place / f"{name}.xml") for name in NAMES}
    except RuntimeError as exc:
        log.warning("the converted model in %s cannot be read (%s); converting it again", place, first_line(exc, 300))
        shutil.rmtree(place, ignore_errors=True)  # the cache's own folder, named by its key
        return None


def _whole(place: Path) -> bool:
    return all((place / f"{name}.xml").is_file() for name in NAMES)


def _convert(ov, model, config: ModelConfig, size: tuple[int, int]) -> dict:
    """OpenVINO's converter on the loaded checkpoint (float32: the cache holds one model whatever torch ran)."""
    try:
        with torch.inference_mode(), warnings.catch_warnings():  # the tracer's notes are for torch's developers
            warnings.simplefilter("ignore")
            converted = convert(ov, copy.deepcopy(model).float() if _is_half(model) else model, size)
    except Exception as exc:  # noqa: BLE001 - the converter's own errors have no common type
        raise StreamerError(f"OpenVINO cannot convert this model ({first_line(exc, 300)}); "
                            "set model.backend: torch") from None
    if config.quantize == "int8":
        try:
            import nncf
        except ImportError:
            raise StreamerError("model.quantize int8 with model.backend openvino needs NNCF: pip install nncf, or "
                                "leave model.quantize unset") from None
        nncf.set_log_level(logging.WARNING)
        with contextlib.redirect_stdout(io.StringIO()):  # its tables and progress bars: not in a JSON answer
            converted = {name: nncf.compress_weights(graph) for name, graph in converted.items()}  # int8 weights
    return converted


def _is_half(model) -> bool:
    return next(model.parameters()).dtype in (torch.float16, torch.bfloat16)


def _keep(ov, converted: dict, place: Path, config: ModelConfig) -> None:
    """Saved whole or not at all: written beside its place and renamed there; a cache that cannot be written is
    said once, and the model converted again at the next start."""
    try:
        place.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{place.name}.", dir=place.parent))
    except OSError as exc:
        log.warning("cannot keep the converted model in %s (%s): it is converted again at every start; set "
                    "model.openvino_cache to a folder that can be written", place.parent, exc.strerror or exc)
        return
    try:
        for name, graph in converted.items():
            ov.save_model(graph, staging / f"{name}.xml", compress_to_fp16=config.dtype in ("float16", "bfloat16"))
        os.replace(staging, place)
    except OSError as exc:
        if not _whole(place):  # another process put it there first: theirs is as good
            log.warning("cannot keep the converted model in %s (%s): it is converted again at every start",
                        place, exc.strerror or exc)
    except RuntimeError as exc:  # OpenVINO's own words for a failed write (a full disk)
        log.warning("cannot keep the converted model in %s (%s): it is converted again at every start", place,
                    first_line(exc, 300))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
