"""One harness per helpdesk for the contract suite: a loopback fake of its API, and how to talk to it.

A third helpdesk joins the contract suite with a harness here (and its fake in platforms/fakes/).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import yaml

from connector.demo import mapped_groups
from connector.services import Services
from helpers import PROJECT, SECRET, FakeClock, signed_headers
from platforms.fakes.freshdesk import FakeFreshdesk
from platforms.fakes.zendesk import OAUTH_CLIENT_ID, OAUTH_CLIENT_SECRET, FakeZendesk
from platforms.freshdesk import PRIORITY_NAMES, FreshdeskPlatform
from platforms.zendesk import ZendeskPlatform


@dataclass
class Write:
    """One update that took effect, in Deskroute's terms."""

    group_id: str
    priority: str
    tags: list[str]


SUBJECT = "Invoice for October missing"
DESCRIPTION = "I can't find our October invoice in the billing section, can you resend it?"
EXISTING_TAGS = ["vip", "from_email"]


def mapped_route(platform: str, category: str) -> dict[str, Any]:
    return yaml.safe_load((PROJECT / "mappings" / f"{platform}.yaml").read_text())["categories"][category]


class Helpdesk(ABC):
    """A helpdesk's fake, the settings that point Deskroute at it, and its webhook dialect."""

    name: ClassVar[str]
    platform_class: ClassVar[type]

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.fake = self.make_fake()
        self.address = self.fake.start()
        self._updates = 0

    def stop(self) -> None:
        self.fake.stop()

    @abstractmethod
    def make_fake(self) -> Any: ...

    @abstractmethod
    def settings(self) -> dict[str, Any]:
        """Setting overrides that configure this helpdesk against the fake."""

    def env(self) -> dict[str, str]:
        """Environment variables the client library reads to reach the fake."""
        return {}

    @abstractmethod
    def add_ticket(self, ticket_id: int, *, subject: str, description: str, tags: list[str]) -> None: ...

    @abstractmethod
    def created_webhook(self, ticket_id: int, clock: FakeClock) -> tuple[bytes, dict[str, str]]: ...

    @abstractmethod
    def update_webhook(self, ticket_id: int, clock: FakeClock) -> tuple[bytes, dict[str, str]]: ...

    @abstractmethod
    def forged(self, body: bytes, clock: FakeClock) -> list[dict[str, str]]:
        """Header sets that must be refused: a wrong secret, none at all."""

    @abstractmethod
    def writes(self, ticket_id: int) -> list[Write]: ...

    @abstractmethod
    def notes(self, ticket_id: int) -> list[str]: ...

    @abstractmethod
    def write_calls(self, ticket_id: int) -> list[tuple[str, str]]:
        """(method, path pattern) of each request apply() makes, for fault injection."""

    def remove_group(self, group_id: int) -> None:
        del self.fake.groups[group_id]

    def move(self, ticket_id: int, group_id: int, *, by: str = "agent") -> None:
        """A person (or, with by="trigger", a trigger) moves the ticket to another group."""
        self.fake.move(ticket_id, group_id, by=by)

    solved_status: Any = None

    def solve(self, ticket_id: int) -> None:
        """An agent solves the ticket where it is."""
        self.fake.tickets[ticket_id]["status"] = self.solved_status

    assignee_field = ""

    def assign(self, ticket_id: int, agent_id: int = 9) -> None:
        """An agent takes the ticket on, where it is."""
        self.fake.tickets[ticket_id][self.assignee_field] = agent_id


class ZendeskHelpdesk(Helpdesk):
    name = "zendesk"
    platform_class = ZendeskPlatform
    solved_status = "solved"
    assignee_field = "assignee_id"

    def make_fake(self) -> FakeZendesk:
        # Refuses API tokens, as every Zendesk does from 30 April 2027: the suite runs on OAuth.
        return FakeZendesk(groups=mapped_groups(PROJECT / "mappings", "zendesk"), clock=self.clock,
                           refuse_basic=True)

    def settings(self) -> dict[str, Any]:
        return {"zendesk_subdomain": "acme", "zendesk_oauth_client_id": OAUTH_CLIENT_ID,
                "zendesk_oauth_client_secret": OAUTH_CLIENT_SECRET, "zendesk_webhook_secret": SECRET}

    def env(self) -> dict[str, str]:
        return {"ZENPY_FORCE_NETLOC": self.address, "ZENPY_FORCE_SCHEME": "http"}

    def add_ticket(self, ticket_id: int, *, subject: str, description: str, tags: list[str]) -> None:
        self.fake.add_ticket(ticket_id, subject=subject, description=description, tags=tags)

    def created_webhook(self, ticket_id: int, clock: FakeClock) -> tuple[bytes, dict[str, str]]:
        body = json.dumps({"ticket_id": str(ticket_id), "event": "ticket.created"}).encode()
        return body, signed_headers(body, clock)

    def update_webhook(self, ticket_id: int, clock: FakeClock) -> tuple[bytes, dict[str, str]]:
        self._updates += 1
        body = json.dumps({"type": "zen:event-type:ticket.group_assignment_changed",
                           "id": f"evt-{ticket_id}-{self._updates}",
                           "subject": f"zen:ticket:{ticket_id}", "detail": {"id": str(ticket_id)},
                           "event": {"current": "1", "previous": "2"}}).encode()
        return body, signed_headers(body, clock)

    def forged(self, body: bytes, clock: FakeClock) -> list[dict[str, str]]:
        return [signed_headers(body, clock, secret="not-the-secret"), {"Content-Type": "application/json"}]

    def writes(self, ticket_id: int) -> list[Write]:
        return [Write(str(c["group_id"]), c["priority"], c["tags"]) for c in self.fake.applied.get(ticket_id, [])]

    def notes(self, ticket_id: int) -> list[str]:
        return self.fake.private_notes(ticket_id)

    def write_calls(self, ticket_id: int) -> list[tuple[str, str]]:
        return [("PUT", rf"/api/v2/tickets/{ticket_id}\.json")]


