"""Wall time as the database server keeps it, for installs that span machines.

Leases (a claimed event's, the token refresh's, the trainer's) and due times are compared across machines:
a host whose clock runs a few minutes fast would take every other worker's events before their leases ran
out, and write the tickets twice. On PostgreSQL every process therefore reads the time from its host's
clock plus the offset to the database server's clock, measured once and again every 10 minutes (a query
for each reading would cost a round trip on every claim). SQLite runs on one machine: its clock is the host's.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

REMEASURE_SECONDS = 600.0
RETRY_SECONDS = 30.0  # after a failed measurement (the database is down): the last offset meanwhile
WARN_SECONDS = 2.0  # a host this far off the database is worth a line in the log


class DatabaseClock:
    """A callable returning the database server's time (epoch seconds), from the host's clock and an offset."""

    def __init__(self, server_time: Callable[[], float], *, host_time: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic):
        self._server_time = server_time
        self._host_time = host_time
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self.offset = 0.0
        self._next: float | None = None  # monotonic time of the next measurement
        self._warned = False

    def __call__(self) -> float:
        if self._next is None or self._monotonic() >= self._next:
            self._measure()
        return self._host_time() + self.offset

    def _measure(self) -> None:
        with self._lock:
            if self._next is not None and self._monotonic() < self._next:
                return  # another thread measured meanwhile
            try:
                before = self._host_time()
                server = self._server_time()
                after = self._host_time()
            except Exception as exc:  # noqa: BLE001 - a reading must not fail because the database is away
                log.warning("couldn't read the database server's clock; using the last offset",
                            extra={"error": type(exc).__name__, "offset_s": round(self.offset, 3)})
                self._next = self._monotonic() + RETRY_SECONDS
                return
            self.offset = server - (before + after) / 2  # the server read its clock about halfway
            self._next = self._monotonic() + REMEASURE_SECONDS
            if abs(self.offset) >= WARN_SECONDS and not self._warned:
                self._warned = True
                log.warning("this host's clock is off the database server's; Deskroute uses the server's time",
                            extra={"offset_s": round(self.offset, 3)})
