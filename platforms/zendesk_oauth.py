# OAuth: https://developer.zendesk.com/documentation/api-basics/authentication/using-oauth-to-authenticate-api-requests/
# Token endpoint and grants: https://developer.zendesk.com/api-reference/ticketing/oauth/grant_type_tokens/
"""Zendesk OAuth: the token endpoint, the authorization URL (PKCE), and one access token per install.

Facts this relies on, with sources: ../shared/docs/platform-facts.md, section 6.

Zendesk stops accepting API tokens on 30 April 2027. Deskroute gets its access tokens either with
the client-credentials grant (a confidential client's identifier and secret) or through "Connect
Zendesk" in the admin UI (authorization code + PKCE, then rotating refresh tokens).

Every thread and process of an install shares one token through a TokenVault (the database, in
production), so ten workers don't mint ten tokens. Renewing takes the vault's lock: Zendesk deletes
a refresh token once it is used, so two processes refreshing with the same one would lock the
install out. Whoever loses the race waits for the winner's token instead.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol
from urllib.parse import urlencode, urlsplit, urlunsplit

import requests

from platforms.base import parse_retry_after

log = logging.getLogger(__name__)

SCOPE = "read write"
# Lifetime we ask for (Zendesk accepts 300 s to 48 h). Without it, older clients' tokens never expire.
TOKEN_SECONDS = 1800
CLIENT_CREDENTIALS, AUTHORIZATION_CODE = "client_credentials", "authorization_code"

# What an admin does about each error the token endpoint can answer (RFC 6749 section 5.2 codes).
ADVICE = {
    "invalid_client": "Zendesk refused the OAuth client (invalid_client): check ZENDESK_OAUTH_CLIENT_ID (the "
                      "client's Identifier) and ZENDESK_OAUTH_CLIENT_SECRET, and that the client still exists in "
                      "Admin Center > Apps and integrations > APIs > OAuth clients",
    "invalid_grant": "Zendesk refused the refresh token (invalid_grant: expired or revoked): connect Zendesk again "
                     "in the admin UI (/admin/zendesk)",
    "invalid_scope": f"Zendesk refused the scope '{SCOPE}' (invalid_scope): allow read and write for the OAuth "
                     "client in Admin Center",
    "unauthorized_client": "the OAuth client may not use this grant (unauthorized_client): client credentials "
                           "need a confidential client",
    "unsupported_grant_type": "Zendesk does not accept this grant for the client (unsupported_grant_type): client "
                              "credentials need a confidential client",
    "not_connected": "Zendesk is not connected: click Connect Zendesk in the admin UI (/admin/zendesk), or set "
                     "ZENDESK_OAUTH_CLIENT_SECRET to use the client-credentials grant",
}


class OAuthError(Exception):
    """Zendesk would not give us a token; `str()` says what to do, and never holds a secret.

    Args:
        code: the OAuth error code (`invalid_client`...), `unavailable` (5xx, network), `not_connected`,
            or `refused_token` (the API refused a token minutes old).
        message: what happened and what an admin should do about it.
        retryable: the same request may succeed later without anyone changing anything.
        status: the token endpoint's HTTP status, if it answered.
        retry_after: seconds Zendesk asked us to wait (429, 503).
    """

    def __init__(self, code: str, message: str, *, retryable: bool = False, status: int | None = None,
                 retry_after: float | None = None):
        super().__init__(message)
        self.code = code
        self.retryable = retryable
        self.status = status
        self.retry_after = retry_after


@dataclass(frozen=True)
class StoredToken:
    """An access token as the vault keeps it (decrypted), with what the admin UI shows about it."""

    grant: str
    client_id: str
    access_token: str
    scope: str
    issued_at: float
    expires_at: float | None  # None: Zendesk gave no lifetime; it lasts until revoked
    refresh_token: str | None = None
    refresh_expires_at: float | None = None
    connected_at: float = 0.0
    connected_as: str = ""  # "Ada Admin <ada@acme.com>", for authorization-code connections
    generation: int = 0  # set by the vault: +1 on every save

    def fresh(self, now: float) -> bool:
        """Usable now and not about to expire: renew a minute early (a quarter of short lifetimes)."""
        if self.expires_at is None:
            return True
        margin = min(60.0, (self.expires_at - self.issued_at) / 4)
        return now < self.expires_at - margin


class TokenVault(Protocol):
    """Where an install's one token lives, shared by every thread and process."""

    def load(self) -> StoredToken | None:
        """The stored token, or None (none yet, or it can't be decrypted with today's key)."""

    def now(self) -> float:
        """The time every process sharing this vault reads, for the token's lifetime (one host's clock may be
        minutes off another's)."""

    def acquire(self, owner: str, seconds: float) -> bool:
        """Take the renewal lock for `seconds`; False if someone else holds it."""

    def save(self, token: StoredToken, *, owner: str, replaces: int | None) -> bool:
        """Store a new token and release the lock, unless the stored generation is no longer `replaces`."""

    def release(self, owner: str, *, error: str | None) -> None:
        """Release the lock; `error` records why a renewal failed (shown as auth_failing)."""

    def record_error(self, error: str | None) -> None:
        """Note (or clear) a failure seen while using the token, for /health and doctor."""

    def error(self) -> str | None:
        """The last failure recorded and not cleared since (a successful save clears it)."""

    def delete(self) -> None:
        """Forget the token (Disconnect)."""

    def remember_user(self, user_id: str) -> None:
        """Keep a Zendesk user id Deskroute has acted as, so its writes stay "ours" after a switch."""

    def users(self) -> set[str]:
        """Every user id Deskroute has acted as."""

    def connect(self, token: StoredToken) -> None:
        """Store a Connect-flow token in place of whatever is there: an admin just consented."""


