"""One validated configuration for a run: YAML file, then command-line overrides.

Every section forbids unknown keys, so a typo in a config file is an error, not a silent default.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from streamer.errors import StreamerError
from streamer.tasks import CAPTION_TASKS, PROMPT_MAX, TASKS, check_task

DEFAULT_MODEL_ID = "florence-community/Florence-2-base"
_OPENVINO_DEVICE = re.compile(r"^(CPU|GPU(\.\d+)?|NPU|AUTO)$")


DAY_S = 86400.0  # the longest wait or timeout any setting may ask for: no thread can wait longer than it can count


class _Section(BaseModel):
    # No infinity or NaN anywhere: `.inf` in a YAML file is a float, and a thread told to wait that long dies.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class ModelConfig(_Section):
    """Which Florence-2 to load and how to run it. `task`/`prompt` are the one-task shorthand for `schedule`."""

    id: str = DEFAULT_MODEL_ID
    path: Path | None = Field(default=None, description="Local checkpoint folder; wins over `id` when set.")
    backend: Literal["torch", "openvino"] = Field(
        default="torch", description="openvino: the whole model converted to OpenVINO (Intel CPUs and iGPUs).")
    device: str = Field(default="auto", description="auto, cpu or cuda; with backend openvino: CPU, GPU, NPU or AUTO.")
    openvino_cache: Path | None = Field(
        default=None, description="Where converted models are kept (default: ~/.cache/streamer/openvino).")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    task: str = "<OD>"
    prompt: str | None = None
    batch_size: int = Field(default=4, ge=1, le=256)
    max_wait_ms: float = Field(default=0.0, ge=0, le=60_000, description="How long a batch waits for more keyframes.")
    max_new_tokens: int = Field(default=256, ge=1, le=4096)
    num_beams: int = Field(default=1, ge=1, le=16)
    min_confidence: float = Field(default=0.0, ge=0, le=1, description="Boxes below this confidence are dropped.")
    compile: bool = Field(default=False, description="torch.compile the model (CUDA; slow first keyframes).")
    quantize: Literal["int8"] | None = Field(
        default=None, description="int8: dynamic int8 linear layers on the CPU (faster; answers may shift a little).")
    object_share: float = Field(default=0.25, ge=0, le=0.9,
                                description="Of a source's model calls, the share per-object questions may take.")
    trust_remote_code: bool = False

    @field_validator("task")
    @classmethod
    def _known_task(cls, task: str) -> str:
        return check_task(task)

    @model_validator(mode="after")
    def _device_of_backend(self) -> "ModelConfig":
        if self.backend == "torch" and self.device not in ("auto", "cpu", "cuda"):
            hint = " (an OpenVINO device: set model.backend: openvino)" if _OPENVINO_DEVICE.match(self.device) else ""
            raise ValueError(f"device '{self.device}' is not auto, cpu or cuda{hint}")
        if self.backend == "openvino":
            if not (_OPENVINO_DEVICE.match(self.device) or self.device in ("auto", "cpu")):
                raise ValueError(f"device '{self.device}' is not one of OpenVINO's: CPU, GPU (GPU.0, GPU.1 ...), NPU, "
                                 "AUTO")
            if self.compile:
                raise ValueError("compile is torch's: leave it off with backend openvino")
        return self

    @model_validator(mode="after")
    def _quantize_on_cpu(self) -> "ModelConfig":
        if self.quantize and self.device == "cuda":
            raise ValueError("quantize: int8 is for the CPU (dynamic int8 kernels); on a GPU leave it unset")
        if self.quantize and self.compile:
            raise ValueError("choose one of quantize and compile")
        return self


class TaskEntry(_Section):
    """One task of the schedule: what to run, on which keyframes, and optionally only inside a zone."""

    task: str
    prompt: str | None = None
    every_n_keyframes: int = Field(default=1, ge=1)
    every_s: float | None = Field(default=None, gt=0, le=DAY_S,
                                  description="At most once per this many seconds of video.")
    zone: tuple[float, float, float, float] | None = Field(
        default=None, description="x1, y1, x2, y2 in pixels, or relative to the frame when all are <= 1."
    )

    watch_min_confidence: float | None = Field(
        default=None, ge=0, le=1, description="A watch: boxes of this grounding at this confidence or above that a "
        "track confirms are `phrase_seen` events (one per track), and the task makes no other events.")

    @field_validator("task")
    @classmethod
    def _known_task(cls, task: str) -> str:
        return check_task(task)

    @field_validator("zone")
    @classmethod
    def _ordered_zone(cls, zone):
        return _checked_zone(zone)

    @model_validator(mode="after")
    def _prompt_matches_task(self) -> "TaskEntry":
        _check_prompt(self.task, self.prompt, "a prompt")
        return self


def _checked_zone(zone):
    if zone is not None and (zone[2] <= zone[0] or zone[3] <= zone[1] or min(zone) < 0):
        raise ValueError("a zone is x1, y1, x2, y2 with x2 > x1, y2 > y1, none negative")
    if zone is not None:
        _finite([zone[:2], zone[2:]])
    return zone


class WatchEntry(_Section):
    """A phrase a source watches for (`watch:`, `--watch`): grounded every few keyframes, within its zone; a box
    a track confirms is one `phrase_seen` event per track."""

    phrase: str = Field(min_length=1, max_length=PROMPT_MAX, description="What to watch for, e.g. \"person with a ladder\".")
    every_n_keyframes: int = Field(default=5, ge=1, description="Grounded on every n-th keyframe.")
    every_s: float | None = Field(default=None, gt=0, le=DAY_S, description="At most once per this many seconds.")
    zone: tuple[float, float, float, float] | None = Field(default=None, description="As a schedule entry's.")
    min_confidence: float = Field(default=0.3, ge=0, le=1, description="The confidence a box needs.")

    @field_validator("phrase")
    @classmethod
    def _words(cls, phrase: str) -> str:
        phrase = " ".join(phrase.split())
        if not phrase:
            raise ValueError("a watch needs a phrase: what to look for")
        return phrase

    @field_validator("zone")
    @classmethod
    def _ordered_zone(cls, zone):
        return _checked_zone(zone)

    def entry(self) -> TaskEntry:
        return TaskEntry(task="<CAPTION_TO_PHRASE_GROUNDING>", prompt=self.phrase,
                         every_n_keyframes=self.every_n_keyframes, every_s=self.every_s, zone=self.zone,
                         watch_min_confidence=self.min_confidence)


class SamplerConfig(_Section):
    """When a frame becomes a keyframe. The first frame always is.

    A frame is a keyframe when `every_n_frames` frames have passed since the last one, or when the scene
    changed by more than `scene_threshold`; `max_fps` caps either trigger.
    """

    every_n_frames: int | None = Field(default=10, ge=1)
    max_fps: float | None = Field(default=5.0, ge=0.001, le=1000)
    scene_threshold: float | None = Field(default=0.12, gt=0, le=1)
    scene_size: int = Field(default=64, ge=8, le=512, description="Width of the grey thumbnail the scene test uses.")


class TrackerConfig(_Section):
    """How keyframe detections become tracks (see `tracker.py`): boxes followed between keyframes by optical flow,
    matched in ByteTrack's two stages."""

    min_hits: int = Field(default=2, ge=1, description="Keyframes a box must be seen on before its track is confirmed.")
    confirm_at: float = Field(default=0.7, ge=0, le=1, description="A detection this sure starts a confirmed track "
                              "at once (its id from its first keyframe); a weaker one waits for min_hits keyframes.")
    lost_after_s: float = Field(
        default=2.0, gt=0, le=DAY_S,
        description="A track ends (object_left) when unseen this long, on at least as many answered keyframes as "
                    "this spans at the keyframe rate: a slow model never ends a track that is there.")
    min_iou: float = Field(default=0.3, ge=0, le=1,
                           description="Overlap of a detection with a track's predicted box to match it.")
    activation_threshold: float = Field(default=0.25, ge=0, le=1,
                                        description="Confidence a detection needs to start a track.")

    @model_validator(mode="before")
    @classmethod
    def _no_kind(cls, data):
        if isinstance(data, dict) and "kind" in data:
            raise ValueError("tracker.kind was removed: streamer has one tracker, made for sparse keyframes "
                             "(remove the line)")
        return data


