"""`python -m streamer` and the `streamer` command: Ctrl-C (and SIGTERM, as a process manager stops a command)
is an interruption like any other, not a traceback; the first one interrupts, later ones while it is handled do
not cut its handling short. While the command's own modules import, nothing is open yet and an exception raised
inside an extension's initialiser can abort the process: an interruption then ends it at once, with 130. Once the
command is done (its outputs closed, its summary out), SIGINT and SIGTERM are ignored while the interpreter winds
down, so a late Ctrl-C ends nothing by the signal: the exit status is the command's (Python gives its signals back
to the system's defaults while it finalizes, and a Ctrl-C then killed the process: exit -2). A wind-down that
hangs still ends, 10 s later, with that status."""

import os
import signal
import sys
import threading

_WIND_DOWN_S = 10.0
_interrupted = threading.Event()
_EXIT_INTERRUPTED = 130


def main() -> int:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _interrupted_while_importing)
    try:
        from streamer.cli import main as cli_main

        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, _interrupt)
        code = cli_main()
    except KeyboardInterrupt:
        print("streamer: interrupted", file=sys.stderr)
        code = _EXIT_INTERRUPTED
    _wind_down(code)
    return code


def _interrupted_while_importing(*_) -> None:
    os.write(2, b"streamer: interrupted\n")
    os._exit(_EXIT_INTERRUPTED)


def _interrupt(*_) -> None:
    if _interrupted.is_set():
        return  # the first is being handled: it closes what was open
    _interrupted.set()
    raise KeyboardInterrupt


def _wind_down(code: int) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    timer = threading.Timer(_WIND_DOWN_S, os._exit, (code,))
    timer.daemon = True
    timer.start()


if __name__ == "__main__":
    sys.exit(main())
