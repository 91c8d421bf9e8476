"""The one rate limit for what a peer can make Tollgate record or log: at most so many per window, the rest counted.

Used for a noisy upstream's non-JSON stdout lines (events and log lines) and for refused HTTP requests; the
caller says how many were held back when it next may speak.
"""

from __future__ import annotations


class RateLimit:
    """At most `limit` events per `window` seconds; counts the ones it held back."""

    __slots__ = ("held", "limit", "sent", "started", "window")

    def __init__(self, limit: int, window: float) -> None:
        self.limit, self.window = limit, window
        self.started, self.sent, self.held = -window, 0, 0

    def allow(self, now: float) -> bool:
        if now - self.started >= self.window:
            self.started, self.sent = now, 0
        if self.sent < self.limit:
            self.sent += 1
            return True
        self.held += 1
        return False

    def take_held(self) -> int:
        """How many were held back since the last event let through, and start counting again."""
        held, self.held = self.held, 0
        return held
