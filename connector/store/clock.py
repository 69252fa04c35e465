"""Wall time as the database server keeps it, for installs that span machines.

Leases (a claimed event's, the token refresh's, the trainer's) and due times are compared across machines:
a host whose clock runs a few minutes fast would take every other worker's events before their leases ran
out, and write the tickets twice. On PostgreSQL every process therefore reads the server's time: measured
at start and every 10 minutes (a query for each reading would cost a round trip on every claim), and
carried forward in between on the host's monotonic clock, which no NTP step moves; when the host's clock
and the monotonic one part (a step, a suspend, a paused VM), it is read again at once. SQLite
runs on one machine: its clock is the host's.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

REMEASURE_SECONDS = 600.0
RETRY_SECONDS = 30.0  # after a failed or slow measurement (the database is down or busy)
SLOW_SECONDS = 1.0  # a round trip longer than this says little about when the server read its clock
WARN_SECONDS = 2.0  # a host this far off the database is worth a line in the log


class DatabaseClock:
    """A callable returning the database server's time (epoch seconds)."""

    def __init__(self, server_time: Callable[[], float], *, host_time: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic):
        self._server_time = server_time
        self._host_time = host_time
        self._monotonic = monotonic
        self._measuring = threading.Lock()
        # (server time, monotonic time, host time) of the last reading
        self._base: tuple[float, float, float] | None = None
        self._next = 0.0  # monotonic time of the next measurement
        self._warned = False

    @property
    def offset(self) -> float:
        """How far the server's clock is ahead of this host's (seconds)."""
        return self() - self._host_time()

    def __call__(self) -> float:
        if self._base is None:
            with self._measuring:  # until the server has been read once, everyone waits for it: a lease must
                if self._base is None:  # not go out on a host's clock that may run minutes fast
                    self._measure()
        elif self._due() and self._measuring.acquire(blocking=False):
            try:  # one thread measures; the others go on from the last reading meanwhile, never wait
                self._measure()
            finally:
                self._measuring.release()
        base = self._base
        if base is None:
            return self._host_time()  # the server can't be read: the host's clock is the best there is
        server, at, _ = base
        return server + (self._monotonic() - at)

    def _due(self) -> bool:
        """Time for another reading: 10 minutes on, or the host's clock and the monotonic one have parted (a
        suspend or a paused VM stops the monotonic clock; an NTP step moves the host's)."""
        base = self._base
        if base is None or self._monotonic() >= self._next:
            return True
        _, at, host_at = base
        return abs((self._host_time() - host_at) - (self._monotonic() - at)) > 1.0

    def _measure(self) -> None:
        try:
            before = self._monotonic()
            server = self._server_time()
            after = self._monotonic()
        except Exception as exc:  # noqa: BLE001 - a reading must not fail because the database is away
            log.warning("couldn't read the database server's clock; going on from the last reading",
                        extra={"error": type(exc).__name__})
            self._next = self._monotonic() + RETRY_SECONDS
            return
        slow = after - before > SLOW_SECONDS
        if slow and self._base is not None:
            self._next = after + RETRY_SECONDS  # waited for a connection, or a busy server: keep the last one
            return
        middle = (before + after) / 2  # the server read its clock about halfway
        self._base = (server, middle, self._host_time() - (after - middle))
        self._next = after + (RETRY_SECONDS if slow else REMEASURE_SECONDS)
        offset = server - self._base[2]
        if abs(offset) >= WARN_SECONDS and not self._warned:
            self._warned = True
            log.warning("this host's clock is off the database server's; Deskroute uses the server's time",
                        extra={"offset_s": round(offset, 3)})
