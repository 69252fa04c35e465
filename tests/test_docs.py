"""README, .env.example and .ci/run tell the truth about the code."""

from __future__ import annotations

import re

import pytest

from connector.cli import main
from connector.settings import Settings, env_name
from helpers import PROJECT

README = (PROJECT / "README.md").read_text()


@pytest.mark.parametrize("field", sorted(Settings.model_fields))
def test_every_setting_is_in_the_readme_table_and_env_example(field: str) -> None:
    name = env_name(field)
    assert re.search(rf"^\| `{name}` \|", README, re.MULTILINE), f"{name} missing from README's settings table"
    assert re.search(rf"^{name}=", (PROJECT / ".env.example").read_text(), re.MULTILINE), f"{name} not in .env.example"


def test_readme_settings_table_has_no_stale_rows() -> None:
    documented = set(re.findall(r"^\| `([A-Z_]+)` \|", README, re.MULTILINE))
    assert documented == {env_name(f) for f in Settings.model_fields}


def test_quick_start_has_exactly_two_commands_and_ci_runs_the_test_one() -> None:
    quick_start = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```sh\n(.+?)\n```", quick_start, re.DOTALL)
    assert len(commands) == 2
    serve, test = commands
    assert "pip install" in serve and serve.endswith("deskroute serve")
    assert "pip install" in test and test.endswith("pytest")
    assert test in (PROJECT / ".ci" / "run").read_text()


def test_every_cli_command_is_in_the_readme() -> None:
    for command in main.commands:
        assert f"`deskroute {command}" in README, command


def test_procfile_matches_the_readme() -> None:
    procfile = (PROJECT / "Procfile").read_text().strip()
    assert procfile in README
    assert procfile.splitlines()[0].startswith("web: gunicorn") and "connector:create_app()" in procfile
    assert procfile.splitlines()[1] == "worker: deskroute worker"


def test_the_runbook_names_only_metrics_commands_and_log_lines_that_exist() -> None:
    """docs/operations.md is read at 3 a.m.: a renamed metric or log line there would send people astray."""
    runbook = (PROJECT / "docs" / "operations.md").read_text()
    sources = "\n".join(path.read_text() for path in (PROJECT / "connector").rglob("*.py"))
    sources += "\n".join(path.read_text() for path in (PROJECT / "platforms").rglob("*.py"))
    for metric in set(re.findall(r"`(deskroute_[a-z_]+)", runbook)):
        assert f'"{metric.removesuffix("_total")}"' in sources, metric
    for command in set(re.findall(r"`deskroute ([a-z]+)", runbook)):
        assert command in main.commands, command
    logs = runbook.split("## Logs", 1)[1]
    for line in re.findall(r"`([a-z][a-z ,]+[a-z])`", logs):
        assert f'"{line}' in sources, line  # a log call's message starts with it
