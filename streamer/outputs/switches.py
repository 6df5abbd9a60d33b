"""Switches: a camera's detection, recording and snapshots turned off and on while it runs (Home Assistant's
switches, as Frigate's integration has them).

The one piece of state that is set from outside the stream (a command topic) and read by it: each camera's run
looks at its switches on every frame, and whoever watches (the MQTT sink) is told of every change, to publish
it. A switch starts as the configuration says; recording and snapshots can only be switched on where the
configuration has them (`record.enabled`, `events.snapshots`: a store, a retention policy and a folder to write
to), as Frigate asks of its recording switch. Nothing is kept across runs: a restart starts from the
configuration again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from streamer.config import Config

SWITCHES = ("detect", "record", "snapshots")


class Switches:
    """The switches of every camera of one process, keyed by the camera's display name."""

    def __init__(self, config: Config) -> None:
        configured = {"detect": True, "record": config.record.enabled, "snapshots": config.events.snapshots}
        self.names = tuple(name for name in SWITCHES if configured[name])  # what can be switched at all
        self._off: set[tuple[str, str]] = set()
        self._watchers: list[Callable[[str, str, bool], None]] = []
        self._lock = threading.Lock()

    def on(self, source: str, name: str) -> bool:
        """Whether `name` is on for `source` (a switch the configuration does not have is off)."""
        return name in self.names and (source, name) not in self._off

    def set(self, source: str, name: str, on: bool) -> bool:
        """Turn a switch; False for one the configuration does not have. Watchers hear of it either way (a
        refused "on" is told as off, so whoever asked sees where it stands)."""
        if name not in self.names:
            on = False
        with self._lock:
            if on:
                self._off.discard((source, name))
            elif name in self.names:
                self._off.add((source, name))
            watchers = list(self._watchers)
        for watcher in watchers:
            watcher(source, name, on)
        return name in self.names

    def watch(self, watcher: Callable[[str, str, bool], None]) -> None:
        """`watcher(source, name, on)` on every change, on the thread that made it."""
        with self._lock:
            self._watchers.append(watcher)
