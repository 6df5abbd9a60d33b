"""The driver of a run on a Ray cluster: places one actor per source and the model worker actors, relays
progress, and tears everything down.

Sources are spread over the workers in turn; each worker batches the keyframes of all the sources it serves
(`model_worker`). Ray restarts a killed actor (`cluster.max_restarts`) and retries the calls it had in hand: a
worker's keyframes are answered after its restart (`worker_restarted` in the log); one dead for good is replaced
by the next worker alive (`worker_lost`); a source takes over from its predecessor (`source_actor`). Every
source posts its stats and progress to a `ProgressBoard` about twice a second; the driver reads the board for
progress and status lines.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

from streamer.cluster.model_worker import ModelWorker, RemoteModel, cause_of
from streamer.cluster.source_actor import POST_S, ProgressBoard, SourceActor
from streamer.cluster.views import SILENT_S, SourceView, WorkerView, poll, status_lines
from streamer.config import Config
from streamer.errors import Stopped, StreamerError
from streamer.model.worker import Detector, load_detector
from streamer.pipeline.source_run import SourceSpec
from streamer.pipeline.stats import RunStats, outcome
from streamer.sources import display_name, is_url

_READY_TIMEOUT_S = 600.0  # a model load on a fresh node may download and compile for minutes
_STOP_TIMEOUT_S = 30.0
_STOP_GRACE_S = 5.0  # after a stop, sources still silent this long after it are not waited for


# Ray's own lines (its retries of a restarting actor, "repeated 643x") stay in its logs (/tmp/ray/session_latest/
# logs), out of the driver's status lines and summaries; STREAMER_RAY_LOGS=1 forwards them, to debug.
_RAY_LOGS = os.environ.get("STREAMER_RAY_LOGS") == "1"
_QUIET = {"log_to_driver": _RAY_LOGS}
_log = logging.getLogger(__name__)


def _quiet_cluster_errors() -> None:
    """The errors the cluster pushes to a driver ("(raylet) Task SourceActor.run failed ... will be retried")
    are printed by a thread of Ray's own straight to stdout, among the summaries, whatever `log_to_driver` says:
    they go to this module's log instead (seen with --debug), unless STREAMER_RAY_LOGS=1."""
    from ray._private import worker as ray_worker

    printer = getattr(ray_worker, "print_to_stdstream", None)
    if _RAY_LOGS or printer is None or getattr(printer, "quiet", False):
        return

    def to_log(data, ignore_prefix=False):
        if data.get("pid") != "raylet":
            return printer(data, ignore_prefix=ignore_prefix)
        for line in data.get("lines", ()):
            _log.info("ray: %s", line)

    to_log.quiet = True
    ray_worker.print_to_stdstream = to_log


