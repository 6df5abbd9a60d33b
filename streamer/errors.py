"""The one error type a user sees: its message is printed as a single line, without a traceback."""


class StreamerError(Exception):
    """A problem with the user's input or environment, explained in one line."""