class OutputConfig(_Section):
    """Where results go. Unset paths land in a new folder under `dir` named after the source."""

    dir: Path = Path("runs")
    video: Path | None = None
    events: Path | None = None
    db: Path | None = Field(default=None, description="SQLite event store; default: events.db beside the log.")
    tracks: Path | None = Field(default=None, description="The tracks of every frame (JSONL); default: tracks.jsonl "
                                                          "in the run folder, or <log>.tracks.jsonl beside --events.")
    write_tracks: bool = True
    write_video: bool = True
    write_db: bool = True
    save_keyframes: bool = Field(default=False, description="Keep keyframe JPEGs and detections for export.")
    codec: str = "libx264"
    preset: str = "veryfast"
    crf: int = Field(default=23, ge=0, le=51)


Point = tuple[float, float]


class _Area(_Section):
    """Shared by zones and lines: coordinates in pixels, or relative to the frame when all are <= 1."""

    name: str = Field(max_length=64, pattern=r"^[A-Za-z0-9._ -]+$")
    labels: list[str] | None = Field(default=None, description="Only tracks of these labels; null: all.")
    sources: list[str] | None = Field(default=None, description="Only on these sources (names); null: all.")


class ZoneConfig(_Area):
    polygon: list[Point] = Field(min_length=3)

    @field_validator("polygon")
    @classmethod
    def _has_area(cls, polygon: list[Point]) -> list[Point]:
        _finite(polygon)
        twice_area = sum(x1 * y2 - x2 * y1 for (x1, y1), (x2, y2) in zip(polygon, polygon[1:] + polygon[:1]))
        if abs(twice_area) < 1e-9:
            raise ValueError("a zone's polygon must enclose an area (its points are all on one line)")
        return polygon


