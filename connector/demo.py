"""`deskroute demo`: the whole pipeline against a simulated Zendesk on loopback, no account needed.

The simulator is platforms/fakes/zendesk.py, the same fake the tests use. Deskroute runs as `serve`
does (waitress, worker threads) and each sample ticket arrives as a signed webhook, so what the demo
shows is what production does: intake, queue, cascade, write-back, note.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from connector.logs import configure_logging
from connector.settings import Settings
from platforms.fakes.zendesk import OAUTH_CLIENT_ID, OAUTH_CLIENT_SECRET, FakeZendesk
from platforms.zendesk import signed_headers

# (subject, description): what a small SaaS company's inbox looks like on a Monday.
SAMPLE_TICKETS = [
    ("Charged twice this month", "My card statement shows two charges of $49 for our plan on the 3rd. "
     "Can you refund one of them?"),
    ("Cancel our subscription", "We're moving to another tool. Please cancel at the end of the term and "
     "confirm we won't be billed again."),
    ("Can't log in after password reset", "I reset my password twice but the login page keeps saying invalid "
     "credentials, and I never get the 2FA code."),
    ("Export button crashes the page", "When I click Export on the reports page the tab freezes and then shows "
     "an error 500. Started after yesterday's update."),
    ("Everything is very slow today", "The dashboard takes over 30 seconds to load for our whole team and "
     "sometimes times out completely."),
    ("Idea: dark mode", "It would be great if you added a dark mode, our support team works night shifts."),
    ("How do I set up recurring tasks?", "Where in the settings can I make a task repeat every Monday?"),
    ("Slack integration stopped posting", "Our Slack channel no longer receives notifications since we "
     "rotated the webhook URL. The API returns 401."),
    ("Import from CSV fails", "Uploading our customer list as a CSV stops at 40% with 'invalid row 212'."),
    ("Add three new seats for the team", "Please invite three new colleagues and give one of them admin rights."),
    ("All our projects are gone", "I logged in this morning and all our projects were deleted. We lost all our "
     "data from last quarter!"),
    ("Question", "Hi, quick question about something, can someone call me back?"),
]


@dataclass
class DemoResult:
    ticket_id: int
    subject: str
    state: str
    category: str | None
    tier: str | None
    confidence: float | None
    reason: str
    group: str
    note_written: bool


def mapped_groups(mappings_dir: Path, platform: str = "zendesk") -> dict[int, str]:
    """Every group the platform's mapping names, so a simulated account has them (named after a category)."""
    from connector.mappings import load_mapping, load_taxonomy

    mapping = load_mapping(mappings_dir, platform, load_taxonomy(mappings_dir))
    groups = {int(mapping.triage.group_id): "Triage"}
    for name, route in mapping.categories.items():
        groups.setdefault(int(route.group_id), name.replace("_", " ").capitalize())
    return groups


def _post(url: str, body: bytes, secret: str) -> int:
    request = urllib.request.Request(url, data=body, method="POST", headers=signed_headers(secret, body))
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (our own loopback URL)
        return int(response.status)


