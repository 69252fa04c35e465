"""The `deskroute` command: classify, train and eval, through click's runner."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from connector.cli import main
from connector.mappings import load_taxonomy
from connector.store import Store
from databases import database_url
from helpers import PROJECT, cli_environment


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Run `deskroute ...` with a fresh database and no .env (the cwd is a temp dir)."""
    cli_environment(monkeypatch, tmp_path, database_url(tmp_path, "cli.db"))

    def invoke(*args: str, input: str | None = None) -> Result:  # noqa: A002 - click's name
        return CliRunner().invoke(main, list(args), input=input, catch_exceptions=False)

    return invoke


def write_csv(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["subject", "body", "category"])
        writer.writerows(rows)
    return path


def taxonomy_split(tmp_path: Path) -> tuple[Path, Path]:
    texts, labels = load_taxonomy(PROJECT / "mappings").examples()
    rows = [("", t, y) for t, y in zip(texts, labels, strict=True)]
    train = write_csv(tmp_path / "train.csv", [r for i, r in enumerate(rows) if i % 4])
    dev = tmp_path / "dev.jsonl"
    dev.write_text("".join(json.dumps({"text": r[1], "category": r[2]}) + "\n"
                           for i, r in enumerate(rows) if not i % 4))
    return train, dev


def test_classify_json(run) -> None:  # type: ignore[no-untyped-def]
    result = run("classify", "--subject", "Invoice missing", "--body", "Please resend the invoice", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["classification"]["category"] == "billing" and out["classification"]["tier"] == "rules"
    assert out["decisions"]["zendesk"]["group_id"] == "360000000101"


def test_classify_text_output_and_usage_error(run) -> None:  # type: ignore[no-untyped-def]
    result = run("classify", "--subject", "Everything is gone", "--body", "We lost all our data after the update")
    assert result.exit_code == 0 and "guardrail: data_loss" in result.output
    assert run("classify").exit_code == 2


def test_train_model_out_then_eval_with_predictions(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    train, dev = taxonomy_split(tmp_path)
    result = run("train", "--data", str(train), "--model-out", str(tmp_path / "m.model"))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "m.model").exists()
    predictions = tmp_path / "pred.jsonl"
    result = run("eval", "--data", str(dev), "--model", str(tmp_path / "m.model"), "--json",
                 "--predictions", str(predictions))
    assert result.exit_code == 0, result.output
    scores = json.loads(result.output)
    assert set(scores) >= {"accuracy", "macro_f1", "coverage_at_95", "n", "p50_ms"}
    assert scores["n"] == len(dev.read_text().splitlines()) and scores["macro_f1"] > 0.5
    rows = [json.loads(line) for line in predictions.read_text().splitlines()]
    labels = [json.loads(line)["category"] for line in dev.read_text().splitlines()]
    assert [r["label"] for r in rows] == labels  # one row per input, in input order
    assert all({"category", "confidence", "tier"} <= set(r) and r["tier"] == "local" for r in rows)


def test_eval_without_model_scores_the_cascade(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, dev = taxonomy_split(tmp_path)
    result = run("eval", "--data", str(dev), "--predictions", str(tmp_path / "p.jsonl"))
    assert result.exit_code == 0 and "coverage_at_95" in result.output
    tiers = {json.loads(line)["tier"] for line in (tmp_path / "p.jsonl").read_text().splitlines()}
    assert "rules" in tiers


def test_train_refuses_to_replace_the_active_model_with_foreign_labels(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    foreign = write_csv(tmp_path / "b77.csv", [("", "card arrived broken", "card_not_working"),
                                                ("", "where is my card", "card_arrival")])
    result = run("train", "--data", str(foreign))
    assert result.exit_code == 1
    assert "not replacing the active model: 2 label(s) are not categories" in result.output
    assert "card_arrival" in result.output and "--model-out" in result.output
    assert Store(database_url(tmp_path, "cli.db")).models.all() == []


def test_train_with_taxonomy_labels_activates_a_new_version(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    extra = write_csv(tmp_path / "history.csv", [
        ("Bill", "Where is my bill for June?", "billing"),
        ("Slow", "Everything is slow for the whole company", "outage_performance"),
    ])
    result = run("train", "--data", str(extra))
    assert result.exit_code == 0 and "is now active" in result.output
    [model] = Store(database_url(tmp_path, "cli.db")).models.all()
    assert model.active == 1 and model.n_examples > 100  # taxonomy examples + the file


def test_bad_dataset_is_a_clear_error(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bad = write_csv(tmp_path / "bad.csv", [("s", "b", "")])
    result = run("train", "--data", str(bad), "--model-out", str(tmp_path / "x.model"))
    assert result.exit_code == 1 and "bad.csv: row 1: no category" in result.output


def test_classify_shows_claude_model_tokens_and_cost(run, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    from helpers import claude_answer
    from platforms.fakes.claude import FakeClaude

    fake = FakeClaude()
    monkeypatch.setenv("ANTHROPIC_BASE_URL", f"http://{fake.start()}")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    fake.answer_next(**claude_answer("billing", 0.9))
    try:
        result = run("classify", "--subject", "Hello", "--body", "Something about our account looks off this week")
    finally:
        fake.stop()
    assert result.exit_code == 0, result.output
    assert "tier:       llm" in result.output
    assert "claude:     claude-haiku-4-5 ok:" in result.output and "input" in result.output
    assert "llm cost:   $0.0" in result.output and "(prompt p-" in result.output


def test_users_add_list_password_remove(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from connector.admin.gate import verify_password

    added = run("users", "add", "Lead@Example.com", input="team lead password\nteam lead password\n")
    assert added.exit_code == 0 and "lead@example.com can sign in to the admin UI as a team lead" in added.output
    assert "team lead password" not in added.output  # the prompt hides what is typed
    store = Store(database_url(tmp_path, "cli.db"))
    user = store.users.get("lead@example.com")
    assert user is not None and verify_password("team lead password", user.password_hash)
    listed = run("users", "list").output
    assert "lead@example.com\tlead\tadded " in listed and "no named admin" in listed
    assert run("users", "role", "lead@example.com", "admin").exit_code == 0
    listed = run("users", "list").output
    assert "lead@example.com\tadmin\tadded " in listed and "no named admin" not in listed
    assert run("users", "role", "nobody", "admin").exit_code == 1
    assert run("users", "role", "lead@example.com", "owner").exit_code == 2
    assert run("users", "add", "lead@example.com", input="x" * 12 + "\n" + "x" * 12 + "\n").exit_code == 1
    short = run("users", "password", "lead@example.com", "--password-stdin", input="short\n")
    assert short.exit_code == 1 and "12 characters" in short.output
    changed = run("users", "password", "lead@example.com", "--password-stdin", input="a new long password\n")
    assert changed.exit_code == 0
    user = store.users.get("lead@example.com")
    assert user is not None and verify_password("a new long password", user.password_hash)
    assert run("users", "add", "admin", input="").exit_code == 2  # the shared password's name
    assert run("users", "remove", "lead@example.com").exit_code == 0
    assert run("users", "remove", "lead@example.com").exit_code == 1
    assert "no named users" in run("users", "list").output


def test_doctor_asks_for_a_secret_key_when_named_users_sign_in_without_one(
        run, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """With no shared password and no DESKROUTE_SECRET_KEY, the session key is in the database alone."""
    key_line = "admin UI: named users sign in, but sessions are signed with a key kept in the database alone"
    assert key_line not in run("doctor").output  # no named user: the UI is off
    run("users", "add", "ada", "--role", "admin", "--password-stdin", input="a long enough password\n")
    assert key_line in run("doctor").output
    monkeypatch.setenv("DESKROUTE_SECRET_KEY", "k" * 40)
    assert key_line not in run("doctor").output


def test_corrections_forget_text_keeps_the_correction_and_forgets_its_words(
        run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    store = Store(database_url(tmp_path, "cli.db"))
    store.migrate()
    store.corrections.add({"platform": "zendesk", "ticket_id": "5", "change_id": "c1", "seq": 1,
                           "text": "My invoice for [EMAIL] is wrong", "comment": "see the invoice",
                           "corrected_category": "billing", "status": "accepted", "created_at": 1.0})
    assert run("corrections", "forget-text", input="n\n").exit_code == 1  # asked first; no: nothing changes
    assert store.corrections.text_count() == 1
    forgot = run("corrections", "forget-text", "--yes")
    assert forgot.exit_code == 0 and "forgot the text of 1 correction(s)" in forgot.output
    [row] = store.db.execute("SELECT text, comment, corrected_category, status FROM corrections")
    assert (row["text"], row["comment"], row["corrected_category"], row["status"]) == (None, None, "billing",
                                                                                         "accepted")
    assert "no correction keeps text" in run("corrections", "forget-text").output
    store.corrections.add({"platform": "zendesk", "ticket_id": "6", "change_id": "c2", "seq": 1, "text": None,
                           "comment": "wrong: see invoice 88", "status": "pending", "created_at": 2.0})
    assert "forgot the text of 1 correction(s)" in run("corrections", "forget-text", "--yes").output
