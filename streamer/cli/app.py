"""The `streamer` command line: one module per command, each with `add` (its flags) and `run` (what it does),
registered in `COMMANDS`. Bad input ends with one line on stderr and a non-zero exit, never a traceback."""

from __future__ import annotations

import argparse
import errno
import logging
import os
import signal
import sys
import traceback

from streamer import __version__
from streamer.cli import clip, evaluate, events, export, find, finetune, password, run, serve_ml
from streamer.cli.common import EXIT_ERROR, EXIT_INTERRUPTED, named
from streamer.errors import Stopped, StreamerError
from streamer.sources import scrub

# command -> its module, in the order `streamer --help` lists them
COMMANDS = {"run": run, "events": events, "export": export, "clip": clip, "serve-ml": serve_ml, "find": find,
            "password": password, "evaluate": evaluate, "finetune": finetune}


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streamer", description="Florence-2 on video: detect, track, annotate, log.")
    parser.add_argument("--version", action="version", version=f"streamer {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show tracebacks of unexpected errors and the log (a Ray cluster's news of restarts)")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS.values():
        command.add(sub)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line as the commands take it (`run --ray clip.mp4` has a source, not an address)."""
    args = parser().parse_args(argv)
    if args.command == "run":
        run.ray_address(args)
    return args


def _scrub(text: str, args: argparse.Namespace) -> str:
    """No secret of a URL given on the command line (sources, --mqtt, --webhook) in an error line, whoever wrote
    the message."""
    given = [*getattr(args, "sources", []), getattr(args, "mqtt", None), *(getattr(args, "webhook", None) or [])]
    return scrub(text, [named(value)[1] for value in given if value])


def _refused_path(exc: BaseException) -> str | None:
    """The line for a file the operating system refuses, wherever it was named; None for anything else."""
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror or exc}"
    if isinstance(exc, RuntimeError) and str(exc).startswith("Symlink loop"):  # pathlib's resolve()
        return f"{str(exc).removeprefix('Symlink loop from ').strip(chr(39))}: a loop of symbolic links"
    return None


def _one_line(text: str) -> str:
    """An error stays one line whatever it quotes (a file name may hold a newline)."""
    return text.replace("\r", "\\r").replace("\n", "\\n")


def main(argv: list[str] | None = None) -> int:
    """The command's exit status; its output flushed here, so a standard output that cannot take it (a full
    disk, a closed pipe) is said now, not lost at exit."""
    args = parse_args(argv)
    if args.debug:  # the log of what streamer saw happen, such as a Ray cluster's news of restarts, on stderr
        logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)
    real, sys.stdout = sys.stdout, _Stdout(sys.stdout)
    try:
        code = _command(args)
        sys.stdout.flush()
        return code
    except _StdoutFailed as failed:
        return _stdout_failed(failed.error)
    finally:
        sys.stdout = real


class _StdoutFailed(Exception):
    """Standard output refused a write; not an OSError, so no handler takes it for a file of the command's."""

    def __init__(self, error: OSError) -> None:
        self.error = error


class _Stdout:
    """sys.stdout, its write errors told apart from every other OSError."""

    def __init__(self, stream) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except OSError as exc:
            raise _StdoutFailed(exc) from None

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError as exc:
            raise _StdoutFailed(exc) from None

    def __getattr__(self, name):
        return getattr(self._stream, name)


def _stdout_failed(exc: OSError) -> int:
    """A reader that went away (`| head`) ends the command quietly, as SIGPIPE would; anything else is one line."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.__stdout__.fileno())  # nothing more to flush at exit
    except (OSError, ValueError, AttributeError):
        pass
    if exc.errno == errno.EPIPE:
        return 128 + signal.SIGPIPE
    print(f"streamer: error: cannot write to standard output: {exc.strerror or exc}", file=sys.stderr)
    return EXIT_ERROR


def _command(args: argparse.Namespace) -> int:
    try:
        return COMMANDS[args.command].run(args)
    except StreamerError as exc:
        if args.debug and exc.__cause__ is not None:
            traceback.print_exception(exc.__cause__)
        print(f"streamer: error: {_one_line(_scrub(str(exc), args))}", file=sys.stderr)
        return EXIT_ERROR
    except (KeyboardInterrupt, Stopped):
        print("streamer: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except _StdoutFailed:
        raise
    except Exception as exc:  # a path the system refuses (a name too long, a loop of links), or a bug
        said = _refused_path(exc)
        if args.debug:
            raise
        if said is not None:
            print(f"streamer: error: {_one_line(_scrub(said, args))}", file=sys.stderr)
        else:  # a bug, not bad input: one line unless asked for more
            print(f"streamer: internal error: {type(exc).__name__}: {_one_line(_scrub(str(exc), args))} (run with "
                  "--debug for details)", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
