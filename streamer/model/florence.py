"""Florence-2 through transformers' native classes: loading from a hub id or a folder, and keyframes to detections.

Loading never hangs offline: a hub id is tried from the local cache first, and the hub is contacted only when
it answers at all; otherwise the user gets one line naming the model and how to point `model.path` at a folder.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
import time
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import supervision as sv
import torch
from safetensors import SafetensorError

from streamer.config import ModelConfig
from streamer.errors import StreamerError, first_line
from streamer.interrupts import held_back
from streamer.model.confidence import align, answer_confidence, box_groups
from streamer.records import TEXT, FrameDetections, Keyframe
from streamer.tasks import TASKS

log = logging.getLogger("streamer.model.florence")

_HUB_TIMEOUT_S = 3.0
# Florence-2's markup, which a text answer never keeps (a region task echoes its region's <loc_N>; a small or
# fine-tuned model may emit location tokens anywhere).
_MARKUP = re.compile(r"<\s*/?\s*(?:loc_\d*|poly|sep|s|pad)\s*>|<loc_\d*")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise StreamerError("device 'cuda' was asked for, but torch sees no CUDA GPU; use --device cpu or auto")
    return torch.device(name)


def torch_device(config: ModelConfig) -> torch.device:
    """Where torch runs the model: with the OpenVINO backend torch has the text side, on the CPU."""
    return torch.device("cpu") if config.backend == "openvino" else resolve_device(config.device)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """fp32 on CPU (half precision is slow there); bf16 on GPUs that have it, else fp16."""
    if name != "auto":
        return getattr(torch, name)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def _on_hub(model_id: str) -> bool | None:
    """Whether the hub has `model_id` (True / False), or None when no answer of the hub's own comes within a
    few seconds. Asked through huggingface_hub's own client, so HF_ENDPOINT, proxies and tokens apply as they do
    for the download itself (whose client would retry for about half a minute before giving up)."""
    from huggingface_hub import model_info
    from huggingface_hub.errors import RepositoryNotFoundError

    try:
        model_info(model_id, timeout=_HUB_TIMEOUT_S)
    except RepositoryNotFoundError:
        return False
    except Exception:  # noqa: BLE001 - refused, timed out, a proxy's error page: all mean no answer from the hub
        return None
    return True


def _offline_error(model_id: str) -> StreamerError:
    return StreamerError(
        f"model '{model_id}' is not in the local cache and the hub cannot be reached; download it once on a "
        f"connected machine, or set model.path (or --model) to a local folder holding a Florence-2 checkpoint"
    )


def _cached(model_id: str) -> bool:
    """Whether the hub's cache holds `model_id` (its config.json), asked without importing transformers."""
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(model_id, "config.json"), str)
    except Exception:  # noqa: BLE001 - an id the cache cannot even name: transformers says what is wrong with it
        return True


def _on_hub_or_refuse(model_id: str) -> None:
    """Return only when the hub has `model_id`; else the one line saying it has not, or cannot be asked."""
    found = None if os.environ.get("HF_HUB_OFFLINE") == "1" else _on_hub(model_id)
    if found is False:
        raise StreamerError(f"model '{model_id}' was not found on the hub")
    if found is None:
        raise _offline_error(model_id)