class FreshdeskHelpdesk(Helpdesk):
    name = "freshdesk"
    platform_class = FreshdeskPlatform
    solved_status = 4  # resolved
    assignee_field = "responder_id"
    api_key = "fd-api-key"

    def make_fake(self) -> FakeFreshdesk:
        groups = mapped_groups(PROJECT / "mappings", "freshdesk")
        return FakeFreshdesk(api_key=self.api_key, groups=groups, clock=self.clock)

    def settings(self) -> dict[str, Any]:
        return {"freshdesk_domain": "acme", "freshdesk_api_key": self.api_key, "freshdesk_webhook_secret": SECRET,
                "freshdesk_base_url": f"http://{self.address}"}

    def add_ticket(self, ticket_id: int, *, subject: str, description: str, tags: list[str]) -> None:
        self.fake.add_ticket(ticket_id, subject=subject, description=description, tags=tags)

    def _post(self, body: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
        return json.dumps(body).encode(), {"Content-Type": "application/json", "X-Deskroute-Token": SECRET}

    def created_webhook(self, ticket_id: int, clock: FakeClock) -> tuple[bytes, dict[str, str]]:
        return self._post({"ticket_id": ticket_id, "event": "ticket.created"})

    def update_webhook(self, ticket_id: int, clock: FakeClock) -> tuple[bytes, dict[str, str]]:
        return self._post({"ticket_id": ticket_id, "event": "ticket.group_changed"})

    def forged(self, body: bytes, clock: FakeClock) -> list[dict[str, str]]:
        return [{"Content-Type": "application/json", "X-Deskroute-Token": "not-the-secret"},
                {"Content-Type": "application/json"}]

    def writes(self, ticket_id: int) -> list[Write]:
        return [Write(str(c["group_id"]), PRIORITY_NAMES[c["priority"]], c["tags"])
                for c in self.fake.applied.get(ticket_id, [])]

    def notes(self, ticket_id: int) -> list[str]:
        return self.fake.private_notes(ticket_id)

    def write_calls(self, ticket_id: int) -> list[tuple[str, str]]:
        return [("PUT", rf"/api/v2/tickets/{ticket_id}"), ("POST", rf"/api/v2/tickets/{ticket_id}/notes")]


@dataclass
class Env:
    """A helpdesk fake, Deskroute's services pointed at it, and a web client."""

    helpdesk: Helpdesk
    services: Services
    client: Any
    clock: FakeClock
    classified: list[str]

    @property
    def name(self) -> str:
        return self.helpdesk.name

    def post(self, body: bytes, headers: dict[str, str]) -> Any:
        return self.client.post(f"/webhooks/{self.name}", data=body, headers=headers)

    def create(self, ticket_id: int, *, tags: list[str] | None = None) -> Any:
        self.helpdesk.add_ticket(ticket_id, subject=SUBJECT, description=DESCRIPTION,
                                 tags=EXISTING_TAGS if tags is None else tags)
        return self.post(*self.helpdesk.created_webhook(ticket_id, self.clock))

    def events(self) -> list[dict[str, Any]]:
        return self.services.store.events.recent(limit=1000)

    def reroute(self, ticket_id: int, group_id: int, *, by: str = "agent") -> Any:
        """Move the ticket in the helpdesk and deliver the webhook its rule or subscription sends."""
        self.helpdesk.move(ticket_id, group_id, by=by)
        return self.post(*self.helpdesk.update_webhook(ticket_id, self.clock))


HELPDESKS: dict[str, type[Helpdesk]] = {h.name: h for h in (ZendeskHelpdesk, FreshdeskHelpdesk)}
