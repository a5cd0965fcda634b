"""The service's clock, injected so that working hours, waiting times and validity dates can be tested."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware (UTC)."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class FixedClock:
    """A clock that stands still until moved (tests, demos, replays)."""

    def __init__(self, at: datetime) -> None:
        self._at = _aware(at)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._at

    def set(self, at: datetime) -> None:
        with self._lock:
            self._at = _aware(at)

    def advance(self, seconds: float) -> datetime:
        with self._lock:
            self._at += timedelta(seconds=seconds)
            return self._at


def _aware(at: datetime) -> datetime:
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