def load_florence(config: ModelConfig, device: torch.device, dtype: torch.dtype):
    """Return (model, processor) from `config.path` or `config.id`, or raise one clear StreamerError. A folder that
    cannot hold a model, or a model neither cached nor on a reachable hub, is said before transformers is even
    imported (seconds a user with a typo waits for nothing)."""
    cached = True
    if config.path is not None:
        _check_folder(Path(config.path).expanduser())
    elif not _cached(config.id):
        _on_hub_or_refuse(config.id)
        cached = False
    with held_back():
        from transformers import AutoProcessor, Florence2ForConditionalGeneration
        from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    kwargs = {"trust_remote_code": config.trust_remote_code}

    def _load(ref: str, local_only: bool):
        model = Florence2ForConditionalGeneration.from_pretrained(
            ref, dtype=dtype, local_files_only=local_only, attn_implementation="sdpa", **kwargs
        )
        processor = AutoProcessor.from_pretrained(ref, local_files_only=local_only, **kwargs)
        return model, processor

    if config.path is not None:
        folder = Path(config.path).expanduser()
        try:
            with warnings.catch_warnings():  # torch's note on a pickle's protocol: the refusal below says it all
                warnings.simplefilter("ignore")
                model, processor = _load(str(folder), True)
        except SafetensorError:
            raise StreamerError(f"cannot load a Florence-2 model from {folder}: its weights file is corrupt or cut "
                                "short") from None
        except pickle.UnpicklingError:
            raise StreamerError(f"cannot load a Florence-2 model from {folder}: its weights file is a pickle that "
                                "holds more than weights (refused unread: it could run code); use a safetensors "
                                "checkpoint") from None
        except RuntimeError as exc:
            if "mismatched" not in str(exc) and "size mismatch" not in str(exc):
                raise
            raise StreamerError(f"cannot load a Florence-2 model from {folder}: its weights do not fit its "
                                "config.json (layers of other sizes): the two are of different models") from None
        except (OSError, ValueError, KeyError, AttributeError, TypeError) as exc:  # transformers' ways of saying no
            raise StreamerError(f"cannot load a Florence-2 model from {folder}: {first_line(exc)}") from None
    else:
        try:
            model, processor = _load(config.id, cached)  # cached: from the cache; else downloaded now
        except OSError:
            if cached:  # a cache that holds less than it said: the hub is asked as for a model not cached
                _on_hub_or_refuse(config.id)
            try:
                model, processor = _load(config.id, False)
            except OSError:
                raise _offline_error(config.id) from None
    model = model.to(device).eval()
    if config.backend == "openvino":  # converted as it is (int8 by OpenVINO's own tools)
        return model, processor
    if config.quantize == "int8":
        model = _quantized(model, device)
    elif device.type == "cpu":
        _pick_output_layer(model)
    return model, processor


def rows_first(head: torch.nn.Linear):
    """The output layer's forward computed as weight @ rows^T for a few rows (the same numbers)."""

    def forward(x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1])
        if not 2 <= len(rows) <= 64:
            return torch.nn.functional.linear(x, head.weight, head.bias)
        out = torch.mm(head.weight, rows.t()).t()
        if head.bias is not None:
            out = out + head.bias
        return out.reshape(*x.shape[:-1], -1)

    return forward


def _pick_output_layer(model) -> None:
    """Decoding several prompts side by side on a CPU spends much of each step in the output layer (51,289
    words x 768, 158 MB in fp32), and some BLAS builds run a few rows through it several times faster as
    weight @ rows^T than as rows @ weight^T (this project's CPUs: 10 ms against 25 ms for two rows). Time both
    once on two rows and keep the faster; on a GPU, or when it is no faster, nothing changes."""
    head = model.get_output_embeddings()
    if not isinstance(head, torch.nn.Linear):
        return
    rows = torch.randn(2, head.in_features, dtype=head.weight.dtype)
    first = rows_first(head)

    def best(fn) -> float:
        times = []
        for _ in range(3):
            started = time.perf_counter()
            fn(rows)
            times.append(time.perf_counter() - started)
        return min(times)

    with torch.inference_mode():
        if best(first) < 0.8 * best(head.forward):
            head.forward = first


def _quantized(model, device: torch.device):
    """Every linear layer with int8 weights, activations quantized on the fly (PyTorch's dynamic quantization):
    a quarter of the weight memory to stream per generated token, which is what bounds decoding on a CPU."""
    if device.type != "cpu":
        log.warning("model.quantize int8 runs on the CPU only; the model stays as it is on %s", device.type)
        return model
    with warnings.catch_warnings():  # torch.ao's eager API is marked for migration to torchao, and still works
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)


def _check_folder(folder: Path) -> None:
    """What a Florence-2 checkpoint folder must hold, said in words before transformers says it in a traceback."""
    if not (folder / "config.json").is_file():
        what = "does not exist" if not folder.exists() else "holds no config.json"
        raise StreamerError(f"model folder {folder} {what}; point model.path at a saved Florence-2 checkpoint")
    try:
        kind = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("model_type")
    except (ValueError, UnicodeDecodeError, AttributeError):
        raise StreamerError(f"model folder {folder}: config.json is not a model's JSON config") from None
    if kind != "florence2":
        raise StreamerError(f"model folder {folder} holds a '{kind}' model, not Florence-2")
    bad = _impossible_sizes(json.loads((folder / "config.json").read_text(encoding="utf-8")))
    if bad:
        raise StreamerError(f"model folder {folder}: config.json gives {bad}: sizes and counts must be whole "
                            "numbers above 0 (a damaged or hand-edited config)")
    if not any((folder / name).is_file() for name in ("tokenizer.json", "vocab.json")):
        raise StreamerError(f"model folder {folder} holds no tokenizer (tokenizer.json): save the processor with "
                            "the model (processor.save_pretrained)")