class LineConfig(_Area):
    start: Point
    end: Point

    @model_validator(mode="after")
    def _has_length(self) -> "LineConfig":
        _finite([self.start, self.end])
        if self.start == self.end:
            raise ValueError("a line's start and end must differ")
        return self


def _check_url(url: str, schemes: tuple[str, ...], what: str) -> None:
    """Refused at start, before anything waits in an outbox for a place it can never go."""
    try:
        parts = urlsplit(url)
        ok = parts.scheme in schemes and bool(parts.hostname) and (parts.port is None or parts.port > 0)
    except ValueError:  # a port that is no number, a broken [IPv6] host
        ok = False
    if not ok:
        shown = url.split("://", 1)[0] + "://..." if "://" in url else "it"
        raise ValueError(f"{what} URL must be {' or '.join(s + '://HOST[:PORT]' for s in schemes)}, got {shown}")


def _finite(points: list[Point]) -> None:
    """Pixels (or shares of the frame): no picture is a million pixels wide, and a point beyond that overflows
    the integer drawing and zone tests use."""
    if not all(math.isfinite(v) and abs(v) <= 1e6 for point in points for v in point):
        raise ValueError("coordinates must be numbers within +-1,000,000 (pixels, or shares of the frame <= 1)")


def _check_prompt(task: str, prompt: str | None, how: str) -> None:
    """A task that takes text needs it; one that does not must not be given any (it would be ignored)."""
    if TASKS[task].needs_prompt and not prompt:
        raise ValueError(f"task {task} needs {how}")
    if prompt and not TASKS[task].needs_prompt:
        raise ValueError(f"task {task} takes no prompt (tasks that do: "
                         + ", ".join(t for t, spec in TASKS.items() if spec.needs_prompt) + ")")
    if prompt and len(prompt) > PROMPT_MAX:
        raise ValueError(f"{how} is {len(prompt)} characters; a task takes at most {PROMPT_MAX} (a phrase, not a page)")


