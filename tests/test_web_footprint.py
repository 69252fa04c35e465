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

HEAVY = ("sklearn", "numpy", "scipy", "joblib", "onnxruntime", "tokenizers", "anthropic", "pandas")

# What a gunicorn worker does: `connector:create_app()` from the environment, as in the Procfile, then
# requests: a webhook, /health, /metrics, and the admin's pages (the Model page lists models, no training).
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
statuses += [client.get(path, **https).status_code for path in ("/admin/", "/admin/model")]
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
    assert report["statuses"] == [202, 200, 200, 302, 200, 200], result.stderr
    assert report["loaded"] == [], f"the web process imported {report['loaded']}"