_SIZES = re.compile(r"(vocab_size|d_model|hidden_size|_layers|attention_heads|_ffn_dim|max_position_embeddings|"
                    r"max_temporal_embeddings|embed_dim|depths|num_groups|num_heads|patch_size|patch_stride|"
                    r"window_size|projection_dim|in_channels)$")


def _impossible_sizes(config, where: str = "") -> str | None:
    """The first size or count in a model's config (nested: text_config, vision_config) that no model can be built
    with, as `name is value`; torch's own words for it are an assertion deep in a layer's constructor."""
    if not isinstance(config, dict):
        return None
    for key, value in config.items():
        name = f"{where}{key}"
        if isinstance(value, dict):
            found = _impossible_sizes(value, f"{name}.")
            if found:
                return found
        elif _SIZES.search(key) and value is not None:
            values = value if isinstance(value, list) else [value]
            if not values or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values):
                return f"{name} {json.dumps(value)}"
    return None


class Florence2Detector:
    """Runs a batch of keyframes in one `generate` call and parses the answers; tasks and prompts may differ
    within a batch (one keyframe's tasks go together: its image once, its prompts decoded side by side).

    Each keyframe's image is preprocessed and goes through the vision tower once, however many tasks run on it:
    its image features are kept (a small cache keyed by frame and zone) and merged into each task's prompt, so
    a second task on a keyframe costs its text encoder and decoder only. Prompts are tokenised once per prompt.
    """

    _PIXEL_CACHE = 64
    _FEATURE_CACHE = 16  # Florence-2-base: 577 x 768 floats (1.8 MB) a keyframe

    def __init__(self, config: ModelConfig, loaded: tuple | None = None, **generate_kwargs) -> None:
        """`loaded`: a (model, processor) pair already in memory (fine-tuning evaluates the model it trains)."""
        self.config = config
        self.device = torch_device(config)
        self.dtype = resolve_dtype(config.dtype, self.device)
        opened = None
        if config.backend == "openvino":  # OpenVINO and its device checked before the model loads
            from streamer.model.openvino_backend import open_device

            opened = open_device(config)
        self.model, self.processor = loaded or load_florence(config, self.device, self.dtype)
        self.generate_kwargs = generate_kwargs
        tokenizer = self.processor.tokenizer
        locs = [f"<loc_{i}>" for i in range(1000)]
        self._loc_bins = dict(zip(tokenizer.convert_tokens_to_ids(locs), range(1000)))
        self._ignore = {tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id}
        self._pixels: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self._features: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self._prompts: dict[str, list[int]] = {}
        size = self.processor.image_processor.size
        self.input_size = (size["width"], size["height"])  # what a remote source shrinks keyframes to
        self.openvino = None  # the converted model, when OpenVINO runs it
        if opened is not None:
            from streamer.model.openvino_backend import OpenVinoFlorence

            self.openvino = OpenVinoFlorence.load(self.model, config, self.input_size, opened)
            self.openvino.take_over(self.model)
        if config.compile:
            self.model.forward = torch.compile(self.model.forward, dynamic=True)

    @staticmethod
    def _image_key(keyframe: Keyframe) -> tuple:
        frame = keyframe.frame
        return frame.source, frame.index, keyframe.zone, keyframe.frame_size  # a shrunk copy is another image

    def forget_images(self) -> None:
        """Drop the cached pixels and features (benchmarks: each call sees new frames, as in a stream)."""
        self._pixels.clear()
        self._features.clear()

    def image_features(self, keyframes: list[Keyframe]) -> torch.Tensor:
        """The vision tower's features of each keyframe's image, computed once (in one batch for those new)."""
        keys = [self._image_key(k) for k in keyframes]
        new = {key: k for key, k in zip(keys, keyframes) if key not in self._features}
        if new:
            pixels = torch.cat([self.pixel_values(k) for k in new.values()]).to(self.device, self.dtype)
            features = (self.openvino.vision(pixels) if self.openvino else
                        self.model.get_image_features(pixels).pooler_output)
            for i, key in enumerate(new):
                self._features[key] = features[i : i + 1]
        out = torch.cat([self._features[key] for key in keys])
        for key in keys:
            self._features.move_to_end(key)
        while len(self._features) > self._FEATURE_CACHE:
            self._features.popitem(last=False)
        return out

    def pixel_values(self, keyframe: Keyframe) -> torch.Tensor:
        key = self._image_key(keyframe)
        frame = keyframe.frame
        cached = self._pixels.get(key)
        if cached is None:
            image = frame.image
            if keyframe.zone is not None and keyframe.frame_size is None:
                x1, y1, x2, y2 = keyframe.zone
                image = image[y1:y2, x1:x2]
            rgb = np.ascontiguousarray(image[..., ::-1])  # BGR -> RGB, once
            cached = self.processor.image_processor(images=[rgb], return_tensors="pt")["pixel_values"]
            self._pixels[key] = cached
            if len(self._pixels) > self._PIXEL_CACHE:
                self._pixels.popitem(last=False)
        return cached

    def prompt_ids(self, prompt: str) -> list[int]:
        """Token ids exactly as `Florence2Processor` builds them: image tokens, <s>, the task's question, </s>."""
        ids = self._prompts.get(prompt)
        if ids is None:
            tok = self.processor.tokenizer
            question = self.processor._construct_prompts([prompt])[0]
            text = tok.image_token * self.processor.num_image_tokens + tok.bos_token + question + tok.eos_token
            ids = tok(text, add_special_tokens=False)["input_ids"]
            room = self.model.config.text_config.max_position_embeddings
            if len(ids) > room:  # past the encoder's positions: an IndexError deep in torch otherwise
                raise StreamerError(f"the prompt {prompt[:40]!r}... is {len(ids)} tokens with the image's; this model "
                                    f"takes {room}: give it fewer words")
            self._prompts[prompt] = ids
        return ids

    def inputs(self, keyframes: list[Keyframe]) -> dict[str, torch.Tensor]:
        prompts = [k.task + (k.prompt or "") for k in keyframes]
        text = self.processor.tokenizer.pad(
            {"input_ids": [self.prompt_ids(p) for p in prompts]}, padding="longest", return_tensors="pt"
        )
        pixels = torch.cat([self.pixel_values(k) for k in keyframes])
        return {
            "input_ids": text["input_ids"].to(self.device),
            "attention_mask": text["attention_mask"].to(self.device),
            "pixel_values": pixels.to(self.device, self.dtype),
        }

    def encoded(self, keyframes: list[Keyframe]) -> dict:
        """The text encoder's output for the prompts, each keyframe's (cached) image features in place of its
        image tokens: what `generate` builds from pixels, without running the vision tower again."""
        prompts = [k.task + (k.prompt or "") for k in keyframes]
        text = self.processor.tokenizer.pad(
            {"input_ids": [self.prompt_ids(p) for p in prompts]}, padding="longest", return_tensors="pt"
        )
        ids = text["input_ids"].to(self.device)
        embeds = self.model.get_input_embeddings()(ids)
        features = self.image_features(keyframes).to(embeds.device, embeds.dtype)
        mask = (ids == self.model.config.image_token_id).unsqueeze(-1).expand_as(embeds)
        attention = text["attention_mask"].to(self.device)
        encoder = self.openvino.encoder if self.openvino else self.model.get_encoder()
        outputs = encoder(inputs_embeds=embeds.masked_scatter(mask, features), attention_mask=attention)
        return {"encoder_outputs": outputs, "attention_mask": attention}

    @torch.inference_mode()
    def detect(self, keyframes: list[Keyframe]) -> list[FrameDetections]:
        if not keyframes:
            return []
        out = self.model.generate(
            **self.encoded(keyframes),
            max_new_tokens=self.config.max_new_tokens,
            num_beams=self.config.num_beams,
            do_sample=False,
            output_scores=True,
            return_dict_in_generate=True,
            **self.generate_kwargs,
        )
        beam_indices = getattr(out, "beam_indices", None) if self.config.num_beams > 1 else None
        logprobs = self.model.compute_transition_scores(out.sequences, out.scores, beam_indices, normalize_logits=True)
        results = []
        for keyframe, sequence, scores in zip(keyframes, out.sequences.tolist(), logprobs.float().tolist()):
            ids = sequence[1:]  # the first is the decoder start token, which has no score
            text = self.processor.tokenizer.decode(sequence, skip_special_tokens=False)
            result = parse_answer(keyframe, text, self.processor, Answer(ids, scores, self._loc_bins, self._ignore))
            det = result.detections
            if self.config.min_confidence > 0 and len(det):
                result.detections = det[det.confidence >= self.config.min_confidence]
            results.append(result)
        return results


