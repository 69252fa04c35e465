"""What stands between the internet and the admin UI: the password check, the login throttle and the
key that signs sessions and CSRF tokens.

- The signing key never derives from the password alone: a signed cookie from the login page would
  let anyone test password guesses offline. It comes from DESKROUTE_SECRET_KEY or, without it, a
  random key made once for the install and kept in the database, so every process (and machine) of
  the install agrees; the password is mixed in only so that changing it ends every session.
- Passwords (the shared one, and named users' in the database) are held only as scrypt hashes and
  compared as such: a slow check for each guess.
- Wrong passwords slow an address down, with delays that grow with each failure, counted in the
  database so that every process sees them, instead of one lock-out that locks the real admin out too.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import re
import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from connector.crypto import MIN_SECRET_KEY_LENGTH

if TYPE_CHECKING:
    from connector.store import Store

log = logging.getLogger(__name__)

MIN_PASSWORD_LENGTH = 12
SHARED_USER = "admin"  # who a review or an edit is by when made after signing in with the shared password
_NAME = re.compile(r"[a-z0-9][a-z0-9._@+-]{0,63}")
# scrypt at n=2**14, r=8 (16 MiB, tens of milliseconds): the cost OWASP lists as a minimum.
_SCRYPT = {"n": 2**14, "r": 8, "p": 1, "maxmem": 64 * 1024 * 1024, "dklen": 32}
# Failed logins an address may make freely; then each waits 2, 4, 8... seconds, up to 15 minutes.
FREE_FAILURES, MAX_DELAY_SECONDS, WINDOW_SECONDS = 3, 900, 24 * 3600
REMEMBERED_ADDRESSES = 10_000


def session_key(explicit: str, store: Store, password: str) -> str:
    """The key that signs sessions and CSRF tokens: from DESKROUTE_SECRET_KEY (32 characters or more) or
    the install's own random key (made once, shared through the database), bound to the password so
    that changing the password logs every session out. Knowing the password alone gives nothing."""
    if explicit and len(explicit) < MIN_SECRET_KEY_LENGTH:
        log.warning("DESKROUTE_SECRET_KEY is too short to sign sessions; using the install's random key")
        explicit = ""
    base = explicit or store.auth.install_secret("session_signing_key", lambda: secrets.token_urlsafe(48))
    return hmac.new(base.encode(), b"deskroute-session\0" + password.encode(), "sha256").hexdigest()


def user_name(raw: str) -> str:
    """A user's name as kept and compared (case-folded); ValueError if it can't be one."""
    name = raw.strip().casefold()
    if not _NAME.fullmatch(name):
        raise ValueError("a name is 1 to 64 letters, digits and . _ @ + - (an email address will do)")
    if name == SHARED_USER:
        raise ValueError(f'"{SHARED_USER}" is whoever signs in with DESKROUTE_ADMIN_PASSWORD; choose another name')
    return name


def new_password_problem(password: str) -> str | None:
    """Why a named user's new password is refused, or None."""
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"a password needs {MIN_PASSWORD_LENGTH} characters or more (a few words make a good one)"
    if len(password) > 1024:
        return "a password is at most 1024 characters"
    return None


def password_problem(password: str) -> str | None:
    """Why the admin UI stays off with this password, or None."""
    if not password:
        return ("The admin UI is off: set DESKROUTE_ADMIN_PASSWORD to turn it on, or add a named user "
                "(deskroute users add NAME) to sign in by name only.")
    if len(password) < MIN_PASSWORD_LENGTH:
        return (f"The admin UI is off: DESKROUTE_ADMIN_PASSWORD is shorter than {MIN_PASSWORD_LENGTH} characters. "
                "Choose a longer one (a few words make a good one) and restart.")
    return None


def hash_password(password: str) -> str:
    """A password as kept in the database: "scrypt$n$r$p$salt$hash", so the cost can rise later and
    hashes made before still check."""
    salt = secrets.token_bytes(16)
    digest = _scrypt(password, salt, _SCRYPT["n"], _SCRYPT["r"], _SCRYPT["p"])
    return "$".join(["scrypt", str(_SCRYPT["n"]), str(_SCRYPT["r"]), str(_SCRYPT["p"]), salt.hex(), digest.hex()])


