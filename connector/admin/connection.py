"""/admin/zendesk: how Deskroute signs in to Zendesk, and "Connect Zendesk" (authorization code + PKCE).

The admin clicks Connect; Deskroute sends the browser to Zendesk's consent screen with a PKCE
challenge and a `state` bound to the admin's session; Zendesk sends it back to the callback with a
code, which Deskroute exchanges for an access and a refresh token, stored encrypted (connector/tokens.py).
"""

from __future__ import annotations

import hmac
import logging
import secrets
import time
from dataclasses import replace
from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, request, session, url_for

from connector.admin.auth import login_required, once_a_minute, services
from connector.crypto import MIN_SECRET_KEY_LENGTH, last4
from connector.tokens import ConnectUnavailable
from platforms.base import PlatformError
from platforms.zendesk_oauth import AUTHORIZATION_CODE, OAuthError, pkce_pair

log = logging.getLogger(__name__)

PENDING = "zendesk_oauth"  # session key of an authorization under way
PENDING_SECONDS = 600  # a consent not finished within this is started again


bp = Blueprint("zendesk", __name__, url_prefix="/zendesk")


def zendesk() -> Any:
    return services().platforms.get("zendesk")


def provider() -> Any:
    """The Zendesk TokenProvider, or None (Zendesk not configured, or on a legacy API token)."""
    platform = zendesk()
    return platform.tokens if platform is not None else None


def acting_as(platform: Any) -> dict[str, str] | None:
    """Who the current token acts as, asked at most once a minute."""
    def ask() -> dict[str, str] | None:
        try:
            return platform.whoami()  # type: ignore[no-any-return]
        except PlatformError:
            return None

    key = platform.tokens.identity() if platform.tokens is not None else "api_token"
    return once_a_minute("zendesk_me", key, ask)  # type: ignore[no-any-return]


def why_no_connect() -> str | None:
    settings = services().settings
    if not settings.zendesk_oauth_client_id:
        return "set ZENDESK_OAUTH_CLIENT_ID (and ZENDESK_SUBDOMAIN) first"
    tokens = provider()
    if tokens is None:
        return "Zendesk is not configured: see the settings it still needs above"
    if not tokens.vault.can_store_connections:
        return (f"set DESKROUTE_SECRET_KEY (at least {MIN_SECRET_KEY_LENGTH} random characters) so that Deskroute "
                "can encrypt the connection's tokens with a key that is not kept in its database")
    return None


def redirect_uri() -> str:
    base = services().settings.deskroute_public_url.rstrip("/") or request.host_url.rstrip("/")
    return base + url_for("admin.zendesk.callback")


@bp.get("")
@login_required
def index() -> Any:
    platform = zendesk()
    view: dict[str, Any] = {"platform": platform, "missing": services().unconfigured.get("zendesk", []),
                            "refused": services().refused.get("zendesk"), "why_no_connect": why_no_connect()}
    if platform is not None:
        status = platform.auth_status()
        tokens = platform.tokens
        view.update(status=status, me=acting_as(platform),
                    error_seen_at=tokens.vault.error_seen_at() if tokens is not None else None)
        token = tokens.vault.load() if tokens is not None else None
        if token is not None and tokens.usable(token):
            view["token"] = {"grant": token.grant, "scope": token.scope, "since": token.connected_at,
                             "expires_at": token.expires_at, "last4": last4(token.access_token),
                             "connected_as": token.connected_as, "connection_expires_at": token.refresh_expires_at}
    return render_template("admin/zendesk.html", **view)


@bp.post("/connect")
@login_required
def connect() -> Any:
    reason = why_no_connect()
    if reason:
        abort(409, f"Connect Zendesk is off: {reason}.")
    state = secrets.token_urlsafe(24)
    verifier, challenge = pkce_pair()
    uri = redirect_uri()
    # The verifier never travels in a URL: it waits in the admin's session (signed, HttpOnly), as
    # OAuth client libraries keep it, and is spent by the callback.
    session[PENDING] = {"state": state, "verifier": verifier, "redirect_uri": uri, "at": time.time()}
    log.info("zendesk connect started")
    return redirect(provider().client.authorization_url(redirect_uri=uri, state=state, code_challenge=challenge))


@bp.get("/callback")
@login_required
def callback() -> Any:
    pending = session.pop(PENDING, None)
    state = request.args.get("state", "")
    if (not pending or time.time() - pending["at"] > PENDING_SECONDS
            or not hmac.compare_digest(pending["state"].encode(), state.encode())):
        log.warning("zendesk connect refused", extra={"why": "state"})
        return back(error="That answer from Zendesk doesn't match a Connect started here (or it took more than"
                          " 10 minutes). Click Connect Zendesk again.")
    if request.args.get("error"):
        log.info("zendesk connect declined", extra={"oauth_error": request.args["error"][:40]})
        return back(error=f"Zendesk did not connect: {request.args['error'][:40]} "
                          f"({request.args.get('error_description', '')[:200]})")
    tokens = provider()
    if tokens is None:
        return back(error="Zendesk is not configured in this process: see the settings it still needs.")
    try:
        token = tokens.client.exchange_code(code=request.args.get("code", ""), redirect_uri=pending["redirect_uri"],
                                            code_verifier=pending["verifier"])
    except OAuthError as exc:
        log.warning("zendesk connect failed", extra={"oauth_error": exc.code, "status": exc.status})
        return back(error=str(exc))
    me = tokens.client.user_for(token.access_token)
    token = replace(token, connected_as=f"{me['name']} <{me['email']}>" if me.get("email") else me.get("name", ""))
    try:
        tokens.vault.connect(token)
    except ConnectUnavailable as exc:
        tokens.client.revoke(token.access_token)
        return back(error=str(exc))
    tokens.connected(token)
    if me.get("id"):
        tokens.vault.remember_user(me["id"])
    log.info("zendesk connected", extra={"grant": AUTHORIZATION_CODE, "user_id": me.get("id")})
    return back(message=f"Connected to Zendesk as {token.connected_as or 'an unknown user'}.")


@bp.post("/disconnect")
@login_required
def disconnect() -> Any:
    tokens = provider()
    if tokens is None:
        abort(409, "Zendesk is not configured.")
    try:
        revoked = tokens.disconnect()
    except LookupError:
        abort(409, "There is no Connect Zendesk connection to remove.")
    except OAuthError as exc:
        return back(error=str(exc))
    log.info("zendesk disconnected", extra={"revoked": revoked})
    after = ("Deskroute now signs in with the client-credentials grant." if tokens.client.client_secret
             else "Deskroute is not connected to Zendesk until you connect again.")
    unrevoked = "" if revoked else " Zendesk could not confirm it revoked the token: check Admin Center."
    return back(message=f"Disconnected.{unrevoked} {after}")


def back(**outcome: str) -> Any:
    """Back to the page, with the outcome shown once (never taken from the URL, where a link could forge it)."""
    for category, text in outcome.items():
        flash(text, category)
    return redirect(url_for("admin.zendesk.index"))