@dataclass(frozen=True)
class Answer:
    """The generated tokens with their log-probabilities, for per-box confidence."""

    ids: list[int]
    logprobs: list[float]
    loc_bins: dict[int, int]
    ignore: set[int]


def parse_answer(keyframe: Keyframe, text: str, processor, answer: Answer | None = None) -> FrameDetections:
    """Turn Florence-2's raw answer into detections in frame pixels (or frame-level text)."""
    frame_w, frame_h = keyframe.frame_size or keyframe.frame.image.shape[1::-1]
    x0, y0 = (keyframe.zone[0], keyframe.zone[1]) if keyframe.zone else (0, 0)
    width, height = (keyframe.zone[2] - x0, keyframe.zone[3] - y0) if keyframe.zone else (frame_w, frame_h)
    task = TASKS[keyframe.task]
    text = text.replace("<pad>", "")
    parsed = processor.post_process_generation(text, task=task.token, image_size=(width, height))
    if task.kind == "text":  # region tasks echo the region's <loc_N> tokens; they are no text
        answer_text = _plain(parsed[task.token])
        return FrameDetections(keyframe, _empty(), text=answer_text)
    detections = sv.Detections.from_vlm(sv.VLM.FLORENCE_2, parsed, resolution_wh=(width, height))
    n = len(detections)
    names = detections.data.get("class_name")
    texts = [""] * n
    if task.kind == "ocr":
        texts, names = list(names if names is not None else texts), ["text"] * n
    elif names is None or task.kind == "polygons":
        names = [_plain(keyframe.prompt or "") or task.token.strip("<>").lower()] * n  # a region: the task's name
    # a label or a region's words never keep Florence-2's markup (a stray <loc_N> inside "car<loc_200>STOP")
    detections.data["class_name"] = np.array([_plain(x) for x in names], dtype=object)
    detections.data[TEXT] = np.array([_plain(x) for x in texts], dtype=object)
    if answer is not None:
        detections.confidence = _confidences(detections, task.kind, answer, processor, (width, height))
    if keyframe.zone is not None:
        _to_frame(detections, x0, y0, frame_w, frame_h)
    # A box with no width or no height (a malformed answer: [384, 36, 512, 36]) is nothing seen, nor is one whose
    # label was markup only.
    if len(detections):
        x1, y1, x2, y2 = detections.xyxy.T
        named = detections.data["class_name"] != ""
        detections = detections[(x2 - x1 >= 1) & (y2 - y1 >= 1) & named]
    return FrameDetections(keyframe, detections)


