"""What every process of an install shares to authenticate: OAuth tokens (ciphertexts), the helpdesk users
Deskroute acts as, install secrets, the admin login throttle, and named leases."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from connector.store.db import Part

TOKEN_COLUMNS = ("grant", "client_id", "key_id", "access_token", "refresh_token", "scope", "issued_at",
                 "expires_at", "refresh_expires_at", "connected_at", "connected_as")
# "grant" is a reserved word on PostgreSQL.
_Q = {c: f'"{c}"' if c == "grant" else c for c in TOKEN_COLUMNS}


class Auth(Part):
    """The `oauth_tokens`, `oauth_users`, `install_secrets`, `login_failures` and `locks` tables."""

    def token(self, platform: str) -> dict[str, Any] | None:
        """The helpdesk's token row (ciphertexts), or None."""
        rows = self.execute("SELECT * FROM oauth_tokens WHERE platform = :platform", {"platform": platform})
        return dict(rows[0]) if rows else None

    def save_token(self, platform: str, fields: dict[str, Any], *, replaces: int | None, now: float,
                   force: bool = False) -> bool:
        """Store a new token, unless someone else stored one since we read generation `replaces`
        (None: we saw no token); `force` replaces whatever is there (an admin just connected).
        Clears the recorded error."""
        if force:
            unchanged = "1 = 1"
        elif replaces is None:
            unchanged = "oauth_tokens.access_token IS NULL"
        else:
            unchanged = "oauth_tokens.generation = :replaces"
        columns = ", ".join(_Q.values())
        rows = self.execute(
            f"INSERT INTO oauth_tokens (platform, {columns}, generation, updated_at)"
            f" VALUES (:platform, {', '.join(':' + c for c in TOKEN_COLUMNS)}, 1, :now) ON CONFLICT (platform)"
            f" DO UPDATE SET {', '.join(f'{q} = excluded.{q}' for q in _Q.values())},"
            " generation = oauth_tokens.generation + 1, updated_at = excluded.updated_at, last_error = NULL,"
            f" last_error_at = NULL WHERE {unchanged} RETURNING generation",
            {**{c: fields[c] for c in TOKEN_COLUMNS}, "platform": platform, "now": now, "replaces": replaces})
        return bool(rows)

    def clear_token(self, platform: str, *, now: float) -> None:
        """Forget the token (Disconnect, or a key that can no longer decrypt it)."""
        blank = ", ".join(f"{q} = NULL" for q in _Q.values())
        self.execute(f"UPDATE oauth_tokens SET {blank}, generation = generation + 1, updated_at = :now,"
                     " last_error = NULL, last_error_at = NULL WHERE platform = :platform",
                     {"now": now, "platform": platform})

    def record_error(self, platform: str, error: str | None, *, now: float) -> None:
        """Note (None: clear) why the helpdesk's auth is failing."""
        self.execute("INSERT INTO oauth_tokens (platform, last_error, last_error_at, generation, updated_at)"
                     " VALUES (:platform, :error, :at, 0, :now) ON CONFLICT (platform) DO UPDATE"
                     " SET last_error = excluded.last_error, last_error_at = excluded.last_error_at",
                     {"platform": platform, "error": error, "at": now if error else None, "now": now})

    def add_user(self, platform: str, user_id: str, *, now: float) -> None:
        """Remember a helpdesk user Deskroute has acted as."""
        self.execute("INSERT INTO oauth_users (platform, user_id, first_seen) VALUES (:platform, :user_id, :now)"
                     " ON CONFLICT DO NOTHING", {"platform": platform, "user_id": user_id, "now": now})

    def users(self, platform: str) -> set[str]:
        """Every helpdesk user Deskroute has acted as."""
        rows = self.execute("SELECT user_id FROM oauth_users WHERE platform = :platform", {"platform": platform})
        return {r["user_id"] for r in rows}

    # --- named leases -----------------------------------------------------------------------------

    def try_lock(self, name: str, owner: str, *, until: float, now: float) -> bool:
        """Take (or extend) a named lease shared by every process; False while another owner holds it."""
        rows = self.execute(
            "INSERT INTO locks (name, owner, until) VALUES (:name, :owner, :until) ON CONFLICT (name) DO UPDATE"
            " SET owner = excluded.owner, until = excluded.until"
            " WHERE locks.until < :now OR locks.owner = excluded.owner RETURNING name",
            {"name": name, "owner": owner, "until": until, "now": now})
        return bool(rows)

    def unlock(self, name: str, owner: str) -> None:
        """Give a lease up early, if it is still ours."""
        self.execute("DELETE FROM locks WHERE name = :name AND owner = :owner", {"name": name, "owner": owner})

    def holder(self, name: str, *, now: float) -> dict[str, Any] | None:
        """Who holds a named lease ({"owner", "until"}), or None if nobody does now."""
        rows = self.execute("SELECT owner, until FROM locks WHERE name = :name AND until >= :now",
                            {"name": name, "now": now})
        return dict(rows[0]) if rows else None

    # --- install secrets and the login throttle ------------------------------------------------

    def install_secret(self, name: str, make: Callable[[], str]) -> str:
        """A secret made once for the whole install (the first process to ask makes it; the rest read it)."""
        params = {"name": name, "value": make(), "now": self.clock()}
        self.execute("INSERT INTO install_secrets (name, value, created_at) VALUES (:name, :value, :now)"
                     " ON CONFLICT (name) DO NOTHING", params)
        return str(self.execute("SELECT value FROM install_secrets WHERE name = :name", params)[0]["value"])

    def login_attempt(self, client: str, *, now: float, free: int, max_delay: float, window: float,
                      keep: int) -> bool:
        """Count a login attempt from `client` as failed until it succeeds, if its delay has passed; False if
        it must wait. One statement: parallel attempts can't all slip through before any is counted.
        After `free` failures, each waits 2, 4, 8... seconds (at most `max_delay`) after the last one."""
        least = "min" if self.db.sqlite else "least"  # SQLite's two-argument min() is PostgreSQL's least()
        params = {"client": client, "now": now, "free": free, "max_delay": max_delay, "old": now - window,
                  "keep": keep}
        self.execute("DELETE FROM login_failures WHERE last_at < :old", params)
        rows = self.execute(
            "INSERT INTO login_failures (client, failures, last_at) VALUES (:client, 1, :now)"
            " ON CONFLICT (client) DO UPDATE SET failures = login_failures.failures + 1, last_at = excluded.last_at"
            " WHERE login_failures.failures < :free OR login_failures.last_at"
            f"   + {least}(:max_delay,"
            f"             CAST(1 AS BIGINT) << CAST({least}(login_failures.failures - :free + 1, 30) AS INTEGER))"
            " <= excluded.last_at"
            " RETURNING failures", params)
        # Bounded: an attacker with many addresses can't grow the table without limit.
        self.execute("DELETE FROM login_failures WHERE client IN (SELECT client FROM login_failures"
                     " ORDER BY last_at DESC LIMIT 1000000000 OFFSET :keep)", params)
        return bool(rows)

    def login_failures(self, client: str, *, since: float) -> tuple[int, float]:
        """(failed logins from `client` since a time, when the last was)."""
        rows = self.execute("SELECT failures, last_at FROM login_failures WHERE client = :client"
                            " AND last_at >= :since", {"client": client, "since": since})
        return (int(rows[0]["failures"]), float(rows[0]["last_at"])) if rows else (0, 0.0)

    def login_succeeded(self, client: str) -> None:
        self.execute("DELETE FROM login_failures WHERE client = :client", {"client": client})

    def login_forgive(self, client: str, failures: int) -> None:
        """Take `failures` off a client's count (forgetting it at zero)."""
        self.execute("UPDATE login_failures SET failures = failures - :n WHERE client = :client",
                     {"client": client, "n": failures})
        self.execute("DELETE FROM login_failures WHERE client = :client AND failures <= 0", {"client": client})
