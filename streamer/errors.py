"""The one error type a user sees: its message is printed as a single line, without a traceback."""


class StreamerError(Exception):
    """A problem with the user's input or environment, explained in one line."""


class Stopped(Exception):
    """A run asked to stop (Ctrl-C, SIGTERM) before its sources started: nothing ran, nothing is wrong."""