class MemoryVault:
    """A vault for one process without a database (tests, one-off commands)."""

    def __init__(self) -> None:
        self._token: StoredToken | None = None
        self._generation = 0  # only grows, as the database's does: a delete is a new generation too
        self._error: str | None = None
        self._owner: str | None = None
        self._until = 0.0
        self._users: set[str] = set()
        self._lock = threading.Lock()

    def load(self) -> StoredToken | None:
        return self._token

    def now(self) -> float:
        return time.time()

    def acquire(self, owner: str, seconds: float) -> bool:
        with self._lock:
            if self._owner not in (None, owner) and self._until > time.monotonic():
                return False
            self._owner, self._until = owner, time.monotonic() + seconds
            return True

    def save(self, token: StoredToken, *, owner: str, replaces: int | None) -> bool:
        with self._lock:
            if self._owner == owner:
                self._owner = None
            if (self._token.generation if self._token else None) != replaces:
                return False
            self._generation += 1
            self._token = replace(token, generation=self._generation)
            self._error = None
            return True

    def release(self, owner: str, *, error: str | None) -> None:
        with self._lock:
            if self._owner == owner:
                self._owner = None
            self._error = error

    def record_error(self, error: str | None) -> None:
        self._error = error

    def error(self) -> str | None:
        return self._error

    def delete(self) -> None:
        with self._lock:
            self._token, self._error = None, None
            self._generation += 1

    def connect(self, token: StoredToken) -> None:
        with self._lock:
            self._generation += 1
            self._token, self._error = replace(token, generation=self._generation), None

    def remember_user(self, user_id: str) -> None:
        self._users.add(user_id)

    def users(self) -> set[str]:
        return set(self._users)


def api_root(base_url: str, subdomain: str) -> tuple[str, str]:
    """(scheme, host) of every Zendesk call: ZENDESK_BASE_URL or the subdomain's host, unless zenpy's own
    ZENPY_FORCE_SCHEME / ZENPY_FORCE_NETLOC say otherwise (tests and simulators set those)."""
    parsed = urlsplit(base_url or f"https://{subdomain}.zendesk.com")
    return (os.environ.get("ZENPY_FORCE_SCHEME") or parsed.scheme,
            os.environ.get("ZENPY_FORCE_NETLOC") or parsed.netloc)


def rebase(url: str, root: tuple[str, str]) -> str:
    """The same path on Deskroute's Zendesk host (zenpy builds URLs, and next pages come from Zendesk)."""
    parts = urlsplit(url)
    return urlunsplit((*root, parts.path, parts.query, parts.fragment))


