"""The pipeline placed on a Ray cluster: one actor per source, model worker actors, and the driver.

A source actor holds what one process holds per source (reader, sampler, trackers, events, annotated video,
JSONL, SQLite, MQTT/webhooks), so outputs stay next to the camera or file and only keyframes cross to a model
worker (`streamer.remote`). Sources are spread over the workers in turn; each worker batches the keyframes of all
the sources it serves.

Faults: Ray restarts a killed actor (`cluster.max_restarts`) and retries the calls it had in hand. A worker's
keyframes are answered after its restart (`worker_restarted` in the log); one dead for good is replaced by the
next worker alive (`worker_lost`). A source actor that comes back redoes a file from its start, writing its log
and video again but delivering only the events its predecessor had not (the run is deterministic), or picks a
camera up where the last progress it posted left off: `source_down` / `source_up` around the frames it missed,
track ids after the last one, the video in a new segment beside the first.

Every source posts its stats and progress to a small `Board` actor about twice a second; the driver reads the
board for progress and status lines, and a restarted source reads its own last post to resume.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from pathlib import Path

from streamer.config import Config
from streamer.errors import StreamerError
from streamer.pipeline import RunStats, SourceSpec, _SourceRun
from streamer.reader import Reader
from streamer.records import SourceStatus
from streamer.remote import ModelWorker, RemoteModel, cause_of
from streamer.sources import display_name, guess_live, is_url, safe_name
from streamer.worker import Detector, load_detector

_POST_S = 0.5
_READY_TIMEOUT_S = 600.0  # a model load on a fresh node may download and compile for minutes
_STOP_TIMEOUT_S = 30.0


class Board:
    """Latest post of every source: its stats, the last frame it handled, the highest track id it issued."""

    def __init__(self) -> None:
        self.posts: dict[str, dict] = {}

    def post(self, key: str, post: dict) -> None:
        self.posts[key] = post

    def get(self, key: str) -> dict | None:
        return self.posts.get(key)

    def all(self) -> dict[str, dict]:
        return self.posts


def _logged(path: Path) -> tuple[int, int]:
    """(events, highest track id) in a log an earlier incarnation wrote; a half-written last line is cut off."""
    if not path.is_file():
        return 0, -1
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        with path.open("r+b") as f:
            f.truncate(end)
    events = [json.loads(line) for line in data[:end].splitlines() if line.strip()]
    return len(events), max((e["track_id"] for e in events if e.get("track_id") is not None), default=-1)


def _segment(path: Path | None) -> Path | None:
    """The first free `<stem>.partN<suffix>` beside `path`: a restarted camera's video goes on in a new file."""
    if path is None:
        return None
    n = 1
    while (candidate := path.with_name(f"{path.stem}.part{n}{path.suffix}")).exists():
        n += 1
    return candidate


class SourceActor:
    """The body of one source's actor. `open` runs once, so a bad path or URL fails before any model loads;
    `run` is retried by Ray on a restarted actor, which finds nothing opened and takes over from its
    predecessor."""

    def __init__(self, key: str, spec: SourceSpec, config: Config) -> None:
        self.key = key
        self.spec = spec
        self.config = config
        self.incarnation = uuid.uuid4().hex[:8]
        self.stop_event = threading.Event()
        self.run_: _SourceRun | None = None

    def open(self):
        self.run_ = _SourceRun(self.spec, self.config, self.stop_event, [])
        self.run_.open()
        return self.run_.stats.info

    def _take_over(self, board) -> _SourceRun:
        import ray

        post = ray.get(board.get.remote(self.key))
        logged, max_logged = _logged(self.spec.events_path)
        live = guess_live(self.spec.url, self.spec.live)
        if live is None:  # a URL whose media told the first incarnation; it tells this one the same
            probe = Reader(self.spec.url, live_config=self.config.live)
            probe.open()
            live = probe.live
            probe.stop()
        if not live:
            run = _SourceRun(self.spec, self.config, self.stop_event, [])
            run.replay = logged  # redone from the start: these are in the log, the store and elsewhere already
            return run
        resume = None
        if post is not None and post["frame"] is not None:
            index, pts, wall_time = post["frame"]
            resume = SourceStatus(post["stats"].source, "down", wall_time, pts, index, reason="source actor restarted")
        spec = dataclasses.replace(self.spec, video_path=_segment(self.spec.video_path))
        run = _SourceRun(spec, self.config, self.stop_event, [], resume=resume)
        run.append = True
        run.first_track_id = max(max_logged, post["max_track_id"] if post else -1) + 1
        return run

    def run(self, model: RemoteModel, board) -> RunStats:
        from streamer.delivery import event_senders

        if self.run_ is None:
            self.run_ = self._take_over(board)
            self.run_.open()
        run = self.run_
        name = safe_name(run.stats.source)
        senders = event_senders(self.config, self.config.output.dir / "outbox" / name, client_tag=name)
        run.event_observers += senders
        done = threading.Event()
        poster = threading.Thread(target=self._post_loop, args=(board, done), name="post", daemon=True)
        try:
            run.open_outputs({})
            poster.start()
            run.reader.start()
            run.run(model, None)
        finally:
            done.set()
            if poster.is_alive():
                poster.join(timeout=2)
            for sender in senders:
                sender.close()
        board.post.remote(self.key, self._post())
        return _slim(run.snapshot())

    def _post(self) -> dict:
        run = self.run_
        last = run.last_frame
        return {"stats": _slim(run.snapshot()), "incarnation": self.incarnation,
                "max_track_id": max(run.max_track_id, run.first_track_id - 1),
                "frame": None if last is None else (last.index, last.pts, last.wall_time)}

    def _post_loop(self, board, done: threading.Event) -> None:
        while not done.wait(_POST_S):
            board.post.remote(self.key, self._post())

    def stop(self) -> None:
        self.stop_event.set()


