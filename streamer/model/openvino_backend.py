"""Florence-2's vision tower on OpenVINO (`model.backend: openvino`), for the Intel CPUs and iGPUs cameras run on.

On a CPU the vision tower and its projector are about half a keyframe (Florence-2-base at 64 tokens: 4 s of 8 s
on a 2-core machine; more where answers are short), so that is the part converted: from the checkpoint as loaded
(a user's fine-tuned folder the same as a hub model) with OpenVINO's own converter, once, and kept in a cache
keyed by the checkpoint's files, the OpenVINO version and the settings that change the converted model. The text encoder and the decoder stay in torch, which
keeps every task, batching, per-box confidences and the shared image features exactly as they are.
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

from streamer.config import ModelConfig
from streamer.errors import StreamerError, first_line
from streamer.interrupts import held_back

log = logging.getLogger("streamer.openvino")

_FORMAT = 1  # what is converted and how: a change here makes every cached model stale
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


class _Vision(torch.nn.Module):
    """Pixels in, the projected image features the text encoder takes in place of its image tokens out."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model.get_image_features(pixel_values).pooler_output


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


class OpenVinoVision:
    """The converted vision tower, compiled for one OpenVINO device; called as `get_image_features` is."""

    def __init__(self, compiled, dtype: torch.dtype) -> None:
        self.compiled = compiled
        self.dtype = dtype

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        out = self.compiled(pixels.to(torch.float32).numpy())[0]
        return torch.from_numpy(np.ascontiguousarray(out)).to(self.dtype)

    @classmethod
    def load(cls, model, config: ModelConfig, size: tuple[int, int], opened: tuple) -> "OpenVinoVision":
        """Converted from `model` (the loaded torch checkpoint) or read from the cache; compiled for the device
        `open_device` found. A model that cannot be converted or run there is one StreamerError."""
        ov, core, device = opened
        folder = checkpoint_folder(config)
        key = cache_key(config, folder, size, ov.__version__)
        place = cache_root(config) / key
        converted = _read(core, place)
        if converted is None:
            # said whatever the log level: the first start waits for it (about a minute for Florence-2-base)
            log.warning("converting the vision tower to OpenVINO, once for this checkpoint (kept in %s)", place)
            converted = _convert(ov, model, config, size)
            _keep(ov, converted, place, config)
        properties = {}
        if device.startswith("CPU") and config.dtype in ("auto", "float32"):
            properties["INFERENCE_PRECISION_HINT"] = "f32"  # the same answers as torch (CPUs with bf16 default to it)
        try:
            compiled = core.compile_model(converted, device, properties)
        except RuntimeError as exc:
            raise StreamerError(f"OpenVINO cannot run the vision model on '{device}': {first_line(exc, 300)}") from None
        return cls(compiled, next(model.parameters()).dtype if _is_half(model) else torch.float32)


def _read(core, place: Path):
    """The cached model, or None (none yet, or one damaged: converted again)."""
    xml = place / "vision.xml"
    if not xml.is_file():
        return None
    try:
        return core.read_model(xml)
    except RuntimeError as exc:
        log.warning("the converted vision model in %s cannot be read (%s); converting it again", place,
                    first_line(exc, 300))
        shutil.rmtree(place, ignore_errors=True)  # the cache's own folder, named by its key
        return None


def _convert(ov, model, config: ModelConfig, size: tuple[int, int]):
    """OpenVINO's converter on the loaded checkpoint (float32: the cache holds one model whatever torch ran)."""
    vision = _Vision(model).eval()
    height, width = size[1], size[0]
    example = torch.zeros(1, 3, height, width)
    try:
        with torch.inference_mode(), warnings.catch_warnings():  # the tracer's notes are for torch's developers
            warnings.simplefilter("ignore")
            converted = ov.convert_model(copy.deepcopy(vision).float() if _is_half(model) else vision,
                                         example_input=example,
                                         input=[ov.PartialShape([-1, 3, height, width])])
    except Exception as exc:  # noqa: BLE001 - the converter's own errors have no common type
        raise StreamerError(f"OpenVINO cannot convert this model's vision tower ({first_line(exc, 300)}); "
                            "set model.backend: torch") from None
    if config.quantize == "int8":
        try:
            import nncf
        except ImportError:
            raise StreamerError("model.quantize int8 with model.backend openvino needs NNCF: pip install nncf, or "
                                "leave model.quantize unset") from None
        nncf.set_log_level(logging.WARNING)
        with contextlib.redirect_stdout(io.StringIO()):  # its tables and progress bars: not in a JSON answer
            converted = nncf.compress_weights(converted)  # int8 weights, activations as they are
    return converted


def _is_half(model) -> bool:
    return next(model.parameters()).dtype in (torch.float16, torch.bfloat16)


def _keep(ov, converted, place: Path, config: ModelConfig) -> None:
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
        ov.save_model(converted, staging / "vision.xml", compress_to_fp16=config.dtype in ("float16", "bfloat16"))
        os.replace(staging, place)
    except OSError as exc:
        if not (place / "vision.xml").is_file():  # another process put it there first: theirs is as good
            log.warning("cannot keep the converted model in %s (%s): it is converted again at every start",
                        place, exc.strerror or exc)
    except RuntimeError as exc:  # OpenVINO's own words for a failed write (a full disk)
        log.warning("cannot keep the converted model in %s (%s): it is converted again at every start", place,
                    first_line(exc, 300))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