def pkce_pair() -> tuple[str, str]:
    """(code_verifier, S256 code_challenge), as RFC 7636 section 4 specifies."""
    verifier = secrets.token_urlsafe(64)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


class ZendeskOAuth:
    """The three token requests and the authorization URL, for one OAuth client."""

    def __init__(self, *, subdomain: str, client_id: str, client_secret: str = "", base_url: str = "",
                 timeout: float = 10.0, clock: Callable[[], float] = time.time):
        self.subdomain = subdomain
        self.client_id = client_id
        self.client_secret = client_secret
        self.base_url = base_url
        self.timeout = timeout
        self.clock = clock  # no shared requests.Session: renewals, the admin's callback and revokes run on any thread

    def url(self, path: str) -> str:
        scheme, netloc = api_root(self.base_url, self.subdomain)
        return f"{scheme}://{netloc}{path}"

    def authorization_url(self, *, redirect_uri: str, state: str, code_challenge: str) -> str:
        """Where the admin consents (platform-facts §6)."""
        query = urlencode({"response_type": "code", "client_id": self.client_id, "redirect_uri": redirect_uri,
                           "scope": SCOPE, "state": state, "code_challenge": code_challenge,
                           "code_challenge_method": "S256"})
        return f"{self.url('/oauth/authorizations/new')}?{query}"

    def client_credentials(self) -> StoredToken:
        """A token for the admin who created the (confidential) client."""
        if not self.client_secret:
            raise OAuthError("not_connected", ADVICE["not_connected"])
        return self._request(CLIENT_CREDENTIALS, {"scope": SCOPE, "client_secret": self.client_secret})

    def exchange_code(self, *, code: str, redirect_uri: str, code_verifier: str) -> StoredToken:
        """The authorization code from the consent screen, for an access and a refresh token."""
        return self._request(AUTHORIZATION_CODE, {"code": code, "redirect_uri": redirect_uri, "scope": SCOPE,
                                                  "code_verifier": code_verifier, **self._secret()})

    def refresh(self, token: StoredToken) -> StoredToken:
        """A new access token and a new refresh token; Zendesk deletes the old pair."""
        if not token.refresh_token:
            raise OAuthError("invalid_grant", "Zendesk gave this connection no refresh token and its access token "
                             "stopped working: connect Zendesk again in the admin UI (/admin/zendesk)")
        fresh = self._request("refresh_token", {"refresh_token": token.refresh_token, "scope": token.scope or SCOPE,
                                                **self._secret()}, grant=AUTHORIZATION_CODE)
        return replace(fresh, connected_at=token.connected_at, connected_as=token.connected_as,
                       refresh_token=fresh.refresh_token or token.refresh_token)

    def user_for(self, access_token: str) -> dict[str, str]:
        """The user a token acts as (GET /api/v2/users/me), to show who connected; empty if Zendesk won't say."""
        try:
            response = requests.get(self.url("/api/v2/users/me.json"), timeout=self.timeout,
                                         headers={"Authorization": f"Bearer {access_token}"})
            user = response.json()["user"] if response.status_code == 200 else {}
        except (requests.RequestException, ValueError, KeyError, TypeError):
            user = {}
        return {key: str(user.get(key) or "") for key in ("id", "name", "email", "role")}

    def revoke(self, access_token: str) -> bool:
        """Ask Zendesk to delete a token (Disconnect); False if it could not be reached or refused."""
        try:
            response = requests.delete(self.url("/api/v2/oauth/tokens/current.json"), timeout=self.timeout,
                                       headers={"Authorization": f"Bearer {access_token}"})
        except requests.RequestException:
            return False
        return response.status_code in (200, 204)

    def _secret(self) -> dict[str, str]:
        # A public client proves itself with PKCE alone; a confidential one also sends its secret.
        return {"client_secret": self.client_secret} if self.client_secret else {}

    def _request(self, grant_type: str, fields: dict[str, str], *, grant: str | None = None) -> StoredToken:
        body = {"grant_type": grant_type, "client_id": self.client_id, "expires_in": TOKEN_SECONDS, **fields}
        started = self.clock()
        try:
            response = requests.post(self.url("/oauth/tokens"), json=body, timeout=self.timeout)
        except requests.RequestException as exc:
            raise OAuthError("unavailable", f"Zendesk's token endpoint did not answer ({type(exc).__name__}); "
                             "retrying later", retryable=True) from None
        if not 200 <= response.status_code < 300:
            raise _token_error(response, grant_type)
        try:
            payload = response.json()
            access_token = payload["access_token"]
        except (ValueError, KeyError, TypeError):
            raise OAuthError("unavailable", f"Zendesk's token endpoint answered {response.status_code} without a "
                             "token; retrying later", retryable=True, status=response.status_code) from None
        expires_in = _seconds(payload.get("expires_in"))
        refresh_in = _seconds(payload.get("refresh_token_expires_in"))
        return StoredToken(
            grant=grant or grant_type, client_id=self.client_id, access_token=str(access_token),
            scope=str(payload.get("scope") or fields.get("scope") or SCOPE), issued_at=started,
            expires_at=started + expires_in if expires_in else None,
            refresh_token=str(payload["refresh_token"]) if payload.get("refresh_token") else None,
            refresh_expires_at=started + refresh_in if refresh_in else None, connected_at=started)


