"""Zendesk's OAuth server, in memory, for the loopback Zendesk (platforms/fakes/zendesk.py).

What it does as Zendesk does (platform-facts §6): `POST /oauth/tokens` with the client_credentials,
authorization_code (PKCE S256 checked, codes valid 120 s, one use) and refresh_token grants; refresh
tokens rotate (a refresh deletes the old access and refresh tokens); access tokens expire after
`expires_in` (or the fake's own `token_seconds`); errors are RFC 6749 JSON (`invalid_client` 401,
`invalid_grant` / `invalid_scope` / `unsupported_grant_type` 400). A consent page at
`/oauth/authorizations/new` redirects back with `code` and `state`, or `error=access_denied`.
"""

from __future__ import annotations

import base64
import hashlib
import html
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from werkzeug.wrappers import Request, Response

from platforms.fakes.base import json_response

_ERRORS = {
    "invalid_client": (401, "The client identifier provided is invalid, the client failed to authenticate, the "
                            "client did not include its credentials, provided multiple client credentials, or used "
                            "unsupported credentials type."),
    "invalid_grant": (400, "The provided access grant is invalid, expired, or revoked (e.g. invalid assertion, "
                           "expired authorization token, bad end-user password credentials, or mismatching "
                           "authorization code and redirection URI)."),
    "invalid_scope": (400, "The requested scope is invalid, unknown, malformed, or exceeds the previously granted "
                           "scope."),
    "unsupported_grant_type": (400, "The access grant included - its type or another attribute - is not supported "
                                    "by the authorization server."),
    "invalid_request": (400, "The request is missing a required parameter, includes an unsupported parameter or "
                             "parameter value, or is otherwise malformed."),
}
INVALID_TOKEN = {"error": "invalid_token", "error_description": "The access token provided is expired, revoked, "
                 "malformed or invalid for other reasons."}
CODE_SECONDS = 120


def oauth_error(code: str) -> Response:
    status, description = _ERRORS[code]
    headers = {"WWW-Authenticate": 'Basic realm="OAuth2 Token Endpoint"'} if status == 401 else None
    return json_response(status, {"error": code, "error_description": description}, headers)


@dataclass
class Client:
    """An OAuth client as an admin creates it in Admin Center."""

    secret: str | None  # None: a public client (PKCE only)
    user_id: int  # the admin who created it: client-credentials tokens act as this user
    scopes: frozenset[str] = frozenset({"read", "write"})
    redirect_uris: list[str] = field(default_factory=list)  # empty: any loopback address (tests)


@dataclass
class Grant:
    client_id: str
    user_id: int
    scope: str
    expires_at: float | None