class RayPipeline:
    """A `Driver` (see `streamer.pipeline.local`) on a Ray cluster."""

    def __init__(self, config: Config, make_detector: Callable[[], Detector] | None = None,
                 notify: Callable[[str], None] | None = None) -> None:
        """`make_detector` is sent to each worker actor (default: Florence-2 as `config.model` says); `notify`
        gets one line on the cluster once the actors are placed."""
        self.config = config
        self.make_detector = make_detector
        self.notify = notify
        self._stop = threading.Event()
        self.runs: list[SourceView] = []
        self.workers: list[WorkerView] = []
        self.model_loaded = False
        self.description = ""
        self._ray = None  # the ray module, imported on connecting (an optional dependency)
        self._started_ray = False

    def stop(self) -> None:
        self._stop.set()

    # -- connecting and placing ----------------------------------------------------------------------------

    def _connect(self, sources: int) -> None:
        try:
            import ray
        except ImportError:
            raise StreamerError("running on Ray needs the ray package: pip install 'streamer[ray]'") from None
        self._ray = ray
        _quiet_cluster_errors()
        if ray.is_initialized():
            return
        cfg = self.config.cluster
        address = cfg.address
        local = address in (None, "local")
        kwargs = {"include_dashboard": False} if local else {}
        # A Ray instance of this run's own fits the run on this machine: its CPUs are counted to hold every source
        # and worker, however few cores there are (they share them, as threads do in one process). Ray refuses a
        # CPU count when `local` finds a cluster running here to join instead; then it is asked without one.
        need = sources * cfg.cpus_per_source + (cfg.workers or 1) * cfg.cpus_per_worker
        sized = {"num_cpus": max(os.cpu_count() or 1, math.ceil(need))} if local else {}
        # ray.init puts a SIGTERM handler of its own in place ("*** SIGTERM received", exit 1): the run's own goes
        # back after it, so SIGTERM stops a Ray run as Ctrl-C does, with every output closed and the summaries.
        handlers = ({sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
                    if threading.current_thread() is threading.main_thread() else {})
        try:
            try:
                ray.init(address=None if local else address, logging_level=logging.WARNING, namespace="streamer",
                         **kwargs, **sized, **_QUIET)
            except ValueError:
                if not sized:
                    raise
                ray.init(address=None, logging_level=logging.WARNING, namespace="streamer", **kwargs, **_QUIET)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            hint = ("" if local or address == "auto" else
                    " (a cluster with token authentication also needs RAY_AUTH_MODE=token and its token here)")
            raise StreamerError(f"cannot reach a Ray cluster at {address}: {_last_line(exc)}{hint}") from None
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
        self._started_ray = True

    def _plan(self, sources: int) -> tuple[int, float]:
        """How many model workers, with how many GPUs each; refuses what the cluster can never place."""
        cfg = self.config.cluster
        total = self._ray.cluster_resources()
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
        nodes = sum(1 for n in self._ray.nodes() if n.get("Alive"))
        self.description = (f"Ray cluster of {nodes} node{'s' * (nodes != 1)} ({cpus:g} CPUs, {gpus:g} GPUs): "
                            f"{sources} source actor{'s' * (sources != 1)}, {workers} model worker"
                            f"{'s' * (workers != 1)}" + (f" with {per_worker_gpu:g} GPU each" if gpus else " on CPU"))
        return workers, per_worker_gpu

    def run_many(self, specs: list[SourceSpec], on_progress=None, duration_s: float | None = None) -> list[RunStats]:
        self._connect(len(specs))
        ray = self._ray
        cfg = self.config.cluster
        self.config = _absolute_paths(self.config)
        make_detector = self.make_detector or functools.partial(load_detector, self.config.model)
        actors: list = []
        try:
            specs = [_absolute(spec) for spec in specs]
            n_workers, gpus_each = self._plan(len(specs))
            restarts = {"max_restarts": cfg.max_restarts, "max_task_retries": -1}
            # 1. The board and one actor per source; every source opens before any model loads.
            # The board is the driver's own state: on the driver's node, where losing another node cannot take it.
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
            board = ray.remote(ProgressBoard).options(num_cpus=0, scheduling_strategy=here).remote()
            actors.append(board)
            source_cls = ray.remote(SourceActor).options(num_cpus=cfg.cpus_per_source, max_concurrency=4, **restarts)
            sources = [source_cls.remote(str(i), spec, self.config) for i, spec in enumerate(specs)]
            actors += sources
            infos = self._gather([s.open.remote() for s in sources], "open the sources")
            self.runs = [SourceView(RunStats(source=spec.name or display_name(spec.url), info=info), handle)
                         for spec, info, handle in zip(specs, infos, sources)]
            # 2. The model workers, each loading the model.
            started = time.monotonic()
            model = self.config.model
            worker_cls = ray.remote(ModelWorker).options(num_cpus=cfg.cpus_per_worker, num_gpus=gpus_each,
                                                          max_concurrency=256, **restarts)
            handles = [worker_cls.remote(make_detector, model.batch_size, model.max_wait_ms,
                                         self.config.pipeline.still_wait_s) for _ in range(n_workers)]
            actors += handles
            self.workers = [WorkerView(handle) for handle in handles]
            ready = self._gather([w.ready.remote() for w in handles], "load the model")
            for answer in ready:
                if answer["error"]:
                    raise StreamerError(answer["error"])
            self.model_loaded = True
            if self.notify is not None:
                self.notify(self.description)
                self._say_where(sources, handles)
            load_seconds = time.monotonic() - started
            # 3. Every source runs, its keyframes going to the workers in turn; the driver watches.
            refs = [source.run.remote(RemoteModel(handles, i % n_workers, ready[0]["input_size"],
                                                  cfg.shrink_keyframes, cfg.restart_timeout_s), board)
                    for i, source in enumerate(sources)]
            self._watch(board, sources, refs, on_progress, duration_s)
            results = [self._result(ref, view.current) if view.lost is None else
                       dataclasses.replace(view.current, error=StreamerError(view.lost), state="ended")
                       for ref, view in zip(refs, self.runs)]
        finally:
            self._teardown(actors)
        return outcome(results, load_seconds)

    def _say_where(self, sources: list, workers: list) -> None:
        """Which node each source and model worker runs on, a line each (what a lost node takes is then known)."""
        from ray.exceptions import RayError

        refs = [actor.where.remote() for actor in [*sources, *workers]]
        names = [f"[{view.current.source}] source" for view in self.runs] + [f"[worker-{i}] model worker"
                                                                            for i in range(len(workers))]
        try:
            places = self._ray.get(refs, timeout=10)
        except RayError:
            return
        for name, place in zip(names, places):
            self.notify(f"{name} on {place}")


    def _gather(self, refs: list, what: str) -> list:
        """Results of `refs`, a StreamerError from inside raised as itself, or one line when the cluster cannot
        place the actors in time. A stop (Ctrl-C) while waiting ends the run at once."""
        from ray.exceptions import RayTaskError

        deadline = time.monotonic() + _READY_TIMEOUT_S
        pending = refs
        while pending:
            if self._stop.is_set():
                raise Stopped()
            if time.monotonic() >= deadline:
                raise StreamerError(f"the Ray cluster did not {what} within {_READY_TIMEOUT_S:.0f} s "
                                    "(not enough free resources?)")
            _, pending = self._ray.wait(pending, num_returns=len(pending), timeout=0.5)
        try:
            return self._ray.get(refs)
        except RayTaskError as exc:
            cause = cause_of(exc)
            if isinstance(cause, StreamerError):
                raise cause from None
            raise StreamerError(f"could not {what}: {_last_line(exc)}") from None

    def _watch(self, board, sources, refs, on_progress, duration_s) -> None:
        """Wait for every source, relaying progress; on a stop or the deadline, ask every source to stop."""
        deadline = time.monotonic() + duration_s if duration_s else None
        pending, stopping, next_poll = list(refs), None, 0.0
        while pending:
            _, pending = self._ray.wait(pending, num_returns=len(pending), timeout=0.2)
            if time.monotonic() >= next_poll:
                next_poll = time.monotonic() + POST_S
                poll(self._ray, board, self.runs, self.workers, on_progress, self.notify)
                hurry = stopping is not None and time.monotonic() - stopping >= _STOP_GRACE_S
                pending = [ref for ref in pending if not self._lost(self.runs[refs.index(ref)], hurry)]
            if deadline is not None and time.monotonic() >= deadline:
                self._stop.set()
            if self._stop.is_set() and stopping is None:
                stopping = time.monotonic()
                for source in sources:
                    source.stop.remote()
        poll(self._ray, board, self.runs, self.workers, None, self.notify)

    def _lost(self, view: SourceView, hurry: bool = False) -> bool:
        """A source silent for `cluster.restart_timeout_s` whose actor answers no ping (restarting where no node
        has room: its node is gone) is lost; the run goes on without it and says so. `hurry`: the run was asked
        to stop `_STOP_GRACE_S` ago; a source silent by then is not waited for (Ctrl-C ends a run in seconds)."""
        from ray.exceptions import RayError

        limit = SILENT_S if hurry else self.config.cluster.restart_timeout_s
        if view.lost is not None or view.age_s < limit:
            return view.lost is not None
        try:
            self._ray.get(view.handle.where.remote(), timeout=2)
            return False
        except RayError:
            view.lost = (f"{view.current.source}: lost: its actor has not answered for {view.age_s:.0f} s "
                         + ("and the run was stopped" if hurry else
                            f"(cluster.restart_timeout_s {limit:g}): its node is gone and no other has room for it")
                         + "; its outputs hold what it did")
            self._note(view.lost)
            return True

    def status_lines(self) -> list[str]:
        """One line per model worker, and the restarts seen: for the console's status lines and the summary."""
        return status_lines(self.runs, self.workers)

    def _note(self, line: str) -> None:
        if self.notify is not None:
            self.notify(line)


    def _result(self, ref, last: RunStats) -> RunStats:
        from ray.exceptions import ActorDiedError, RayTaskError

        try:
            return self._ray.get(ref)
        except RayTaskError as exc:
            cause = cause_of(exc)
            error = cause if isinstance(cause, StreamerError) else StreamerError(f"{last.source}: {_last_line(exc)}")
        except ActorDiedError:
            error = StreamerError(f"{last.source}: its actor died more than cluster.max_restarts "
                                  f"({self.config.cluster.max_restarts}) times; its outputs hold what it did")
        return dataclasses.replace(last, error=error, state="ended")

    def _teardown(self, actors: list) -> None:
        """Stop the workers (the batch in hand ends), then free every actor; leave a cluster we joined running."""
        ray = self._ray
        stops = [w.handle.stop.remote() for w in self.workers if w.up]  # one restarting would never answer
        if stops:
            ray.wait(stops, num_returns=len(stops), timeout=_STOP_TIMEOUT_S)
        for actor in actors:
            ray.kill(actor, no_restart=True)
        if self._started_ray:
            ray.shutdown()


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
                               video_path=absolute(spec.video_path), db_path=absolute(spec.db_path),
                               tracks_path=absolute(spec.tracks_path))


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
