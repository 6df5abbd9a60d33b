"""The one error type a user sees: its message is printed as a single line, without a traceback."""


class StreamerError(Exception):
    """A problem with the user's input or environment, explained in one line."""


def cannot_write(what: str, path, exc: BaseException) -> StreamerError:
    """One line for any failed write: which output, where, and the system's reason (a full disk, ...)."""
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return StreamerError(f"cannot write the {what} {path}: {_lowered(reason)}")


def first_line(exc: BaseException, limit: int | None = None) -> str:
    """What a library's exception says, as one line: its message's first line (a converter's or a loader's goes
    on for pages), at most `limit` characters; its type's name when it says nothing."""
    text = str(exc).strip().splitlines()
    return text[0][:limit] if text else type(exc).__name__


def _lowered(text: str) -> str:
    """A sentence's first letter lowered to follow a colon; a word in capitals (SQLite's "NOT NULL") kept."""
    return text if text[1:2].isupper() else text[0].lower() + text[1:]


class Stopped(Exception):
    """A run asked to stop (Ctrl-C, SIGTERM) before its sources started: nothing ran, nothing is wrong."""
