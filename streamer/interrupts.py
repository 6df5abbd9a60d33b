"""Ctrl-C held back while torch and transformers import. An interrupt raised inside their C++ initialisers ends
the process by a C++ terminate (exit -6, "pybind11::error_already_set"), or passes through Python code that an
extension runs itself and leaves CPython marking it unhandled, so the process kills itself by SIGINT at exit (-2)
though the command handled it. Held back, the signal reaches its handler the moment the import is done."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def held_back() -> Iterator[None]:
    """Record SIGINT/SIGTERM during the block and hand them, in order, to the handlers that were there before it.
    Off the main thread (a Ray actor's) nothing can be installed and nothing is held."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {sig: signal.signal(sig, lambda sig, _frame: caught.append(sig)) for sig in _SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for sig in caught:
            _deliver(sig, previous[sig])


def _deliver(sig: int, handler) -> None:
    if callable(handler):
        handler(sig, None)
    elif handler == signal.SIG_DFL:
        if sig == signal.SIGINT:
            raise KeyboardInterrupt
        signal.raise_signal(sig)
