"""Several processes, one install: an admin's edit on the web process reaches a worker process on the
same database (SQLite here, PostgreSQL with `--database postgresql`) before its next ticket."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from connector import create_app
from connector.models import TicketEvent
from connector.services import Services
from connector.store import Store
from databases import database_url
from helpers import ADMIN_PASSWORD, HTTPS, PROJECT, csrf, login, make_settings, wait_for
from platforms.fakes.zendesk import OAUTH_CLIENT_ID, OAUTH_CLIENT_SECRET, FakeZendesk

GROUPS = {gid: f"Group {gid}" for gid in range(360000000100, 360000000108)}
BILLING, MOVED_TO = 360000000101, 360000000105


def test_a_mapping_edit_on_the_web_process_routes_the_next_ticket_on_a_worker_process(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeZendesk(groups=GROUPS, refuse_basic=True)
    netloc = fake.start()
    url = database_url(tmp_path)
    Store(url).migrate()
    helpdesk = {"ZENDESK_SUBDOMAIN": "acme", "ZENDESK_OAUTH_CLIENT_ID": OAUTH_CLIENT_ID,
                "ZENDESK_OAUTH_CLIENT_SECRET": OAUTH_CLIENT_SECRET, "ZENDESK_WEBHOOK_SECRET": "s",
                "ZENPY_FORCE_NETLOC": netloc, "ZENPY_FORCE_SCHEME": "http"}
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ZENDESK_", "DESKROUTE_", "ZENPY_")) and k != "DATABASE_URL"}
    worker = subprocess.Popen(
        [sys.executable, "-m", "connector", "worker"], cwd=tmp_path, text=True, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**env, **helpdesk, "PYTHONPATH": str(PROJECT), "DATABASE_URL": url, "DESKROUTE_POLL_SECONDS": "0.2",
             "DESKROUTE_MAPPINGS_DIR": str(PROJECT / "mappings"), "DESKROUTE_EMBEDDINGS": "off"})
    try:
        for key in ("ZENPY_FORCE_NETLOC", "ZENPY_FORCE_SCHEME"):
            monkeypatch.setenv(key, helpdesk[key])
        web = Services(make_settings(tmp_path, database_url=url, deskroute_admin_password=ADMIN_PASSWORD))

        def route(ticket_id: int) -> None:
            fake.add_ticket(ticket_id, subject="Invoice question", description="Please resend my invoice.")
            web.queue.enqueue(TicketEvent(platform="zendesk", kind="ticket.created", ticket_id=str(ticket_id),
                                          dedup_key=f"ticket.created:{ticket_id}"))

        route(801)
        wait_for(lambda: fake.tickets[801]["group_id"] == BILLING, timeout=60,
                 what=f"the worker to route a ticket: {fake.tickets[801]}")

        admin = create_app(services=web).test_client()
        assert login(admin).status_code == 302
        token = csrf(admin, "/admin/mappings/billing")
        billing = web.taxonomy.categories["billing"]  # only the group changes: no retraining to wait for
        form = {"description": billing.description, "keywords": ", ".join(billing.keywords),
                "examples": "\n".join(billing.examples), "priority": billing.priority, "mode": billing.mode,
                "zendesk_group_id": str(MOVED_TO), "zendesk_tags": "billing", "zendesk_priority": "",
                "freshdesk_group_id": "103000000101", "freshdesk_tags": "", "freshdesk_priority": "",
                "csrf_token": token}
        assert admin.post("/admin/mappings/billing", data=form, **HTTPS).status_code == 302
        route(802)  # the very next ticket, on the other process
        wait_for(lambda: fake.tickets[802]["group_id"] == MOVED_TO, timeout=5,
                 what="the worker process to route by the edited mapping")
        assert fake.tickets[801]["group_id"] == BILLING  # the earlier ticket isn't touched again
    finally:
        worker.terminate()
        output, _ = worker.communicate(timeout=20)
        fake.stop()
        (tmp_path / "worker.log").write_text(output)
    assert "Traceback" not in output, output[-2000:]
