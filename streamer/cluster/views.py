"""What the driver knows of each actor, from the sources' posts on the `ProgressBoard` and the model workers'
answers (`poll`): latest stats, incarnations and restarts, Ray's word for an actor that is silent, and the
status lines the console shows of them."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

from streamer.pipeline.stats import PostedStats, RunStats

SILENT_S = 3.0  # a source that posted nothing for this long is shown as Ray has its actor, not as it last said


@dataclass
class SourceView(PostedStats):
    """What the driver knows of a source actor (`handle`): its latest posted stats, which incarnation posted
    them, how often it was restarted, and when this driver first heard of it (the actor's clock may be another
    host's)."""

    handle: object = None
    incarnation: str | None = None
    restarts: int = 0
    first_heard: float | None = None
    age_s: float = 0.0  # since its last post
    lost: str | None = None  # why the driver gave up on it
    actor_state: str | None = None  # Ray's word for its actor while it is silent (RESTARTING, ...)

    def stats(self) -> RunStats:
        """Its last post; while it is silent, a running camera or file is not shown "up" but as Ray has it."""
        if self.lost is not None or self.age_s < SILENT_S or self.current.state in ("ended", "starting"):
            return self.current
        return dataclasses.replace(self.current, state=shown(self.actor_state, "silent"))


@dataclass
class WorkerView:
    """What the driver knows of a model worker actor: whether it answered the last poll, its last answer, and
    how often it came back from a restart."""

    handle: object
    up: bool = False
    last: dict | None = None
    restarts: int = 0
    actor_state: str | None = None  # Ray's word for its actor when it did not answer (RESTARTING, ALIVE: busy)


def poll(ray, board, runs: list[SourceView], workers: list[WorkerView], on_progress, notify) -> None:
    """The latest posts of the sources and an answer from each worker, within a second or so; what does not
    answer in time (a slow or restarting actor) is asked again at the next poll."""
    from ray.exceptions import RayError

    try:
        posts = ray.get(board.all.remote(), timeout=5)
    except RayError:
        return
    for key, post in posts.items():
        view = runs[int(key)]
        if view.incarnation not in (None, post["incarnation"]):
            view.restarts += 1
            say_moved(ray, notify, f"[{post['stats'].source}] source", view.handle)
        view.incarnation = post["incarnation"]
        moved = post["stats"].frames != view.current.frames
        # `started` is on the actor's clock, perhaps another host's: the console measures on this one.
        if view.first_heard is None:
            view.first_heard = time.monotonic()
        view.current = dataclasses.replace(post["stats"], started=view.first_heard)
        view.age_s = post["age_s"]
        view.actor_state = actor_state(view.handle) if view.age_s >= SILENT_S else None
        if moved and on_progress is not None:
            on_progress(view.current)
    refs = [w.handle.stats.remote() for w in workers]
    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=1)
    for i, (worker, ref) in enumerate(zip(workers, refs)):
        worker.up = False  # until it answers: restarting, or busy beyond a second
        worker.actor_state = None
        if ref not in ready:
            worker.actor_state = actor_state(worker.handle)
            continue
        try:
            answer = ray.get(ref)
        except RayError:
            continue
        if worker.last is not None and worker.last["incarnation"] != answer["incarnation"]:
            worker.restarts += 1
            say_moved(ray, notify, f"[worker-{i}] model worker", worker.handle)
        worker.up, worker.last = True, answer


def say_moved(ray, notify, name: str, handle) -> None:
    """Where a restarted actor runs now (on another node, when its own was lost)."""
    from ray.exceptions import RayError

    if notify is None:
        return
    try:
        notify(f"{name} restarted, now on {ray.get(handle.where.remote(), timeout=5)}")
    except RayError:
        notify(f"{name} restarted")


def status_lines(runs: list[SourceView], workers: list[WorkerView]) -> list[str]:
    """One line per model worker, and the restarts seen: for the console's status lines and the summary."""
    lines = []
    for i, worker in enumerate(workers):
        state = "up" if worker.up else shown(worker.actor_state, "busy")
        keyframes = (worker.last or {}).get("keyframes", 0)
        restarts = f", restarted {worker.restarts}x" if worker.restarts else ""
        lines.append(f"[worker-{i}] {state}, keyframes {keyframes}{restarts}")
    lines += [f"[{view.current.source}] source actor restarted {view.restarts}x" for view in runs
              if view.restarts]
    return lines


def shown(actor_state: str | None, otherwise: str) -> str:
    """How a status line names an actor that did not answer: as Ray has it when it is being (re)placed or dead,
    else `otherwise` (alive but silent: busy, or taking over)."""
    return {"RESTARTING": "restarting", "PENDING_CREATION": "restarting", "DEAD": "dead"}.get(actor_state, otherwise)


def actor_state(handle) -> str | None:
    """Ray's state of an actor (ALIVE, RESTARTING, DEAD, PENDING_CREATION), from its control store, which
    answers while the actor cannot; None where this Ray cannot say."""
    try:
        from ray._private.state import actors

        return actors(actor_id=handle._actor_id.hex()).get("State")
    except Exception:  # noqa: BLE001 - a debugging API of Ray's: without it the line says less, nothing breaks
        return None