def _slim(stats: RunStats) -> RunStats:
    """The stats without the latency window, which only the local /metrics page reads."""
    return dataclasses.replace(stats, latencies=deque(maxlen=1))


class _RunView:
    """What the console reads of a source running elsewhere: its latest posted stats."""

    def __init__(self, stats: RunStats) -> None:
        self.stats = stats

    def snapshot(self) -> RunStats:
        return self.stats


class RayPipeline:
    """`Pipeline`'s interface on a Ray cluster: `run_many(specs, on_progress, duration_s)`, `stop()`, `runs`."""

    def __init__(self, config: Config, make_detector: Callable[[], Detector] | None = None,
                 notify: Callable[[str], None] | None = None) -> None:
        """`make_detector` is sent to each worker actor (default: Florence-2 as `config.model` says); `notify`
        gets one line on the cluster once the actors are placed."""
        self.config = config
        self.make_detector = make_detector
        self.notify = notify
        self._stop = threading.Event()
        self.runs: list[_RunView] = []
        self.model_loaded = False
        self.workers: list = []  # Ray handles of the model worker actors, and of the source actors
        self.sources: list = []
        self._worker_up: list[bool] = []  # answered the last poll
        self._worker_seen: list[dict | None] = []  # the last answer ever
        self._worker_restarts: list[int] = []
        self._source_restarts: dict[str, int] = {}
        self._incarnations: dict[str, str] = {}
        self._started: dict[str, float] = {}  # source key -> when this driver first heard of it
        self._started_ray = False
        self.description = ""

    def stop(self) -> None:
        self._stop.set()

    # -- connecting and placing ----------------------------------------------------------------------------

    def _connect(self):
        try:
            import ray
        except ImportError:
            raise StreamerError("running on Ray needs the ray package: pip install 'streamer[ray]'") from None
        if not ray.is_initialized():
            address = self.config.cluster.address
            local = address in (None, "local")
            kwargs = {"include_dashboard": False} if local else {}
            try:
                ray.init(address=None if local else address, logging_level=logging.WARNING, namespace="streamer",
                         **kwargs)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                hint = ("" if local or address == "auto" else
                        " (a cluster with token authentication also needs RAY_AUTH_MODE=token and its token here)")
                raise StreamerError(f"cannot reach a Ray cluster at {address}: {_last_line(exc)}{hint}") from None
            self._started_ray = True
        return ray

    def _plan(self, ray, sources: int) -> tuple[int, float]:
        """How many model workers, with how many GPUs each; refuses what the cluster can never place."""
        cfg = self.config.cluster
        total = ray.cluster_resources()
        gpus, cpus = total.get("GPU", 0.0), total.get("CPU", 0.0)
        per_worker_gpu = cfg.gpus_per_worker if gpus else 0.0
        workers = cfg.workers or (max(1, int(gpus // cfg.gpus_per_worker)) if gpus else 1)
        need_cpu = sources * cfg.cpus_per_source + workers * cfg.cpus_per_worker
        if need_cpu > cpus + 1e-9:
            raise StreamerError(
                f"the Ray cluster has {cpus:g} CPUs, but {sources} sources x cluster.cpus_per_source "
                f"{cfg.cpus_per_source:g} + {workers} model workers x cluster.cpus_per_worker {cfg.cpus_per_worker:g} "
                f"need {need_cpu:g}: lower those, or add nodes")
        if workers * per_worker_gpu > gpus + 1e-9:
            raise StreamerError(f"the Ray cluster has {gpus:g} GPUs, but {workers} model workers x "
                                f"cluster.gpus_per_worker {per_worker_gpu:g} need more")
        nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
        self.description = (f"Ray cluster of {nodes} node{'s' * (nodes != 1)} ({cpus:g} CPUs, {gpus:g} GPUs): "
                            f"{sources} source actor{'s' * (sources != 1)}, {workers} model worker"
                            f"{'s' * (workers != 1)}" + (f" with {per_worker_gpu:g} GPU each" if gpus else " on CPU"))
        return workers, per_worker_gpu

    def run_many(self, specs: list[SourceSpec], on_progress=None, duration_s: float | None = None) -> list[RunStats]:
        ray = self._connect()
        cfg = self.config.cluster
        self.config = _absolute_paths(self.config)
        make_detector = self.make_detector or functools.partial(load_detector, self.config.model)
        actors: list = []
        try:
            specs = [_absolute(spec) for spec in specs]
            n_workers, gpus_each = self._plan(ray, len(specs))
            restarts = {"max_restarts": cfg.max_restarts, "max_task_retries": -1}
            board = ray.remote(Board).options(num_cpus=0).remote()
            actors.append(board)
            source_cls = ray.remote(SourceActor).options(num_cpus=cfg.cpus_per_source, max_concurrency=4, **restarts)
            self.sources = sources = [source_cls.remote(str(i), spec, self.config) for i, spec in enumerate(specs)]
            actors += sources
            infos = self._gather(ray, [s.open.remote() for s in sources], "open the sources")
            self.runs = [_RunView(RunStats(source=spec.name or display_name(spec.url), info=info)) for spec, info in
                         zip(specs, infos)]
            started = time.monotonic()
            model = self.config.model
            worker_cls = ray.remote(ModelWorker).options(num_cpus=cfg.cpus_per_worker, num_gpus=gpus_each,
                                                          max_concurrency=256, **restarts)
            self.workers = [worker_cls.remote(make_detector, model.batch_size, model.max_wait_ms)
                             for _ in range(n_workers)]
            actors += self.workers
            ready = self._gather(ray, [w.ready.remote() for w in self.workers], "load the model")
            for answer in ready:
                if answer["error"]:
                    raise StreamerError(answer["error"])
            self._worker_up = [False] * n_workers
            self._worker_seen = [None] * n_workers
            self._worker_restarts = [0] * n_workers
            self.model_loaded = True
            if self.notify is not None:
                self.notify(self.description)
            load_seconds = time.monotonic() - started
            refs = [source.run.remote(RemoteModel(self.workers, i % n_workers, ready[0]["input_size"],
                                                  cfg.shrink_keyframes), board)
                    for i, source in enumerate(sources)]
            self._watch(ray, board, sources, refs, on_progress, duration_s)
            results = [self._result(ray, ref, view.stats) for ref, view in zip(refs, self.runs)]
        finally:
            self._teardown(ray, actors)
        for stats in results:
            stats.load_seconds = load_seconds
        for stats in results:
            if stats.error is not None:
                raise stats.error
        return results

    def _gather(self, ray, refs: list, what: str) -> list:
        """Results of `refs`, a StreamerError from inside raised as itself, or one line when the cluster cannot
        place the actors in time. A stop (Ctrl-C) while waiting ends the run at once."""
        from ray.exceptions import RayTaskError

        deadline = time.monotonic() + _READY_TIMEOUT_S
        pending = refs
        while pending:
            if self._stop.is_set():
                raise KeyboardInterrupt
            if time.monotonic() >= deadline:
                raise StreamerError(f"the Ray cluster did not {what} within {_READY_TIMEOUT_S:.0f} s "
                                    "(not enough free resources?)")
            _, pending = ray.wait(pending, num_returns=len(pending), timeout=0.5)
        try:
            return ray.get(refs)
        except RayTaskError as exc:
            cause = cause_of(exc)
            if isinstance(cause, StreamerError):
                raise cause from None
            raise StreamerError(f"could not {what}: {_last_line(exc)}") from None

    def _watch(self, ray, board, sources, refs, on_progress, duration_s) -> None:
        """Wait for every source, relaying progress; on a stop or the deadline, ask every source to stop."""
        deadline = time.monotonic() + duration_s if duration_s else None
        pending, stopping, next_poll = list(refs), False, 0.0
        while pending:
            _, pending = ray.wait(pending, num_returns=len(pending), timeout=0.2)
            if time.monotonic() >= next_poll:
                next_poll = time.monotonic() + _POST_S
                self._poll(ray, board, on_progress)
            if deadline is not None and time.monotonic() >= deadline:
                self._stop.set()
            if self._stop.is_set() and not stopping:
                stopping = True
                for source in sources:
                    source.stop.remote()
        self._poll(ray, board, None)

    def _poll(self, ray, board, on_progress) -> None:
        try:
            posts = ray.get(board.all.remote(), timeout=5)
        except Exception:  # a slow or restarting board: the next poll will do
            return
        for key, post in posts.items():
            view = self.runs[int(key)]
            if self._incarnations.setdefault(key, post["incarnation"]) != post["incarnation"]:
                self._incarnations[key] = post["incarnation"]
                self._source_restarts[view.stats.source] = self._source_restarts.get(view.stats.source, 0) + 1
            moved = post["stats"].frames != view.stats.frames
            # `started` is on the actor's clock, perhaps another host's: the console measures on this one.
            started = self._started.setdefault(key, time.monotonic())
            view.stats = dataclasses.replace(post["stats"], started=started)
            if moved and on_progress is not None:
                on_progress(view.stats)
        refs = [w.stats.remote() for w in self.workers]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=1)
        for i, ref in enumerate(refs):
            self._worker_up[i] = False  # until it answers: restarting, or busy beyond a second
            if ref not in ready:
                continue
            try:
                stats = ray.get(ref)
            except Exception:
                continue
            before = self._worker_seen[i]
            if before is not None and before["incarnation"] != stats["incarnation"]:
                self._worker_restarts[i] += 1
            self._worker_up[i], self._worker_seen[i] = True, stats

    def _result(self, ray, ref, last: RunStats) -> RunStats:
        from ray.exceptions import ActorDiedError, RayTaskError

        try:
            return ray.get(ref)
        except RayTaskError as exc:
            cause = cause_of(exc)
            error = cause if isinstance(cause, StreamerError) else StreamerError(f"{last.source}: {_last_line(exc)}")
        except ActorDiedError:
            error = StreamerError(f"{last.source}: its actor died more than cluster.max_restarts "
                                  f"({self.config.cluster.max_restarts}) times; its outputs hold what it did")
        stats = dataclasses.replace(last, error=error, state="ended")
        return stats

    def _teardown(self, ray, actors: list) -> None:
        """Stop the workers (the batch in hand ends), then free every actor; leave a cluster we joined running."""
        stops = [w.stop.remote() for w in self.workers]
        if stops:
            ray.wait(stops, num_returns=len(stops), timeout=_STOP_TIMEOUT_S)
        for actor in actors:
            ray.kill(actor, no_restart=True)
        if self._started_ray:
            ray.shutdown()

    def cluster_status(self) -> list[str]:
        """One line per model worker, and the restarts seen: for the console's status lines and the summary."""
        lines = []
        for i, (up, seen) in enumerate(zip(self._worker_up, self._worker_seen)):
            state = "up" if up else "restarting or busy"
            kf = (seen or {}).get("keyframes", 0)
            restarts = f", restarted {self._worker_restarts[i]}x" if self._worker_restarts[i] else ""
            lines.append(f"[worker-{i}] {state}, keyframes {kf}{restarts}")
        for source, count in self._source_restarts.items():
            lines.append(f"[{source}] source actor restarted {count}x")
        return lines


def _absolute(spec: SourceSpec) -> SourceSpec:
    """Actors do not run in the driver's folder: paths go out absolute (on a multi-node cluster they must name
    the same files on every node)."""

    def absolute(path):
        return None if path is None else Path(path).expanduser().resolve()

    if is_url(spec.url):
        url, name = spec.url, spec.name
    else:  # events name the file as it was given, as in one process
        url, name = str(absolute(spec.url)), spec.name or spec.url
    return dataclasses.replace(spec, url=url, name=name, events_path=absolute(spec.events_path),
                               video_path=absolute(spec.video_path), db_path=absolute(spec.db_path))


def _absolute_paths(config: Config) -> Config:
    """The config's folders as the driver sees them (actors start elsewhere)."""
    output = config.output.model_copy(update={"dir": config.output.dir.expanduser().resolve()})
    model = config.model
    if model.path is not None:
        model = model.model_copy(update={"path": Path(model.path).expanduser().resolve()})
    return config.model_copy(update={"output": output, "model": model})


def _last_line(exc: BaseException) -> str:
    """Ray's errors end with what went wrong, after its own preamble."""
    text = [line for line in str(exc).strip().splitlines() if line.strip()]
    return text[-1].strip() if text else type(exc).__name__
