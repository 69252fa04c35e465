"""Encryption of secrets kept in the database (OAuth tokens), with a key that is never stored there.

Fernet (AES-128-CBC + HMAC-SHA256, from the `cryptography` package) with a key derived by HKDF from a
secret the operator holds: DESKROUTE_SECRET_KEY, or for client-credentials tokens the OAuth client
secret. HKDF suits these inputs because both are long random strings, not passwords; `purpose`
separates the keys so that one derived key never opens another purpose's rows.
"""

from __future__ import annotations

import base64
import functools
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography.fernet import Fernet

# DESKROUTE_SECRET_KEY must be at least this long to encrypt anything with it (32 random characters
# carry well over 128 bits); `python -c "import secrets; print(secrets.token_urlsafe(32))"` makes one.
MIN_SECRET_KEY_LENGTH = 32


class Undecryptable(Exception):
    """The ciphertext was made with another key (the secret changed) or was tampered with."""


class SecretBox:
    """Encrypts and decrypts short strings with a key derived from `secret` for one `purpose`.

    `cryptography` is loaded on first use: a web process that only takes webhooks never needs it."""

    def __init__(self, secret: str, *, purpose: str):
        if not secret:
            raise ValueError("a SecretBox needs a secret")
        self._secret = secret
        self._purpose = purpose

    @functools.cached_property
    def _fernet(self) -> Fernet:
        from cryptography.fernet import Fernet
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF

        derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                       info=f"deskroute:{self._purpose}".encode()).derive(self._secret.encode())
        return Fernet(base64.urlsafe_b64encode(derived))

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode("ascii")

    def decrypt(self, ciphertext: str) -> str:
        from cryptography.fernet import InvalidToken

        try:
            return self._fernet.decrypt(ciphertext.encode("ascii")).decode()
        except (InvalidToken, ValueError):
            raise Undecryptable("stored secret can't be decrypted with the current key") from None


def last4(secret: str) -> str:
    """What the admin UI may show of a secret."""
    return f"…{secret[-4:]}" if len(secret) >= 12 else "…"
