"""`deskroute demo`: sample tickets through the whole pipeline against the simulated Zendesk."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from connector.demo import SAMPLE_TICKETS, Demo
from helpers import PROJECT
from platforms.base import ROUTED_TAG


def test_demo_routes_every_sample_and_exits_zero(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DESKROUTE_", "ZENDESK_", "ANTHROPIC_"))}
    env.pop("DATABASE_URL", None)
    result = subprocess.run([sys.executable, "-m", "connector", "demo"], cwd=tmp_path, env=env,  # no mappings/ here
                            capture_output=True, text=True, timeout=180, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(SAMPLE_TICKETS)} of {len(SAMPLE_TICKETS)} tickets written back" in result.stdout
    for subject, _ in SAMPLE_TICKETS:
        assert subject[:38] in result.stdout
    assert "1 correction recorded" in result.stdout  # an agent's re-route, seen through the audits
    assert "Signed in with OAuth (client credentials): 1 token(s) issued, 0 API-token calls." in result.stdout
    assert "-> billing" in result.stdout and "-> triage" in result.stdout and "why: guardrail" in result.stdout
    assert not (tmp_path / "deskroute.db").exists()  # the demo keeps its database to itself


def test_the_demo_writes_to_the_simulator_and_the_admin_ui_shows_it(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(PROJECT)
    for name in ("ZENPY_FORCE_NETLOC", "ZENPY_FORCE_SCHEME"):
        monkeypatch.setenv(name, "")  # the demo sets them; restored after the test
    demo = Demo(workdir=tmp_path, admin_password="demo-password")
    try:
        demo.start()
        ids = demo.send_samples(first_id=501)
        assert demo.wait(ids)
        for ticket_id in ids:
            ticket = demo.fake.tickets[ticket_id]
            assert ROUTED_TAG in ticket["tags"] and "web_form" in ticket["tags"]  # ours added, theirs kept
            assert ticket["group_id"] in demo.fake.groups and demo.fake.private_notes(ticket_id)
        assert demo.fake.refuse_basic and demo.fake.basic_calls == 0 and demo.fake.oauth.grants_issued

        browser = requests.Session()
        login = browser.get(f"{demo.url}/admin/login", timeout=10).text
        token = login.split('name="csrf_token" value="')[1].split('"')[0]
        assert browser.post(f"{demo.url}/admin/login", data={"password": "demo-password", "csrf_token": token},
                            timeout=10).url.endswith("/admin/")
        page = browser.get(f"{demo.url}/admin/tickets", timeout=10).text
        assert all(f"zendesk #{i}" in page for i in ids)
    finally:
        demo.stop()


def test_a_demo_kept_running_and_stopped_by_sigterm_removes_its_folder(tmp_path: Path) -> None:
    """README says the demo's folder and database go when it exits: a process manager stops it with SIGTERM."""
    import signal

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DESKROUTE_", "ZENDESK_", "ANTHROPIC_"))}
    env.pop("DATABASE_URL", None)
    env["TMPDIR"] = str(scratch)
    with subprocess.Popen([sys.executable, "-m", "connector", "demo", "--keep-running"], cwd=tmp_path, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) as demo:
        try:
            assert demo.stdout is not None
            for line in demo.stdout:
                if "Press Ctrl+C to stop" in line:
                    break
            assert [p for p in scratch.iterdir() if p.name.startswith("deskroute-demo-")]
            demo.send_signal(signal.SIGTERM)
            assert demo.wait(timeout=60) == 0
        finally:
            if demo.poll() is None:
                demo.kill()
    assert not [p for p in scratch.iterdir() if p.name.startswith("deskroute-demo-")]