def _seconds(value: Any) -> float | None:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    return seconds if seconds > 0 else None


def _token_error(response: requests.Response, grant_type: str) -> OAuthError:
    status = response.status_code
    try:
        code = str(response.json().get("error") or "")
    except (ValueError, AttributeError):
        code = ""
    if status == 429 or status >= 500:
        return OAuthError("unavailable", f"Zendesk's token endpoint answered {status}; retrying later",
                          retryable=True, status=status,
                          retry_after=parse_retry_after(response.headers.get("Retry-After")))
    if code == "invalid_grant" and grant_type == AUTHORIZATION_CODE:
        return OAuthError(code, "Zendesk refused the authorization code (invalid_grant: expired, used, or for "
                          "another redirect address): click Connect Zendesk again", status=status)
    advice = ADVICE.get(code) or f"Zendesk's token endpoint refused the request ({status} {code or 'no error code'})"
    return OAuthError(code or "refused", advice, status=status)


class TokenProvider:
    """Hands out the install's current access token, renewing it shortly before it expires and when the
    API refuses it. Thread-safe; shares the token with other processes through the vault.

    A renewal that fails (a wrong secret, Zendesk down) is not tried again at once: this process waits
    out a cool-down, doubling up to ten minutes, and answers with the same error meanwhile, so a
    backlog of events never turns into a stream of token requests.
    """

    POLL_SECONDS = 0.1
    # How long a process trusts its copy before looking at the vault again (another process may have
    # connected another account, or disconnected).
    RECHECK_SECONDS = 30.0
    COOL_DOWN_SECONDS, COOL_DOWN_MAX = 30.0, 600.0

    def __init__(self, client: ZendeskOAuth, vault: TokenVault, *, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep):
        self.client = client
        self.vault = vault
        self.clock = clock
        self.sleep = sleep
        self.owner = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        # Long enough for a token request and its timeout; should a renewer still be overtaken (a socket
        # timeout is per read, not per request), the loser sees invalid_grant and takes the winner's token.
        self.lock_seconds = 2 * client.timeout + 5
        self._current: StoredToken | None = None
        self._unsaved: tuple[StoredToken, int | None] | None = None  # renewed, but the database refused it
        self._checked_at = 0.0
        self._failing = False
        self._failures = 0
        self._cool_down: tuple[float, OAuthError] | None = None
        self._lock = threading.Lock()

    def _newer(self, token: StoredToken | None, than_generation: int | None) -> bool:
        """A usable, fresh token other than the one we saw: someone renewed it meanwhile."""
        return (self.usable(token) and token.generation != than_generation  # type: ignore[union-attr]
                and token.fresh(self.clock()))  # type: ignore[union-attr]

    def usable(self, token: StoredToken | None) -> bool:
        """A stored token this configuration may use: same client; client credentials only with the secret."""
        return (token is not None and token.client_id == self.client.client_id
                and (token.grant == AUTHORIZATION_CODE or bool(self.client.client_secret)))

    def token(self) -> str:
        """The access token to send now."""
        current = self._current
        now = self.clock()
        if current is not None and current.fresh(now) and now - self._checked_at < self.RECHECK_SECONDS:
            return current.access_token
        with self._lock:
            self._checked_at = now
            self._retry_unsaved()
            stored = self.vault.load()
            if self.usable(stored) and stored.fresh(now):  # type: ignore[union-attr]
                self._current = stored
                return stored.access_token  # type: ignore[union-attr]
            if self._current is not None and self._current.fresh(now) and not self.usable(stored):
                return self._current.access_token  # ours, kept in memory: the stored row is another's
            return self._renew(stored).access_token

    def renew_after_401(self, access_token: str) -> str:
        """The API answered 401 to `access_token`: a token renewed since, or a new one."""
        with self._lock:
            now = self.clock()
            stored = self.vault.load()
            if self.usable(stored) and stored.access_token != access_token and stored.fresh(now):  # type: ignore[union-attr]
                self._current = stored
                return stored.access_token  # type: ignore[union-attr]
            return self._renew(stored).access_token

    def identity(self) -> str:
        """Who the current token acts for, as a key: changes when an admin connects another account."""
        token = self._current or self.vault.load()
        if token is None:
            return "none"
        return f"{token.grant}:{token.client_id}:{token.connected_at if token.grant == AUTHORIZATION_CODE else ''}"

    def connected(self, token: StoredToken) -> None:
        """An admin just connected: this process uses the new token at once."""
        with self._lock:
            self._current, self._unsaved, self._cool_down, self._failures = token, None, None, 0

    def disconnect(self) -> bool:
        """Forget the Connect connection; True if Zendesk confirmed it revoked the token."""
        with self._lock:
            if not self.vault.acquire(self.owner, self.lock_seconds):
                raise OAuthError("unavailable", "a token renewal is under way; try again in a few seconds",
                                 retryable=True)
            revoked = False
            try:
                token = self.vault.load()
                if token is None or token.grant != AUTHORIZATION_CODE:
                    raise LookupError("no Connect Zendesk connection")
                try:  # an idle install's access token has expired: refresh, so there is a live one to revoke
                    live = token if token.fresh(self.clock()) else self.client.refresh(token)
                    revoked = self.client.revoke(live.access_token)
                except OAuthError:
                    revoked = False
                self.vault.delete()
            finally:
                self.vault.release(self.owner, error=None)
            self._current, self._unsaved = None, None
            return revoked

    def _renew(self, seen: StoredToken | None) -> StoredToken:
        if self._cool_down is not None and self.clock() < self._cool_down[0]:
            raise self._cool_down[1]  # failed moments ago: don't ask Zendesk again yet
        seen_generation = seen.generation if seen else None
        deadline = self.clock() + self.lock_seconds + 5
        while True:
            if self.vault.acquire(self.owner, self.lock_seconds):
                latest = self.vault.load()
                if self._newer(latest, seen_generation):
                    self.vault.release(self.owner, error=None)  # renewed between our read and our lock
                    self._current = latest
                    return latest  # type: ignore[return-value]
                return self._fetch(latest)
            # Another process is renewing: wait for its token rather than spend the refresh token twice.
            self.sleep(self.POLL_SECONDS)
            latest = self.vault.load()
            if self._newer(latest, seen_generation):
                self._current = latest
                return latest  # type: ignore[return-value]
            if self.clock() > deadline:
                raise OAuthError("unavailable", "another Deskroute process is renewing the Zendesk token and has "
                                 "not finished; retrying later", retryable=True)

    def _fetch(self, latest: StoredToken | None) -> StoredToken:
        """Get a new token while holding the lock, and store it."""
        try:
            if latest is not None and self.usable(latest) and latest.grant == AUTHORIZATION_CODE:
                new = self.client.refresh(latest)
            else:
                new = self.client.client_credentials()
        except OAuthError as exc:
            stored = self.vault.load()
            if (exc.code == "invalid_grant" and latest is not None and self.usable(stored)
                    and stored.generation != latest.generation):  # type: ignore[union-attr]
                # Another process refreshed first (its lease outlived ours): its token is the live one.
                self.vault.release(self.owner, error=None)
                self._current = stored
                return stored  # type: ignore[return-value]
            self.vault.release(self.owner, error=str(exc))
            log.error("zendesk token renewal failed", extra={"oauth_error": exc.code, "status": exc.status,
                                                             "advice": str(exc)})
            raise self._fail(exc) from None
        self._failures, self._cool_down = 0, None
        if latest is not None and latest.grant == AUTHORIZATION_CODE and not self.usable(latest):
            # Another client's connection (or one this process can't use): never overwrite it.
            self.vault.release(self.owner, error=None)
            self._current = new
            return new
        replaces = latest.generation if latest is not None else None
        try:
            saved = self.vault.save(new, owner=self.owner, replaces=replaces)
        except Exception as exc:  # the database is busy or full: Zendesk has already rotated the old token
            log.critical("zendesk token renewed but not stored; retrying the save with every call",
                         extra={"error": type(exc).__name__})
            self._unsaved = (new, replaces)
            self._current = new
            return new
        if not saved:
            stored = self.vault.load()
            if self.usable(stored):  # an admin connected meanwhile, or another process stored first: theirs
                self._current = stored
                return stored  # type: ignore[return-value]
            if new.grant == AUTHORIZATION_CODE:  # disconnected while we refreshed: drop what we got
                self.client.revoke(new.access_token)
                raise OAuthError("not_connected", ADVICE["not_connected"])
        self._current = new
        log.info("zendesk token renewed", extra={"grant": new.grant})
        return new

    def _retry_unsaved(self) -> None:
        if self._unsaved is None:
            return
        token, replaces = self._unsaved
        if self.vault.acquire(self.owner, self.lock_seconds):
            try:
                if self.vault.save(token, owner=self.owner, replaces=replaces):
                    log.warning("zendesk token stored after all")
                self._unsaved = None  # stored, or superseded by a newer token
            except Exception:  # still can't: keep it in memory and try again next time
                self.vault.release(self.owner, error=None)

    def _fail(self, exc: OAuthError) -> OAuthError:
        """Remember a failed renewal: no new request to Zendesk until the cool-down ends."""
        self._failures += 1
        wait = min(self.COOL_DOWN_MAX, (5.0 if exc.retryable else self.COOL_DOWN_SECONDS) * 2 ** (self._failures - 1))
        wait = max(wait, exc.retry_after or 0.0)
        self._cool_down = (self.clock() + wait, exc)
        return exc

    def succeeded(self) -> None:
        """The API accepted our token: clear a failure this process recorded."""
        if self._failing:
            self._failing = False
            self.vault.record_error(None)

    def failed(self, error: str) -> None:
        """The API refused even a renewed token (a user who lost access, scopes taken away): record it, and
        renew no more tokens for a while, since a new one would be refused too."""
        self._failing = True
        self.vault.record_error(error)
        with self._lock:
            self._fail(OAuthError("refused_token", error, status=401))

    def status(self) -> dict[str, Any]:
        """What /health, doctor and the admin UI show: never the token itself."""
        stored = self.vault.load()
        unreadable = getattr(self.vault, "unreadable", None)
        if self.usable(stored):
            assert stored is not None
            auth = f"oauth_{stored.grant}"
        elif self.client.client_secret:
            auth = f"oauth_{CLIENT_CREDENTIALS}"
        elif unreadable:
            return {"auth": "oauth", "status": "auth_failing", "error": unreadable}
        else:
            return {"auth": "oauth", "status": "not_connected"}
        error = self.vault.error() or unreadable
        return {"auth": auth, "status": "auth_failing" if error else "ok", **({"error": error} if error else {})}


class BearerAuth(requests.auth.AuthBase):
    """Puts the provider's current token on every request zenpy sends."""

    def __init__(self, provider: TokenProvider):
        self.provider = provider

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self.provider.token()}"
        return request