def verify_password(candidate: str, stored: str | None) -> bool:
    """Whether `candidate` is the password `stored` was made from. Without a stored hash (no such user) a
    hash is still derived, so a wrong name takes as long to refuse as a wrong password."""
    try:
        scheme, n, r, p, salt, digest = (stored or "").split("$")
        if scheme != "scrypt":
            raise ValueError(scheme)
        expected, args = bytes.fromhex(digest), (bytes.fromhex(salt), int(n), int(r), int(p))
    except ValueError:
        expected, args = b"", (b"\0" * 16, _SCRYPT["n"], _SCRYPT["r"], _SCRYPT["p"])
    return hmac.compare_digest(_scrypt(candidate, *args), expected)


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    # At most 1 KiB of a candidate: a megabyte-long "password" must not buy a megabyte of hashing.
    return hashlib.scrypt(password[:1024].encode(), salt=salt, n=n, r=r, p=p, maxmem=_SCRYPT["maxmem"],
                          dklen=_SCRYPT["dklen"])


class PasswordCheck:
    """The shared admin password, kept only as an scrypt hash with a random salt; compared in constant time."""

    def __init__(self, password: str):
        self._hash = hash_password(password)

    def matches(self, candidate: str) -> bool:
        return verify_password(candidate, self._hash)


def client_key(address: str | None) -> str:
    """Who a login attempt comes from, for the throttle: an IPv4 address, or an IPv6 /64 (one
    subscriber's block: rotating through it must not buy fresh attempts); ports and mapping removed."""
    text = (address or "").strip()
    if text.count(":") == 1 and "." in text:  # "203.0.113.7:51234", as some proxies forward it
        text = text.split(":")[0]
    text = text.strip("[]").split("%")[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return text[:64] or "unknown"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if isinstance(ip, ipaddress.IPv6Address):
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


class LoginThrottle:
    """Login attempts per client, in the database: every process of the install counts them.

    Each attempt is counted twice: for the client, and for the client signing in as that name (no name: the
    shared password; every name that is no user's: one count). A success forgets the signer's own count and
    takes its failures (their typos) off the client's, but no other: otherwise a team lead could guess at
    the shared password or colleagues' passwords, sign in as themselves to wipe the count, and go on."""

    def __init__(self, store: Store, clock: Callable[[], float] = time.time):
        self.store = store
        self.clock = clock

    def keys(self, address: str | None, name: str) -> tuple[str, str]:
        """(the client's count, the client-as-this-name count): an attempt's keys, worked out once per sign-in."""
        client = client_key(address)
        if not name.strip():
            return client, f"{client} as {SHARED_USER}"
        try:
            user = user_name(name)
        except ValueError:
            user = ""
        # One count for all names that are no user's: trying new names must not fill the table with rows.
        return client, f"{client} as {user if user and self.store.users.get(user) else '?'}"

    def attempt(self, keys: tuple[str, str]) -> int:
        """Count an attempt (as failed until succeeded() says otherwise); 0 if it may go ahead, else the
        seconds to wait."""
        for key in keys:
            if not self.store.auth.login_attempt(key, now=self.clock(), free=FREE_FAILURES,
                                                 max_delay=MAX_DELAY_SECONDS, window=WINDOW_SECONDS,
                                                 keep=REMEMBERED_ADDRESSES):
                return max(1, max(self._wait(k) for k in keys))
        return 0

    def _wait(self, key: str) -> int:
        failures, last = self.store.auth.login_failures(key, since=self.clock() - WINDOW_SECONDS)
        if failures < FREE_FAILURES:
            return 0
        delay = min(MAX_DELAY_SECONDS, 2 ** (failures - FREE_FAILURES + 1))
        return max(0, int(last + delay - self.clock() + 0.999))

    def succeeded(self, keys: tuple[str, str]) -> None:
        client, own = keys
        failures, _ = self.store.auth.login_failures(own, since=self.clock() - WINDOW_SECONDS)
        self.store.auth.login_succeeded(own)
        self.store.auth.login_forgive(client, failures)  # this attempt and the signer's own typos
