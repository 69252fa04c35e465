"""Deskroute: routes new helpdesk tickets, and learns from agents' re-routes."""

from __future__ import annotations

import gc
import hmac
import json
import logging
import threading
from typing import TYPE_CHECKING, Any

from flask import Flask, Response, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from connector.models import EventState
from connector.settings import Settings
from connector.store import StoreUnavailable

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from connector.services import Services

__all__ = ["Settings", "create_app"]


def _platform_health(services: Services, name: str) -> dict[str, object]:
    platform = services.platforms.get(name)
    if platform is None:
        health: dict[str, object] = {"configured": False, "missing": services.unconfigured.get(name, [])}
        if name in services.refused:
            health["reason"] = services.refused[name]
        return health
    health = {"configured": True}
    try:  # how we sign in, and whether it works; never a token or its error text
        status = platform.auth_status()
        health.update(auth=status["auth"], status=status["status"])
    except Exception as exc:  # the database can't be read: /health's own check reports it
        health.update(status="unknown", error=type(exc).__name__)
    webhooks = platform.webhook_problem()
    if webhooks:
        health["webhooks"] = webhooks
    if platform.rate_limit_remaining is not None:  # from the helpdesk's last answer
        health["rate_limit_remaining"] = platform.rate_limit_remaining
    return health


def _attention(body: dict[str, Any]) -> list[str]:
    """What needs a person, one line each (empty: nothing). /health stays 200 while the process can serve, so
    that a load balancer doesn't restart it for something a restart can't fix; monitors alert on this list."""
    lines = [f"{name}: the helpdesk refuses our credentials (the admin UI and `deskroute doctor` say why)"
             for name, platform in body["platforms"].items() if platform.get("status") == "auth_failing"]
    lines += [f"{name}: not connected: an admin connects it in the admin UI (/admin/{name}); events wait meanwhile"
              for name, platform in body["platforms"].items() if platform.get("status") == "not_connected"]
    lines += [f"{name}: {platform['webhooks']}" for name, platform in body["platforms"].items()
              if platform.get("webhooks")]
    dead = body["queue"].counts.get(EventState.DEAD, 0)
    if dead:
        lines.append(f"queue: {dead} dead-lettered event(s): `deskroute tickets list --state dead` says why")
    return lines


def freeze_startup_objects() -> None:
    """Exclude everything allocated at startup from garbage collection.

    A full collection over the imported libraries takes tens of milliseconds, a pause that lands on
    whichever webhook is being answered. Frozen objects are never scanned (as gunicorn's docs advise).
    """
    gc.collect()
    gc.freeze()


def create_app(settings: Settings | None = None, *, services: Services | None = None) -> Flask:
    """The web app: webhooks, /health and /metrics. Workers and the scheduler start elsewhere.

    Args:
        settings: defaults to the environment and `.env`.
        services: a prebuilt connector.services.Services (tests, `deskroute serve`).
    """
    from connector import apps_api, webhooks
    from connector.admin import init_admin
    from connector.logs import configure_logging
    from connector.metrics import make_registry
    from connector.services import Services

    production = False
    if services is None:
        production = settings is None  # the gunicorn entry point: configure from the environment
        settings = settings or Settings()
        if production:
            configure_logging(settings.deskroute_log_level, settings.deskroute_log_format)
        services = Services(settings)
        services.report_platforms()
    settings = services.settings

    app = Flask(__name__)
    if settings.deskroute_trusted_proxies:
        # Behind N proxies, believe their last N X-Forwarded-* entries (the ones they wrote), no more.
        n = settings.deskroute_trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n)  # type: ignore[method-assign]
    # Werkzeug enforces this on bodies without Content-Length too (chunked uploads).
    app.config["MAX_CONTENT_LENGTH"] = settings.deskroute_max_body_bytes
    metrics_token = settings.deskroute_metrics_token.get_secret_value()

    def authorized() -> bool:
        """Whether this request may see /metrics and /health's details."""
        if not metrics_token:
            return True
        given = request.headers.get("Authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {metrics_token}".encode())

    def auth_failing() -> dict[str, bool]:
        """For /metrics: whether each helpdesk refuses our credentials (as any process of the install saw last)."""
        return {name: adapter.auth_status()["status"] == "auth_failing"
                for name, adapter in services.platforms.items()}

    registry, webhook_requests = make_registry(services.store, accuracy_hours=settings.deskroute_accuracy_hours,
                                               clock=services.clock, auth_failing=auth_failing)
    app.extensions["deskroute"] = services
    webhooks.register(app, services, webhook_requests)
    init_admin(app, services)
    apps_api.register(app, services)

    @app.get("/health")
    def health() -> tuple[Response, int]:
        """Liveness and configuration at a glance; 503 if the database can't be read.

        With DESKROUTE_METRICS_TOKEN set, only the token's holder sees more than ok or not."""
        if not authorized():
            try:
                services.store.ping()
            except Exception:
                return jsonify(status="unavailable"), 503
            return jsonify(status="ok"), 200
        body: dict[str, object] = {"platforms": {name: _platform_health(services, name) for name in services.mappings}}
        try:
            services.store.ping()
            body["queue"] = services.store.events.health(now=services.clock())
            body["model_version"] = services.store.models.active_version()
        except Exception as exc:  # any database failure is reported, not raised
            body.update(status="unavailable", database=type(exc).__name__)
            return jsonify(body), 503
        body.update(status="ok", database="ok", shadow=settings.deskroute_shadow, attention=_attention(body))
        return jsonify(body), 200

    @app.get("/metrics")
    def metrics() -> Response:
        """Prometheus text format; with DESKROUTE_METRICS_TOKEN set, for the token's holder only."""
        if not authorized():
            return Response(json.dumps({"error": "missing or wrong bearer token"}), status=401,
                            content_type="application/json", headers={"WWW-Authenticate": 'Bearer realm="metrics"'})
        return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> tuple[Response, int]:
        """JSON errors everywhere, so webhook senders and scripts can read them."""
        return jsonify(error=exc.description or exc.name), exc.code or 500

    @app.errorhandler(StoreUnavailable)
    def store_unavailable(exc: StoreUnavailable) -> tuple[Response, int, dict[str, str]]:
        """The database is down or busy (an admin page, /metrics): 503, try again shortly, not a 500."""
        log.warning("database unavailable", extra={"path": request.path, "error": str(exc)})
        return jsonify(error="the database is unavailable; try again shortly"), 503, {"Retry-After": "5"}

    if production:
        _fork_safe(app, services)
    return app


def _fork_safe(app: Flask, services: Services) -> None:
    """Ready the app to be built once and forked into workers (`gunicorn --preload`, as in the Procfile).

    The workers then share the imported libraries' memory. No database connection may cross the fork
    (two processes on one socket or SQLite handle corrupt each other's state), so start-up's are closed
    here; each worker opens its own on demand. Threads don't survive a fork either: the SQLite
    checkpointer starts with each process's first request.
    """
    services.store.close()
    started = threading.Lock()
    running: list[object] = []

    @app.before_request
    def start_checkpointer() -> None:
        if not running:
            with started:
                if not running:
                    running.append(services.store.start_checkpointer())

    freeze_startup_objects()
