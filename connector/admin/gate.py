"""What stands between the internet and the admin UI: the password check, the login throttle and the
key that signs sessions and CSRF tokens.

- The signing key never derives from the password: a signed cookie from the login page would let
  anyone test password guesses offline. Without DESKROUTE_SECRET_KEY, a random key is made once for
  the install and kept in the database, so every process (and machine) of the install agrees.
- The password is held only as an scrypt hash and compared as one: a slow check for each guess.
- Wrong passwords slow an address down, with delays that grow with each failure, counted in the
  database so that every process sees them, instead of one lock-out that locks the real admin out too.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from connector.store import Store

MIN_PASSWORD_LENGTH = 12
# scrypt at n=2**14, r=8 (16 MiB, tens of milliseconds): the cost OWASP lists as a minimum.
_SCRYPT = {"n": 2**14, "r": 8, "p": 1, "maxmem": 64 * 1024 * 1024, "dklen": 32}
# Failed logins an address may make freely; then each waits 2, 4, 8... seconds, up to 15 minutes.
FREE_FAILURES, MAX_DELAY_SECONDS, WINDOW_SECONDS = 3, 900, 24 * 3600
REMEMBERED_ADDRESSES = 10_000


def session_key(explicit: str, store: Store) -> str:
    """DESKROUTE_SECRET_KEY, or the install's own random key (made once, shared through the database)."""
    return explicit or store.install_secret("session_signing_key", lambda: secrets.token_urlsafe(48))


def password_problem(password: str) -> str | None:
    """Why the admin UI stays off with this password, or None."""
    if not password:
        return "The admin UI is off: set DESKROUTE_ADMIN_PASSWORD to turn it on."
    if len(password) < MIN_PASSWORD_LENGTH:
        return (f"The admin UI is off: DESKROUTE_ADMIN_PASSWORD is shorter than {MIN_PASSWORD_LENGTH} characters. "
                "Choose a longer one (a few words make a good one) and restart.")
    return None


class PasswordCheck:
    """The admin password, kept as an scrypt hash with a random salt; compared in constant time."""

    def __init__(self, password: str):
        self._salt = secrets.token_bytes(16)
        self._hash = self._derive(password)

    def _derive(self, candidate: str) -> bytes:
        return hashlib.scrypt(candidate.encode(), salt=self._salt, **_SCRYPT)

    def matches(self, candidate: str) -> bool:
        return hmac.compare_digest(self._derive(candidate[:1024]), self._hash)


class LoginThrottle:
    """Failed logins per client address, in the database: every process of the install counts them."""

    def __init__(self, store: Store, clock: Callable[[], float] = time.time):
        self.store = store
        self.clock = clock

    def retry_after(self, who: str) -> int:
        """Seconds until this address may try again (0: now)."""
        failures, last = self.store.login_failures(who, since=self.clock() - WINDOW_SECONDS)
        if failures < FREE_FAILURES:
            return 0
        delay = min(MAX_DELAY_SECONDS, 2 ** (failures - FREE_FAILURES + 1))
        return max(0, int(last + delay - self.clock() + 0.999))

    def failed(self, who: str) -> None:
        self.store.login_failed(who, now=self.clock(), window=WINDOW_SECONDS, keep=REMEMBERED_ADDRESSES)

    def succeeded(self, who: str) -> None:
        self.store.login_succeeded(who)
