"""The web process loads no ML stack: a gunicorn worker only enqueues webhooks and serves /health,
/metrics and the admin UI, so scikit-learn, numpy, scipy and the Claude SDK stay out of its memory
(workers that classify load them; see bench/ingest.py for each web worker's RSS)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from databases import database_url
from helpers import PROJECT

HEAVY = ("sklearn", "numpy", "scipy", "joblib", "onnxruntime", "tokenizers", "anthropic", "pandas",
         # and what only some requests need, loaded on first use: Zendesk's SDK, token encryption, YAML edits
         "zenpy", "cryptography", "ruamel")

# What a gunicorn worker does: `connector:create_app()` from the environment, as in the Procfile, then
# requests: a webhook, /health, /metrics, and the admin's pages (the Model page lists models, no training; the
# Suggestions page reads stored clusters, no clustering).
WEB_WORKER = """
import json, sys
from connector import create_app
from platforms.zendesk import signed_headers

client = create_app().test_client()
body = json.dumps({"ticket_id": "101", "event": "ticket.created"}).encode()
statuses = [client.post("/webhooks/zendesk", data=body, headers=signed_headers("webhook-secret", body)).status_code,
            client.get("/health").status_code, client.get("/metrics").status_code]
https = {"base_url": "https://localhost"}
page = client.get("/admin/login", **https).get_data(as_text=True)
token = page.split('name="csrf_token" value="')[1].split('"')[0]
statuses.append(client.post("/admin/login", data={"password": sys.argv[1], "csrf_token": token}, **https).status_code)
statuses += [client.get(path, **https).status_code for path in ("/admin/", "/admin/model", "/admin/suggestions")]
print(json.dumps({"statuses": statuses, "loaded": [name for name in sys.argv[2:] if name in sys.modules]}))
"""


def test_a_web_worker_serving_requests_loads_no_ml_stack(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DESKROUTE_", "ZENDESK_", "FRESHDESK_", "ANTHROPIC_", "ZENPY_"))
           and k != "DATABASE_URL"}
    password = "footprint-admin-password"
    env.update({"PYTHONPATH": str(PROJECT), "DATABASE_URL": database_url(tmp_path),
                "DESKROUTE_MAPPINGS_DIR": str(PROJECT / "mappings"), "DESKROUTE_ADMIN_PASSWORD": password,
                "ZENDESK_SUBDOMAIN": "acme", "ZENDESK_OAUTH_CLIENT_ID": "id", "ZENDESK_OAUTH_CLIENT_SECRET": "unused",
                "ZENDESK_WEBHOOK_SECRET": "webhook-secret"})
    result = subprocess.run([sys.executable, "-c", WEB_WORKER, password, *HEAVY], cwd=tmp_path, env=env,  # no .env
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["statuses"] == [202, 200, 200, 302, 200, 200, 200], result.stderr
    assert report["loaded"] == [], f"the web process imported {report['loaded']}"


def _database_handles(pid: int, url: str) -> list[str]:
    """The database files or PostgreSQL connections process `pid` holds open (Linux /proc)."""
    links = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            links.append(os.readlink(fd))
        except OSError:
            continue
    if url.startswith("sqlite"):
        database = url.removeprefix("sqlite:///")
        return [link for link in links if link.startswith(database)]
    sockets = {link[len("socket:["):-1] for link in links if link.startswith("socket:[")}
    to_postgres = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in sockets and fields[2].endswith(":1538"):  # remote port 5432
                to_postgres.append(f"tcp inode {fields[9]}")
    return to_postgres


def test_preloaded_gunicorn_forks_no_database_connection_into_its_workers(tmp_path: Path) -> None:
    """Procfile's `gunicorn --preload` builds the app once and forks it: the workers share its memory, but a
    database connection open at the fork would be shared by every worker. The master keeps none, and the
    workers serve and store webhooks."""
    import http.client
    import socket
    import time

    from platforms.zendesk import signed_headers

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = database_url(tmp_path)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DESKROUTE_", "ZENDESK_", "FRESHDESK_", "ANTHROPIC_", "ZENPY_"))
           and k != "DATABASE_URL"}
    env.update({"PYTHONPATH": str(PROJECT), "DATABASE_URL": url, "DESKROUTE_MAPPINGS_DIR": str(PROJECT / "mappings"),
                "ZENDESK_SUBDOMAIN": "acme", "ZENDESK_OAUTH_CLIENT_ID": "id", "ZENDESK_OAUTH_CLIENT_SECRET": "unused",
                "ZENDESK_WEBHOOK_SECRET": "webhook-secret", "DESKROUTE_LOG_LEVEL": "WARNING"})
    gunicorn = Path(sys.executable).parent / "gunicorn"
    server = subprocess.Popen([str(gunicorn), "--preload", "--workers", "2", "--bind", f"127.0.0.1:{port}",
                               "connector:create_app()"], cwd=tmp_path, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        statuses = []
        deadline = time.monotonic() + 60
        for n in range(20):
            body = json.dumps({"ticket_id": str(100 + n), "event": "ticket.created"}).encode()
            while True:
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                    conn.request("POST", "/webhooks/zendesk", body, signed_headers("webhook-secret", body))
                    statuses.append(conn.getresponse().status)
                    conn.close()
                    break
                except OSError:
                    assert time.monotonic() < deadline and server.poll() is None, "gunicorn did not start"
                    time.sleep(0.2)
        assert statuses == [202] * 20
        assert _database_handles(server.pid, url) == []
    finally:
        server.terminate()
        _, errors = server.communicate(timeout=30)
    from connector.store import Store

    store = Store(url)
    try:
        assert store.events.health(now=time.time()).counts.get("pending") == 20, errors.decode()[-2000:]
    finally:
        store.close()