class Demo:
    """A simulated Zendesk, Deskroute serving on loopback, and the sample tickets."""

    def __init__(self, *, workdir: Path, port: int = 0, admin_password: str = "", mappings_dir: Path | None = None):
        from connector.mappings import resolve_dir

        self.secret = secrets.token_urlsafe(24)
        mappings_dir = mappings_dir or resolve_dir(Path("mappings"))
        # Like every Zendesk from 30 April 2027, the simulator refuses API tokens: the demo signs in with OAuth.
        self.fake = FakeZendesk(groups=mapped_groups(mappings_dir), refuse_basic=True)
        netloc = self.fake.start()
        # zenpy talks to the simulator exactly as it talks to Zendesk, only over http on loopback.
        os.environ.update(ZENPY_FORCE_NETLOC=netloc, ZENPY_FORCE_SCHEME="http")
        self.settings = Settings(
            _env_file=None, database_url=f"sqlite:///{workdir / 'demo.db'}", zendesk_subdomain="demo",
            zendesk_oauth_client_id=OAUTH_CLIENT_ID, zendesk_oauth_client_secret=OAUTH_CLIENT_SECRET,
            zendesk_webhook_secret=self.secret, deskroute_secret_key=secrets.token_urlsafe(32),
            anthropic_api_key="", deskroute_mappings_dir=mappings_dir, deskroute_scheduler=False,
            deskroute_worker_threads=2, deskroute_poll_seconds=0.2, deskroute_admin_password=admin_password,
            deskroute_secure_cookies=False, deskroute_log_level="WARNING", deskroute_log_format="text")
        self.port = port
        self.url = ""
        self.services: Any = None
        self._moves = 0
        self._server: Any = None
        self._web: threading.Thread | None = None
        self._stopping = threading.Event()

    def start(self) -> None:
        import waitress.server

        from connector import create_app
        from connector.services import Services

        self.services = Services(self.settings)
        self.services.start_workers()  # trains the first model from taxonomy.yaml's examples
        self._server = waitress.server.create_server(create_app(services=self.services), host="127.0.0.1",
                                                     port=self.port, threads=4)
        self.url = f"http://127.0.0.1:{self._server.effective_port}"
        self._web = threading.Thread(target=self._serve, name="demo-web", daemon=True)
        self._web.start()

    def _serve(self) -> None:
        """waitress's loop, one poll at a time until stop(): its run() can't be stopped from another thread, and
        closing its sockets under it fails its poll (EBADF) and a request's last wake-up."""
        server = self._server
        while not self._stopping.is_set():
            server.asyncore.loop(timeout=0.2, map=server._map, count=1)

    def deliver(self, body: dict[str, Any]) -> None:
        """POST a webhook body, signed as Zendesk signs it."""
        status = _post(f"{self.url}/webhooks/zendesk", json.dumps(body).encode(), self.secret)
        if status != 202:
            raise RuntimeError(f"webhook answered {status}")

    def send_samples(self, first_id: int = 1001) -> list[int]:
        """Create each sample in the simulator and deliver its ticket-created webhook."""
        ids = []
        for n, (subject, description) in enumerate(SAMPLE_TICKETS):
            ticket_id = first_id + n
            self.fake.add_ticket(ticket_id, subject=subject, description=description, tags=["web_form"])
            self.deliver({"ticket_id": str(ticket_id), "event": "ticket.created"})
            ids.append(ticket_id)
        return ids

    def reroute(self, ticket_id: int, group_id: int) -> None:
        """An agent moves the ticket to another group; the subscription's webhook tells Deskroute."""
        self.fake.move(ticket_id, group_id)
        self._moves += 1
        self.deliver({"type": "zen:event-type:ticket.group_assignment_changed", "id": f"demo-move-{self._moves}",
                      "subject": f"zen:ticket:{ticket_id}", "detail": {"id": str(ticket_id)},
                      "event": {"current": str(group_id)}})

    def wait_for_corrections(self, count: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        """The recorded corrections, once there are `count` of them (or the timeout passed)."""
        deadline = time.monotonic() + timeout
        while len(rows := self.services.store.corrections.find()) < count and time.monotonic() < deadline:
            time.sleep(0.1)
        return rows

    def wait(self, ids: list[int], timeout: float = 60.0) -> bool:
        """Wait until every ticket's event is finished; False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            records = [self.services.store.tickets.get("zendesk", str(i)) for i in ids]
            if all(r is not None and r.state in ("done", "triage", "dead") for r in records):
                return True
            time.sleep(0.1)
        return False

    def results(self, ids: list[int]) -> list[DemoResult]:
        out = []
        for ticket_id in ids:
            record = self.services.store.tickets.get("zendesk", str(ticket_id))
            ticket = self.fake.tickets[ticket_id]
            decision = record.decision if record else None
            classification = record.classification if record else None
            group_id = ticket.get("group_id")
            out.append(DemoResult(
                ticket_id=ticket_id, subject=ticket["subject"], state=record.state if record else "missing",
                category=decision.category if decision else None,
                tier=classification.tier if classification else None,
                confidence=classification.confidence if classification else None,
                reason=decision.reason if decision else "",
                group=f"{self.fake.groups.get(group_id, '?')} ({group_id})" if group_id else "none",
                note_written=bool(self.fake.private_notes(ticket_id))))
        return out

    def stop(self) -> None:
        if self._server is not None:
            self._stopping.set()
            if self._web is not None:
                self._web.join(timeout=5)
            server = self._server
            server.task_dispatcher.shutdown(timeout=5)  # requests being answered finish first
            for channel in list(server._map.values()):  # kept-alive connections
                if channel is not server and channel is not server.trigger:
                    channel.close()
            server.close()
        if self.services is not None and self.services.pool is not None:
            self.services.pool.stop()
        self.fake.stop()


def run(*, keep_running: bool, port: int, echo: Any) -> int:
    """The `deskroute demo` command; returns the exit status."""
    own_password = os.environ.get("DESKROUTE_ADMIN_PASSWORD", "")
    password = own_password or (secrets.token_urlsafe(9) if keep_running else "")
    with tempfile.TemporaryDirectory(prefix="deskroute-demo-") as workdir:
        demo = Demo(workdir=Path(workdir), port=port, admin_password=password)
        configure_logging(demo.settings.deskroute_log_level, demo.settings.deskroute_log_format)
        echo("Starting a simulated Zendesk and Deskroute on loopback, and training the local model...")
        try:
            demo.start()
            ids = demo.send_samples()
            echo(f"Sent {len(ids)} sample tickets as signed webhooks to {demo.url}/webhooks/zendesk\n")
            finished = demo.wait(ids)
            results = demo.results(ids)
            for r in results:
                confidence = f"{r.confidence:.2f}" if r.confidence is not None else "-"
                where = r.category or "triage"
                echo(f"#{r.ticket_id} {r.subject[:38]:<38} -> {where:<20} {r.tier or '-':<7} {confidence}  "
                     f"group {r.group}")
                echo(f"      why: {r.reason}")
            routed = [r for r in results if r.state in ("done", "triage") and r.note_written]
            triaged = sum(r.state == "triage" for r in results)
            echo(f"\n{len(routed)} of {len(results)} tickets written back to the simulated Zendesk (group, tags, "
                 f"internal note); {triaged} sent to human triage. Signed in with OAuth (client credentials): "
                 f"{len(demo.fake.oauth.grants_issued)} token(s) issued, {demo.fake.basic_calls} API-token calls.")
            ok = finished and len(routed) == len(results)
            if ok:
                last = results[-1]
                first_route = next(iter(demo.services.mappings["zendesk"].categories.values()))
                target = int(first_route.group_id)
                demo.reroute(last.ticket_id, target)
                corrections = demo.wait_for_corrections(1)
                echo(f"\nAn agent moved #{last.ticket_id} to {demo.fake.groups[target]} ({target}): "
                     f"{len(corrections)} correction recorded for team leads to review "
                     "(the admin UI's Corrections page; see it with --keep-running).")
                ok = len(corrections) == 1
            if not ok:
                echo("Some tickets did not finish: see the log lines above.")
            if keep_running:
                shown = "your DESKROUTE_ADMIN_PASSWORD" if own_password else password  # a throwaway one is shown
                echo(f"\nAdmin UI: {demo.url}/admin  (password: {shown})\nPress Ctrl+C to stop.")
                try:
                    while True:
                        time.sleep(3600)
                except KeyboardInterrupt:
                    pass
            return 0 if ok else 1
        finally:
            demo.stop()
