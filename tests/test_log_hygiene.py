"""Secrets and ticket text never reach the logs: every record of a full run is captured and scanned."""

from __future__ import annotations

import base64
import logging

import pytest

from connector.logs import JsonFormatter
from helpdesks import DESCRIPTION, SUBJECT, Env
from helpers import SECRET, drain
from platforms.fakes.zendesk import OAUTH_CLIENT_SECRET

TICKET_WORDS = ["October invoice", "billing section", SUBJECT, DESCRIPTION]


SECRETS = [SECRET, "api-token-not-real", "fd-api-key", "sk-ant-test", OAUTH_CLIENT_SECRET,
           # What an Authorization header would carry, should a client log its headers.
           base64.b64encode(b"bot@example.com/token:api-token-not-real").decode(),
           base64.b64encode(b"fd-api-key:X").decode()]


def test_a_full_run_logs_no_secret_and_no_ticket_text(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # everything, including our DEBUG lines and the HTTP libraries'
    body, _ = env.helpdesk.created_webhook(40, env.clock)
    for headers in env.helpdesk.forged(body, env.clock):
        env.post(body, headers)
    env.post(b"{not json", {"Content-Type": "application/json"})
    assert env.create(41).status_code == 202
    drain(env.services)
    env.reroute(41, 360000000103 if env.name == "zendesk" else 103)
    drain(env.services)
    if env.name == "zendesk":  # a token that expires mid-run is renewed: its renewal logs too
        env.helpdesk.fake.oauth.expire_access_tokens()
        env.reroute(41, 360000000104)
        drain(env.services)
    issued = list(env.helpdesk.fake.oauth.access_tokens) if env.name == "zendesk" else []
    formatter = JsonFormatter()
    lines = [formatter.format(record) for record in caplog.records]
    assert len(lines) > 5, "the run should have logged something to scan"
    for line in lines:
        for secret in [*SECRETS, *issued]:
            assert secret not in line, f"a secret in the logs: {line[:200]}"
        for words in TICKET_WORDS:
            assert words not in line, f"ticket text in the logs: {line[:200]}"


def test_a_text_log_line_cannot_be_forged_by_a_value_it_carries() -> None:
    """DESKROUTE_LOG_FORMAT=text: a value with a line break or spaces (a request path, a helpdesk's error)
    stays one quoted field on one line."""
    from connector.logs import TextFormatter

    record = logging.LogRecord("connector.admin", logging.INFO, "", 0, "admin refused", (), None)
    record.path = "/admin/x\n2026-12-01T00:00:00 INFO connector.admin admin signed in user=eve"
    record.user = "ada"
    line = TextFormatter().format(record)
    assert "\n" not in line and line.endswith(" user=ada")
    assert 'path="/admin/x\\n2026-12-01T00:00:00 INFO connector.admin admin signed in user=eve"' in line
