"""The one error type a user sees: its message is printed as a single line, without a traceback."""


class StreamerError(Exception):
    """A problem with the user's input or environment, explained in one line."""


def cannot_write(what: str, path, exc: BaseException) -> StreamerError:
    """One line for any failed write: which output, where, and the system's reason (a full disk, ...)."""
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return StreamerError(f"cannot write the {what} {path}: {_lowered(reason)}")


def _lowered(text: str) -> str:
    """A sentence's first letter lowered to follow a colon; a word in capitals (SQLite's "NOT NULL") kept."""
    return text if text[1:2].isupper() else text[0].lower() + text[1:]


class Stopped(Exception):
    """A run asked to stop (Ctrl-C, SIGTERM) before its sources started: nothing ran, nothing is wrong."""
