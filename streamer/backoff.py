"""Exponential backoff with jitter, for everything that retries another side: cameras, brokers, webhooks.

Each wait is drawn between half and all of the current delay (jitter: many cameras that dropped together do
not all knock again at once), and the delay doubles up to a cap; a success starts it over.
"""

from __future__ import annotations

import random


class Backoff:
    def __init__(self, initial_s: float, max_s: float) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self.attempts = 0  # waits since the last success

    def next_wait(self) -> float:
        """Seconds to wait before the next try."""
        delay = min(self.max_s, self.initial_s * 2**self.attempts)
        self.attempts += 1
        return random.uniform(delay / 2, delay)

    def reset(self) -> None:
        self.attempts = 0