def _plain(text) -> str:
    return " ".join(_MARKUP.sub(" ", str(text)).split())


def _confidences(detections: sv.Detections, kind: str, answer: Answer, processor, size) -> np.ndarray:
    fallback = answer_confidence(answer.ids, answer.logprobs, answer.ignore)
    n = len(detections)
    if kind == "polygons" or n == 0:
        return np.full(n, fallback, dtype=np.float32)
    group = 8 if kind == "ocr" else 4
    parsed = detections.data["xyxyxyxy"].reshape(n, 8) if kind == "ocr" else detections.xyxy
    walked = box_groups(answer.ids, answer.logprobs, answer.loc_bins, answer.ignore, group)
    if walked:
        bins = torch.tensor([b for b, _ in walked]).reshape(-1, 2 if group == 8 else 4)
        pixels = processor.post_processor.dequantize(bins, size=size).reshape(len(walked), group).tolist()
        walked = [(p, c) for p, (_, c) in zip(pixels, walked)]
    return np.array(align(parsed, walked, fallback), dtype=np.float32)


def _to_frame(detections: sv.Detections, x0: int, y0: int, frame_w: int, frame_h: int) -> None:
    """Move detections found in a zone crop back to frame coordinates."""
    detections.xyxy = detections.xyxy + np.array([x0, y0, x0, y0], dtype=detections.xyxy.dtype)
    if "xyxyxyxy" in detections.data:
        detections.data["xyxyxyxy"] = detections.data["xyxyxyxy"] + np.array([x0, y0], dtype=np.float32)
    if detections.mask is not None:
        crop_h, crop_w = detections.mask.shape[1:]
        full = np.zeros((len(detections), frame_h, frame_w), dtype=bool)
        full[:, y0 : y0 + crop_h, x0 : x0 + crop_w] = detections.mask
        detections.mask = full


def _empty() -> sv.Detections:
    detections = sv.Detections.empty()
    detections.data["class_name"] = np.array([], dtype=object)
    detections.data[TEXT] = np.array([], dtype=object)
    return detections
