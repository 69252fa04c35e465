"""The OAuth token vault in the database: one encrypted token per helpdesk, shared by every process.

Tokens are encrypted (connector/crypto.py) with a key that is not in the database:
DESKROUTE_SECRET_KEY when set (and always for Connect-flow tokens, which carry a refresh token), or
for client-credentials tokens a key derived from the OAuth client secret. A process whose key can't
open the stored token leaves it alone (another process, rightly configured, may be using it) and
reports auth_failing; with client credentials it signs in with a token of its own meanwhile.
"""

from __future__ import annotations

import logging
from typing import Any

from connector.crypto import MIN_SECRET_KEY_LENGTH, SecretBox, Undecryptable
from connector.store import Store
from platforms.zendesk_oauth import AUTHORIZATION_CODE, StoredToken

log = logging.getLogger(__name__)

SECRET_KEY, CLIENT_SECRET = "secret_key", "client_secret"


class ConnectUnavailable(Exception):
    """The Connect flow can't store tokens safely; the message says which setting to add."""


class DbVault:
    """A TokenVault (platforms/zendesk_oauth.py) over the store's `oauth_tokens` and `locks` tables."""

    def __init__(self, store: Store, platform: str, *, secret_key: str = "", client_secret: str = ""):
        self.store = store
        self.platform = platform
        self.lock_name = f"oauth:{platform}"
        self.unreadable: str | None = None  # why the stored token can't be opened here, if it can't
        self._boxes: dict[str, SecretBox] = {}
        if len(secret_key) >= MIN_SECRET_KEY_LENGTH:
            self._boxes[SECRET_KEY] = SecretBox(secret_key, purpose=f"{platform}-oauth")
        if client_secret:
            self._boxes[CLIENT_SECRET] = SecretBox(client_secret, purpose=f"{platform}-oauth-client-credentials")

    @property
    def can_store_connections(self) -> bool:
        """Whether Connect-flow tokens (long-lived refresh tokens) can be encrypted: DESKROUTE_SECRET_KEY is set."""
        return SECRET_KEY in self._boxes

    def _key_for(self, grant: str) -> str:
        if SECRET_KEY in self._boxes:
            return SECRET_KEY
        if grant != AUTHORIZATION_CODE and CLIENT_SECRET in self._boxes:
            return CLIENT_SECRET
        raise ConnectUnavailable(f"set DESKROUTE_SECRET_KEY (at least {MIN_SECRET_KEY_LENGTH} random characters) "
                                 "so that Deskroute can encrypt the Zendesk connection's tokens")

    def now(self) -> float:
        return self.store.db.wall()  # the database server's clock on PostgreSQL, as the queue's leases

    def load(self) -> StoredToken | None:
        row = self.store.auth.token(self.platform)
        if row is None or row["access_token"] is None:
            self.unreadable = None
            return None
        box = self._boxes.get(row["key_id"])
        try:
            if box is None:
                raise Undecryptable(row["key_id"])
            access = box.decrypt(row["access_token"])
            refresh = box.decrypt(row["refresh_token"]) if row["refresh_token"] else None
        except Undecryptable:
            if not self.unreadable:
                log.warning("stored zendesk token can't be decrypted with this process's key; leaving it alone",
                            extra={"platform": self.platform, "grant": row["grant"], "key": row["key_id"]})
            setting = "DESKROUTE_SECRET_KEY" if row["key_id"] == SECRET_KEY else "ZENDESK_OAUTH_CLIENT_SECRET"
            self.unreadable = (f"this process can't decrypt the stored Zendesk token: give it the same {setting} "
                               "as the process that stored it (if the key was changed on purpose, connect again)")
            return None
        self.unreadable = None
        return StoredToken(grant=row["grant"], client_id=row["client_id"] or "", access_token=access,
                           scope=row["scope"] or "", issued_at=row["issued_at"] or 0.0, expires_at=row["expires_at"],
                           refresh_token=refresh, refresh_expires_at=row["refresh_expires_at"],
                           connected_at=row["connected_at"] or 0.0, connected_as=row["connected_as"] or "",
                           generation=row["generation"])

    def acquire(self, owner: str, seconds: float) -> bool:
        now = self.store.db.wall()  # real time, as every machine agrees on it, whatever clock the app runs on
        return self.store.auth.try_lock(self.lock_name, owner, until=now + seconds, now=now)

    def save(self, token: StoredToken, *, owner: str, replaces: int | None, force: bool = False) -> bool:
        key_id = self._key_for(token.grant)
        box = self._boxes[key_id]
        fields: dict[str, Any] = {
            "grant": token.grant, "client_id": token.client_id, "key_id": key_id,
            "access_token": box.encrypt(token.access_token),
            "refresh_token": box.encrypt(token.refresh_token) if token.refresh_token else None,
            "scope": token.scope, "issued_at": token.issued_at, "expires_at": token.expires_at,
            "refresh_expires_at": token.refresh_expires_at, "connected_at": token.connected_at,
            "connected_as": token.connected_as}
        try:
            return self.store.auth.save_token(self.platform, fields, replaces=replaces, now=self.store.db.wall(),
                                              force=force)
        finally:
            if owner:
                self.store.auth.unlock(self.lock_name, owner)

    def release(self, owner: str, *, error: str | None) -> None:
        self.store.auth.unlock(self.lock_name, owner)
        self.record_error(error)

    def record_error(self, error: str | None) -> None:
        self.store.auth.record_error(self.platform, error, now=self.store.db.wall())

    def error(self) -> str | None:
        row = self.store.auth.token(self.platform)
        return row["last_error"] if row else None

    def delete(self) -> None:
        self.store.auth.clear_token(self.platform, now=self.store.db.wall())

    def connect(self, token: StoredToken) -> None:
        """Store a Connect-flow token in place of whatever was there: the admin just consented."""
        self.save(token, owner="", replaces=None, force=True)

    def remember_user(self, user_id: str) -> None:
        self.store.auth.add_user(self.platform, user_id, now=self.store.db.wall())

    def users(self) -> set[str]:
        return self.store.auth.users(self.platform)

    def error_seen_at(self) -> float | None:
        """When the recorded failure was last seen."""
        row = self.store.auth.token(self.platform)
        return row["last_error_at"] if row else None