class EventsConfig(_Section):
    """What turns tracks into events beyond appear/leave: OCR consensus, zones, lines, snapshots."""

    ocr_min_votes: int = Field(default=3, ge=1, description="Reads of the same text before text_read.")
    ocr_window: int = Field(default=10, ge=1, description="Recent reads per track that vote.")
    snapshots: bool = Field(default=False, description="JPEG crop for object_appeared and text_read.")
    zones: list[ZoneConfig] = Field(default_factory=list)
    lines: list[LineConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _votes_fit_window(self) -> "EventsConfig":
        if self.ocr_min_votes > self.ocr_window:
            raise ValueError("ocr_min_votes cannot exceed ocr_window")
        return self


class ObjectsConfig(_Section):
    """Questions about each tracked object, on a crop of the full frame (see `questions.py`). Labels: the track
    labels asked about; "*" for every label."""

    describe: list[str] = Field(default_factory=list, description="Labels whose tracks are described.")
    read: list[str] = Field(default_factory=list, description="Labels whose tracks are read until their text settles.")
    describe_task: Literal[CAPTION_TASKS] = "<CAPTION>"
    margin: float = Field(default=0.1, ge=0, le=1, description="Crop margin around the box, in box sizes.")
    better_view: float | None = Field(
        default=2.0, gt=1, le=1e6, description="Describe a track again when its view is this many times the one it was "
        "described on (box area in the picture, halved while cut by the frame's edge); null: once.")


class LiveConfig(_Section):
    """Camera streams (RTSP and other URLs): timeouts, reconnects, and the newest-frame-wins queue."""

    rtsp_transport: Literal["tcp", "udp"] = "tcp"
    open_timeout_s: float = Field(default=5.0, gt=0, le=3600, description="Give up an attempt to connect after this.")
    read_timeout_s: float = Field(default=5.0, gt=0, le=3600, description="A source silent this long is down.")
    backoff_initial_s: float = Field(default=0.5, gt=0, le=3600)
    backoff_max_s: float = Field(default=10.0, gt=0, le=DAY_S, description="Reconnect attempts wait at most this long.")
    max_retries: int | None = Field(default=None, ge=0, description="Reconnects before giving up; null: forever.")
    queue_size: int = Field(default=4, ge=1, description="Frames held for a live source; older ones are dropped.")
    hold_frames: int = Field(default=50, ge=0, description="A camera's frames held behind its keyframe with the model, "
                             "so the video and tracks file show that keyframe's answer; past this many, the oldest "
                             "goes out with the boxes predicted on it (the live view never waits).")
    status_interval_s: float = Field(default=5.0, gt=0, le=DAY_S,
                                     description="Seconds between status lines on the console.")


class SourceConfig(_Section):
    """A named source. The name is used in events, file names and status lines instead of the URL."""

    url: str
    name: str | None = Field(default=None, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    live: bool | None = Field(default=None, description="Camera (true) or file (false). Default: guessed; files "
                              "and URLs whose media has an end are files, RTSP and endless streams are cameras.")


class MqttConfig(_Section):
    """Events as JSON on `<topic_prefix>/<source>/events` (QoS 1), availability with a last will, retained state."""

    url: str | None = Field(default=None, description="mqtt://[user:pass@]host:port")
    topic_prefix: str = Field(default="streamer", description="Topic levels before <source>/events.")
    client_id: str | None = None
    keepalive_s: int = Field(default=30, ge=5)
    queue_max: int = Field(default=10_000, ge=1, description="Events kept on disk while the broker is away.")
    discovery: bool = Field(default=True, description="Home Assistant MQTT discovery: each camera a device.")
    discovery_prefix: str = Field(default="homeassistant", pattern=r"^[^#+]+$",
                                  description="Home Assistant's discovery prefix.")

    @field_validator("url")
    @classmethod
    def _mqtt_url(cls, url: str | None) -> str | None:
        if url is not None:
            _check_url(url, ("mqtt", "mqtts"), "the MQTT")
        return url

    @field_validator("topic_prefix")
    @classmethod
    def _no_wildcards(cls, prefix: str) -> str:
        if not prefix.strip("/") or any(c in prefix for c in "#+\x00"):
            raise ValueError("a topic prefix is one or more topic levels, without the wildcards # and +")
        return prefix


class WebhookConfig(_Section):
    """Each event POSTed as JSON to every URL, retried with backoff, optionally signed with HMAC-SHA256."""

    urls: list[str] = Field(default_factory=list)

    @field_validator("urls")
    @classmethod
    def _http_urls(cls, urls: list[str]) -> list[str]:
        for url in urls:
            _check_url(url, ("http", "https"), "a webhook")
        return urls
    secret: str | None = Field(default=None, description="Signs each body: X-Streamer-Signature: sha256=<hex>.")
    timeout_s: float = Field(default=5.0, gt=0, le=3600)
    backoff_max_s: float = Field(default=30.0, gt=0, le=DAY_S)
    queue_max: int = Field(default=10_000, ge=1)


class HttpAuth(_Section):
    """Who may see the cameras over HTTP: a token, or a user with a password hash (`streamer password`)."""

    token: str | None = Field(default=None, min_length=16, description="A secret of 16 characters or more: "
                              "`Authorization: Bearer <token>`, or typed on the page's login.")
    user: str | None = Field(default=None, min_length=1)
    password_hash: str | None = Field(default=None, description="What `streamer password` prints (scrypt).")

    @model_validator(mode="after")
    def _something(self) -> "HttpAuth":
        from streamer.auth import valid_hash

        if (self.user is None) != (self.password_hash is None):
            raise ValueError("user and password_hash go together")
        if self.password_hash is not None and not valid_hash(self.password_hash):
            raise ValueError("password_hash is not one `streamer password` prints (scrypt$<salt>$<hash>)")
        if self.token is None and self.user is None:
            raise ValueError("give a token, or a user and a password_hash")
        return self


class HttpConfig(_Section):
    """A small HTTP server: /metrics, /healthz, /sources/<name>/mjpeg and a live page at /."""

    listen: str | None = Field(default=None, description="HOST:PORT, or PORT alone for 127.0.0.1; null: off.")
    auth: HttpAuth | None = Field(default=None, description="Credentials every request needs; needed to listen "
                                  "beyond this machine (a host that is not loopback).")
    metrics_public: bool = Field(default=False, description="/metrics and /healthz without credentials (scrapers).")

    @model_validator(mode="after")
    def _private_or_signed_in(self) -> "HttpConfig":
        from streamer.auth import is_loopback

        if self.listen is not None and self.auth is None and not is_loopback(self.listen.rsplit(":", 1)[0]):
            raise ValueError(f"{self.listen} serves beyond this machine: set http.auth (a token, or a user and a "
                             "password hash from `streamer password`) first, or listen on 127.0.0.1")
        return self

    @field_validator("listen")
    @classmethod
    def _host_port(cls, listen: str | None) -> str | None:
        if listen is None:
            return None
        host, sep, port = str(listen).rpartition(":")
        if not sep:
            host = "127.0.0.1"
        if not port.isdigit() or not 0 <= int(port) <= 65535 or not host.strip("[]"):
            raise ValueError(f"'{listen}' is not HOST:PORT (or PORT) with a port from 0 to 65535")
        return f"{host}:{int(port)}"
    mjpeg_fps: float = Field(default=10.0, gt=0, le=60)


class ClusterConfig(_Section):
    """Run on a Ray cluster: one actor per source (reader to sinks, next to the camera or file) and model worker
    actors that batch the keyframes of every source they serve."""

    address: str | None = Field(default=None, description="null: one process; 'local': the cluster running on this "
                                "machine (or RAY_ADDRESS's), else a Ray instance of the run's own; 'auto', "
                                "HOST:PORT or ray://HOST:PORT: an existing cluster.")
    workers: int | None = Field(default=None, ge=1, description="Model worker actors; null: one per "
                                "gpus_per_worker GPUs of the cluster, or one without GPUs.")
    gpus_per_worker: float = Field(default=1.0, gt=0, le=1024, description="Used when the cluster has GPUs.")
    cpus_per_worker: float = Field(default=1.0, ge=0, le=1024)
    cpus_per_source: float = Field(default=1.0, ge=0, le=1024,
                                   description="Decoding, tracking and encoding of one source.")
    max_restarts: int = Field(default=3, ge=0, description="Restarts of a killed source or worker actor.")
    restart_timeout_s: float = Field(default=30.0, gt=0, le=DAY_S, description="A model worker that answers "
                                     "nothing for this long (restarting, its node gone) counts as lost: its "
                                     "sources' keyframes move to another worker.")
    shrink_keyframes: bool = Field(default=True, description="Send keyframes to workers at the model's input size.")


class SourceRetention(_Section):
    """One camera's own retention, within its store's."""

    retain_days: float | None = Field(default=None, gt=0, le=36500, description="Its footage older than this goes.")
    retain_gb: float | None = Field(default=None, ge=0.001, le=1e6, description="Its footage at most this much.")


class RecordConfig(_Section):
    """Recordings of cameras: the stream as it arrives, copied into segments (no decode, no encode), indexed in the
    event store, pruned by age and size. Segments go to `recordings/<source>/` beside the store."""

    enabled: bool = Field(default=True, description="Record every camera; a file on disk is indexed as its own "
                                                      "recording (a link, never a copy, never deleted).")
    segment_s: float = Field(default=10.0, ge=1, le=3600, description="Seconds a segment holds; cut on keyframes.")
    retain_days: float = Field(default=3.0, gt=0, le=36500, description="Footage older than this is deleted.")
    retain_gb: float = Field(default=20.0, gt=0, le=1e6, description="All footage of a store together at most.")
    events_retain_days: float = Field(default=14.0, gt=0, le=36500,
                                      description="Footage around events (pre_s before, post_s after) is kept this long.")
    pre_s: float = Field(default=5.0, ge=0, le=3600, description="Footage kept and clipped before an event.")
    post_s: float = Field(default=5.0, ge=0, le=3600, description="Footage kept and clipped after an event.")
    min_free_gb: float = Field(default=1.0, ge=0, le=1e6,
                               description="Below this much free disk the oldest footage goes first, so "
                                           "recording never stops on a full disk.")
    sources: dict[str, SourceRetention] = Field(default_factory=dict,
                                                description="Per camera, by name: its own retain_days and retain_gb.")

    @model_validator(mode="after")
    def _holds_a_segment(self) -> "RecordConfig":
        days = [("retain_days", self.retain_days), ("events_retain_days", self.events_retain_days)] + [
            (f"sources.{name}.retain_days", own.retain_days) for name, own in self.sources.items() if own.retain_days]
        for name, value in days:
            if value * 86400 < self.segment_s:
                raise ValueError(f"{name} ({value} days) cannot hold one segment of segment_s ({self.segment_s:g} s)")
        if self.retain_gb * 1e9 < 1e6:
            raise ValueError(f"retain_gb ({self.retain_gb} GB) cannot hold one segment: give it 0.001 (1 MB) "
                             "or more")
        return self


class PipelineConfig(_Section):
    """Queue bounds between the stages, and how a shared model's time is given to cameras."""

    frame_queue: int = Field(default=32, ge=1)
    max_pending_frames: int = Field(default=256, ge=1)
    still_change: float = Field(default=0.02, ge=0, le=1, description=(
        "A camera whose picture changed less than this since its last keyframe (mean absolute difference of the "
        "sampler's grey thumbnail, 0..1) and that holds no track is still: its keyframes wait behind other "
        "cameras' (0: no camera is ever still)."))
    still_wait_s: float = Field(default=2.0, ge=0, le=DAY_S, description=(
        "The longest a still camera's keyframe waits behind others: the floor rate at which a still camera is "
        "still asked, however busy the model is."))


class FinetuneConfig(_Section):
    """How `streamer finetune` trains Florence-2 on a labelled dataset (see `finetune.py`)."""

    epochs: int = Field(default=10, ge=1, le=1000)
    learning_rate: float = Field(default=1e-5, gt=0, le=1)
    batch_size: int = Field(default=2, ge=1, le=256)
    val_share: float = Field(default=0.1, ge=0, lt=1, description="Share of the images kept out for validation.")
    freeze_vision: bool = Field(default=True, description="Train the language side only (small datasets).")
    lora: bool = Field(default=False, description="Train LoRA adapters (peft) and merge them at the end.")
    lora_rank: int = Field(default=8, ge=1, le=256)
    seed: int = Field(default=0, ge=0, le=2**32 - 1, description="The split and the shuffling's seed.")


class Config(_Section):
    model: ModelConfig = ModelConfig()
    schedule: list[TaskEntry] = Field(default_factory=list, description="Tasks per keyframe; empty: model.task.")
    watch: list[WatchEntry] = Field(default_factory=list, description="Phrases every source watches for.")
    sampler: SamplerConfig = SamplerConfig()
    tracker: TrackerConfig = TrackerConfig()
    finetune: FinetuneConfig = FinetuneConfig()
    objects: ObjectsConfig = ObjectsConfig()
    events: EventsConfig = EventsConfig()
    output: OutputConfig = OutputConfig()
    live: LiveConfig = LiveConfig()
    sources: list[SourceConfig] = Field(default_factory=list, description="Sources to run when none are given.")
    mqtt: MqttConfig = MqttConfig()
    webhooks: WebhookConfig = WebhookConfig()
    http: HttpConfig = HttpConfig()
    cluster: ClusterConfig = ClusterConfig()
    pipeline: PipelineConfig = PipelineConfig()
    record: RecordConfig = RecordConfig()

    @model_validator(mode="after")
    def _check_shorthand(self) -> "Config":
        if not self.schedule:
            _check_prompt(self.model.task, self.model.prompt, "a prompt (model.prompt or --prompt)")
        return self

    def tasks(self) -> list[TaskEntry]:
        """The schedule (or the one task of `model.task` on every keyframe), then the watches."""
        main = list(self.schedule) or [TaskEntry(task=self.model.task, prompt=self.model.prompt)]
        return main + [watch.entry() for watch in self.watch]


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"])
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        return f"unknown key '{where}'"
    return f"{where}: {msg}" if where else msg


def load_config(path: Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Read YAML (if given), apply dotted-key overrides such as {"model.task": "<OCR>"}, validate once."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise StreamerError(f"config file not found: {path}")
        if not path.is_file():  # a pipe would be waited on forever, a folder cannot be read
            raise StreamerError(f"config {path} is not a regular file")
        if path.stat().st_size > 1_000_000:
            raise StreamerError(f"config {path}: {path.stat().st_size} bytes is far more than any config holds")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise StreamerError(f"config {path}: not UTF-8 text (is it a YAML file?)") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            raise StreamerError(f"config {path}: not valid YAML{where}") from None
        except RecursionError:
            raise StreamerError(f"config {path}: nested too deeply to be a config") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise StreamerError(f"config {path}: expected a mapping of sections, got {type(loaded).__name__}")
        data = loaded or {}
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        node = data
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise StreamerError(f"config: '{key}' must be a mapping")
        node[leaf] = value
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        origin = f"config {path}" if path is not None else "config"
        raise StreamerError(f"{origin}: {_first_error(exc)}") from None