class FakeOAuthServer:
    """Clients, codes and tokens; FakeZendesk routes `/oauth/*` here and asks it who a token is."""

    def __init__(self, *, clock: Callable[[], float] = time.time, token_seconds: float | None = None):
        self.clock = clock
        self.token_seconds = token_seconds  # forced lifetime of access tokens (tests make them short)
        self.clients: dict[str, Client] = {}
        self.consenting_user = 0  # who is signed in to Zendesk when an admin clicks Allow
        self.access_tokens: dict[str, Grant] = {}
        self.refresh_tokens: dict[str, tuple[Grant, str]] = {}  # refresh token -> (grant, its access token)
        self.codes: dict[str, dict[str, Any]] = {}
        self.grants_issued: list[str] = []  # grant_type of every token issued, in order

    # --- test-side controls ----------------------------------------------------------------------

    def add_client(self, client_id: str, *, secret: str | None, user_id: int, **options: Any) -> None:
        self.clients[client_id] = Client(secret=secret, user_id=user_id, **options)

    def revoke_client(self, client_id: str) -> None:
        """An admin deletes the client: it and every token it issued stop working."""
        self.clients.pop(client_id, None)
        self.access_tokens = {t: g for t, g in self.access_tokens.items() if g.client_id != client_id}
        self.refresh_tokens = {t: v for t, v in self.refresh_tokens.items() if v[0].client_id != client_id}

    def revoke(self, access_token: str) -> None:
        """DELETE /api/v2/oauth/tokens/current: the token goes, and (we assume; Zendesk's docs don't say)
        the refresh token issued with it."""
        self.access_tokens.pop(access_token, None)
        self.refresh_tokens = {t: v for t, v in self.refresh_tokens.items() if v[1] != access_token}

    def expire_access_tokens(self) -> None:
        """Every access token expires now (refresh tokens keep working)."""
        for grant in self.access_tokens.values():
            grant.expires_at = self.clock() - 1

    def user_for(self, token: str) -> int | None:
        """The user a live access token acts as, or None."""
        grant = self.access_tokens.get(token)
        if grant is None or (grant.expires_at is not None and grant.expires_at <= self.clock()):
            return None
        return grant.user_id

    # --- endpoints -------------------------------------------------------------------------------

    def route(self, request: Request, body: Any) -> Response | None:
        """Answer an /oauth/ request; None for any other path."""
        if request.path == "/oauth/tokens" and request.method == "POST":
            fields = body if isinstance(body, dict) else request.form.to_dict()
            return self._token(fields)
        if request.path == "/oauth/authorizations/new" and request.method == "GET":
            return self._consent_page(request.args.to_dict())
        if request.path == "/oauth/authorizations" and request.method == "POST":
            return self._decide(request.form.to_dict())
        return None

    def _issue(self, client_id: str, user_id: int, scope: str, expires_in: Any, *, refresh: bool,
               grant_type: str) -> Response:
        seconds = self.token_seconds
        if seconds is None and expires_in is not None:
            seconds = float(expires_in)
        grant = Grant(client_id, user_id, scope, self.clock() + seconds if seconds else None)
        access = secrets.token_hex(16)
        self.access_tokens[access] = grant
        payload: dict[str, Any] = {"access_token": access, "token_type": "bearer", "scope": scope}
        if seconds:
            payload["expires_in"] = int(seconds) if float(seconds).is_integer() else seconds
        if refresh:
            token = secrets.token_hex(16)
            self.refresh_tokens[token] = (grant, access)
            payload.update(refresh_token=token, refresh_token_expires_in=2_592_000)
        self.grants_issued.append(grant_type)
        return json_response(201, payload)

    def _token(self, fields: dict[str, Any]) -> Response:
        grant_type = fields.get("grant_type")
        client = self.clients.get(str(fields.get("client_id") or ""))
        if client is None:
            return oauth_error("invalid_client")
        given_secret = fields.get("client_secret")
        if given_secret is not None and given_secret != client.secret:
            return oauth_error("invalid_client")
        expires_in = fields.get("expires_in")
        if expires_in is not None and not (isinstance(expires_in, int | float) and 300 < expires_in < 172800):
            return oauth_error("invalid_request")
        scope = str(fields.get("scope") or "read")
        if not set(scope.split()) <= client.scopes:
            return oauth_error("invalid_scope")
        client_id = str(fields["client_id"])
        if grant_type == "client_credentials":
            if client.secret is None or given_secret is None:
                return oauth_error("invalid_client")
            return self._issue(client_id, client.user_id, scope, expires_in, refresh=False, grant_type=grant_type)
        if grant_type == "authorization_code":
            code = self.codes.pop(str(fields.get("code") or ""), None)
            if (code is None or code["client_id"] != client_id or code["expires_at"] < self.clock()
                    or code["redirect_uri"] != fields.get("redirect_uri")):
                return oauth_error("invalid_grant")
            if code["challenge"]:  # PKCE: the verifier must hash to the challenge sent with the consent
                if _challenge(str(fields.get("code_verifier") or "")) != code["challenge"]:
                    return oauth_error("invalid_grant")
            elif given_secret is None:
                return oauth_error("invalid_client")
            return self._issue(client_id, code["user_id"], scope, expires_in, refresh=True, grant_type=grant_type)
        if grant_type == "refresh_token":
            found = self.refresh_tokens.pop(str(fields.get("refresh_token") or ""), None)
            if found is None or found[0].client_id != client_id:
                return oauth_error("invalid_grant")
            grant, old_access = found
            self.access_tokens.pop(old_access, None)  # rotation: the old pair is deleted
            return self._issue(client_id, grant.user_id, scope, expires_in, refresh=True, grant_type=grant_type)
        return oauth_error("unsupported_grant_type")

    def _consent_page(self, args: dict[str, str]) -> Response:
        client = self.clients.get(args.get("client_id", ""))
        if client is None or args.get("response_type") != "code" or not args.get("redirect_uri"):
            return Response("<h1>Invalid authorization request</h1>", status=400, content_type="text/html")
        if client.redirect_uris and args["redirect_uri"] not in client.redirect_uris:
            return Response("<h1>Redirect URI mismatch</h1>", status=400, content_type="text/html")
        hidden = "".join(f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
                         for k, v in args.items())
        page = (f"<!doctype html><title>Allow access</title><h1>Deskroute wants to access your account</h1>"
                f"<p>Scope: {html.escape(args.get('scope', ''))}</p><form method='post' action='/oauth/authorizations'>"
                f"{hidden}<button name='decision' value='allow' id='allow'>Allow</button> "
                f"<button name='decision' value='deny' id='deny'>Deny</button></form>")
        return Response(page, content_type="text/html")

    def _decide(self, form: dict[str, str]) -> Response:
        redirect_uri = form.get("redirect_uri", "")
        state = {"state": form["state"]} if form.get("state") else {}
        if form.get("decision") != "allow":
            query = urlencode({"error": "access_denied",
                               "error_description": "The end-user or authorization server denied the request.",
                               **state})
            return Response(status=302, headers={"Location": f"{redirect_uri}?{query}"})
        code = secrets.token_hex(10)
        self.codes[code] = {"client_id": form.get("client_id"), "redirect_uri": redirect_uri,
                            "challenge": form.get("code_challenge", ""), "user_id": self.consenting_user,
                            "expires_at": self.clock() + CODE_SECONDS}
        return Response(status=302, headers={"Location": f"{redirect_uri}?{urlencode({'code': code, **state})}"})


def _challenge(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
