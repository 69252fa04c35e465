"""The configuration lives in the database once edited: versions, history, every process picking an edit
up, refused stale saves, and `deskroute config import/export/history`."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

import connector.config
from connector.cli import main
from connector.config import (
    RACE,
    CategoryEdit,
    ConfigError,
    RouteEdit,
    directory_files,
    save_category,
    save_helpdesk,
)
from connector.models import Classification
from connector.services import Services
from connector.store import Store
from databases import database_url
from helpers import PROJECT, cli_environment

NEW_GROUP = "360000000105"


@pytest.fixture
def mappings_dir(tmp_path: Path) -> Path:
    target = tmp_path / "mappings"
    shutil.copytree(PROJECT / "mappings", target)
    return target


def billing_edit(services: Services, group: str = NEW_GROUP) -> CategoryEdit:
    """Billing as it is, moved to another Zendesk group."""
    billing = services.taxonomy.categories["billing"]
    routes = {name: RouteEdit(group_id=m.categories["billing"].group_id, tags=list(m.categories["billing"].tags),
                              priority=m.categories["billing"].priority) for name, m in services.mappings.items()}
    routes["zendesk"].group_id = group
    return CategoryEdit(name="billing", description=billing.description, keywords=list(billing.keywords),
                        examples=list(billing.examples), priority=billing.priority, mode=billing.mode, routes=routes)


def routed_group(services: Services, category: str = "billing") -> str:
    decision = services.router.decide("zendesk", Classification(category=category, confidence=0.99, tier="local",
                                                                reason="test"))
    return decision.group_id


def test_an_edit_is_a_new_version_with_its_diff_author_and_the_files_untouched(
        services: Services, clock: Any) -> None:
    defaults = directory_files(services.mappings_dir)
    changed = save_category(services.mappings_dir, services.store, billing_edit(services), author="alice",
                            now=clock())
    assert changed == ["zendesk.yaml"]
    live = services.store.configs.latest()
    assert live is not None and live.version == services.store.configs.latest_version()
    assert (live.author, live.summary, live.at) == ("alice", "category billing", clock())
    assert set(live.files) == set(defaults)  # the whole configuration, not just the file changed
    assert live.files["taxonomy.yaml"] == defaults["taxonomy.yaml"]
    assert f"group_id: {NEW_GROUP}" in live.files["zendesk.yaml"]
    assert directory_files(services.mappings_dir) == defaults
    [change] = services.store.configs.changes()
    assert (change["file"], change["author"], change["version"]) == ("zendesk.yaml", "alice", live.version)
    assert "-    group_id: 360000000101\n+    group_id: 360000000105\n" in change["diff"]

    clock.advance(60)  # the next edit starts from the stored version, not from the files
    edit = billing_edit(services, group="360000000106")
    assert save_category(services.mappings_dir, services.store, edit, author="bob", now=clock()) == ["zendesk.yaml"]
    newest = services.store.configs.latest()
    assert newest is not None and newest.version == live.version + 1 and newest.author == "bob"
    assert "-    group_id: 360000000105\n+    group_id: 360000000106\n" in services.store.configs.changes()[0]["diff"]
    assert save_category(services.mappings_dir, services.store, edit, author="bob", now=clock()) == []
    assert services.store.configs.latest_version() == newest.version  # no change, no version


def test_another_process_applies_the_edit_after_its_poll_interval(make_services: Callable[..., Services],
                                                                  clock: Any) -> None:
    web, worker = make_services(), make_services()  # two processes, one database
    worker._model_check_due = False  # as after its first job's look
    now = [worker._config_checked]
    worker._monotonic = lambda: now[0]
    save_category(web.mappings_dir, web.store, billing_edit(web), author="admin", now=clock())
    assert web.reload_config(force=True) and routed_group(web) == NEW_GROUP

    now[0] += 0.5
    assert not worker.reload_config()  # asked less than a second ago: the database isn't asked again
    assert routed_group(worker) == "360000000101" and worker.config_version is None
    now[0] += 0.6
    assert worker.reload_config()
    assert worker.config_version == web.config_version and routed_group(worker) == NEW_GROUP
    assert worker._model_check_due  # a changed taxonomy may need a new model
    now[0] += 5
    assert not worker.reload_config()  # same version: nothing reloaded

    restarted = make_services()
    assert restarted.config_version == web.config_version and routed_group(restarted) == NEW_GROUP


def test_hand_edits_to_the_files_apply_until_a_version_is_stored(make_services: Callable[..., Services],
                                                                 mappings_dir: Path, clock: Any) -> None:
    services = make_services(deskroute_mappings_dir=mappings_dir)
    path = mappings_dir / "zendesk.yaml"
    path.write_text(path.read_text().replace("group_id: 360000000101", "group_id: 360000000107", 1) + "# edited\n")
    assert services.reload_config(force=True) and routed_group(services) == "360000000107"

    save_category(mappings_dir, services.store, billing_edit(services), author="admin", now=clock())
    assert services.reload_config(force=True) and routed_group(services) == NEW_GROUP
    path.write_text(path.read_text().replace("group_id: 360000000107", "group_id: 360000000102", 1) + "# again\n")
    assert not services.reload_config(force=True)  # the stored version rules now
    assert routed_group(services) == NEW_GROUP


def test_an_invalid_stored_version_is_logged_and_the_running_one_kept(services: Services, clock: Any,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    files = directory_files(services.mappings_dir)
    files["zendesk.yaml"] = files["zendesk.yaml"].replace("  billing:\n", "  not_a_category:\n", 1)
    assert services.store.configs.save(files, based_on=None, author="x", summary="broken", diffs={}, now=clock())
    assert not services.reload_config(force=True)
    [record] = [r for r in caplog.records if r.levelname == "ERROR"]
    assert "not a category in taxonomy.yaml" in record.error and routed_group(services) == "360000000101"
    caplog.clear()
    assert not services.reload_config(force=True) and not caplog.records  # said once, not at every look


def test_a_save_based_on_a_stale_version_is_refused(services: Services, clock: Any,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    files = directory_files(services.mappings_dir)
    first = services.store.configs.save(files, based_on=None, author="a", summary="s", diffs={}, now=clock())
    assert first is not None
    assert services.store.configs.save(files, based_on=None, author="b", summary="s", diffs={}, now=clock()) is None
    assert services.store.configs.latest_version() == first

    # Another edit lands between reading the configuration and saving it.
    monkeypatch.setattr(connector.config, "current_files", lambda store, directory: (None, dict(files)))
    with pytest.raises(ConfigError, match=RACE):
        save_category(services.mappings_dir, services.store, billing_edit(services), author="c", now=clock())
    assert services.store.configs.latest_version() == first and not services.store.configs.changes()


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Result]:
    """`deskroute ...` over a fresh database, from a directory with no .env."""
    cli_environment(monkeypatch, tmp_path, database_url(tmp_path))

    def invoke(*args: str) -> Result:
        return CliRunner().invoke(main, list(args), catch_exceptions=False)

    return invoke


def test_config_import_then_export_round_trips(run: Callable[..., Result], tmp_path: Path,
                                               make_services: Callable[..., Services]) -> None:
    defaults = run("config", "export", "before")
    assert defaults.exit_code == 0 and "no edit stored yet" in defaults.output
    assert directory_files(tmp_path / "before") == directory_files(PROJECT / "mappings")

    edited = tmp_path / "edited"
    shutil.copytree(PROJECT / "mappings", edited)
    zendesk = edited / "zendesk.yaml"
    zendesk.write_text(zendesk.read_text().replace("group_id: 360000000101", f"group_id: {NEW_GROUP}", 1)
                       + "# moved billing\n")
    imported = run("config", "import", str(edited), "--by", "carol")
    assert imported.exit_code == 0, imported.output
    assert "configuration v1 is live: zendesk.yaml changed" in imported.output
    assert "nothing to import" in run("config", "import", str(edited)).output

    exported = run("config", "export", "out")
    assert exported.exit_code == 0 and "exported configuration v1" in exported.output
    assert directory_files(tmp_path / "out") == directory_files(edited)  # byte for byte, comments included
    assert directory_files(PROJECT / "mappings") != directory_files(edited)  # the defaults untouched

    taxonomy = tmp_path / "out" / "taxonomy.yaml"  # one file replaces its namesake, the rest stays
    taxonomy.write_text(taxonomy.read_text().replace("languages: [en]", "languages: [en, de]", 1))
    single = run("config", "import", str(taxonomy))
    assert single.exit_code == 0 and "configuration v2 is live: taxonomy.yaml changed" in single.output

    history = run("config", "history").output.splitlines()
    assert history[0].startswith("v2 ") and "cli" in history[0] and "(taxonomy.yaml)" in history[0]
    assert history[1].startswith("v1 ") and "carol" in history[1] and f"import of {edited}" in history[1]

    services = make_services()  # a process starting now runs the imported configuration
    assert services.config_version == 2 and services.taxonomy.languages == ["en", "de"]
    assert routed_group(services) == NEW_GROUP


def test_an_invalid_import_is_refused_and_nothing_saved(run: Callable[..., Result], tmp_path: Path) -> None:
    taxonomy = tmp_path / "taxonomy.yaml"
    taxonomy.write_text((PROJECT / "mappings" / "taxonomy.yaml").read_text().replace(
        "categories:\n", "categories:\n  gift_cards:\n    description: Gift cards\n", 1))
    refused = run("config", "import", str(taxonomy))
    assert refused.exit_code == 1 and "not imported, nothing changed" in refused.output
    # The file alone is valid: the whole configuration isn't, since no helpdesk routes the new category.
    assert "zendesk.yaml: categories.gift_cards: missing" in refused.output

    broken = tmp_path / "broken"
    shutil.copytree(PROJECT / "mappings", broken)
    (broken / "freshdesk.yaml").write_text("triage: [unclosed\n")
    refused = run("config", "import", str(broken))
    assert refused.exit_code == 1 and f"{broken / 'freshdesk.yaml'}: not valid YAML" in refused.output
    (broken / "freshdesk.yaml").unlink()
    assert "freshdesk.yaml: file not found" in run("config", "import", str(broken)).output

    other = tmp_path / "settings.yaml"
    other.write_text("a: 1\n")
    assert "not a configuration file" in run("config", "import", str(other)).output

    store = Store(database_url(tmp_path))
    assert store.configs.latest_version() is None and not store.configs.changes()
    assert "no configuration edits yet" in run("config", "history").output


def test_ticket_fields_survive_import_export_and_an_edit_in_the_admin_ui(
        run: Callable[..., Result], tmp_path: Path, make_services: Callable[..., Services], clock: Any) -> None:
    edited = tmp_path / "edited"
    shutil.copytree(PROJECT / "mappings", edited)
    blocks = {"zendesk": "fields:\n  category: 360001234567  # Deskroute category\n  tier: 360001234569\n",
              "freshdesk": "fields:\n  confidence_band: cf_deskroute_confidence\n"}
    for name, block in blocks.items():
        path = edited / f"{name}.yaml"
        path.write_text(path.read_text().replace("\ntriage:\n", f"\n{block}\ntriage:\n", 1))
    assert run("config", "import", str(edited)).exit_code == 0

    services = make_services()
    assert services.config_version == 1
    assert services.mappings["zendesk"].fields.configured() == {"category": "360001234567", "tier": "360001234569"}
    assert services.mappings["freshdesk"].fields.configured() == {"confidence_band": "cf_deskroute_confidence"}
    billing = Classification(category="billing", confidence=0.99, tier="local", reason="test")
    assert services.router.decide("zendesk", billing).fields == {"360001234567": "deskroute_billing",
                                                                 "360001234569": "deskroute_tier_local"}

    # An edit in the admin UI rewrites the files through ruamel: the block, and its comment, stay.
    save_category(services.mappings_dir, services.store, billing_edit(services), author="admin", now=clock())
    assert services.reload_config(force=True) and routed_group(services) == NEW_GROUP
    assert services.mappings["zendesk"].fields.configured() == {"category": "360001234567", "tier": "360001234569"}

    assert run("config", "export", "out").exit_code == 0
    exported = (tmp_path / "out" / "zendesk.yaml").read_text()
    assert blocks["zendesk"] in exported and f"group_id: {NEW_GROUP}" in exported
    assert blocks["freshdesk"] in (tmp_path / "out" / "freshdesk.yaml").read_text()
    assert "nothing to import" in run("config", "import", str(tmp_path / "out")).output


def test_clearing_ticket_fields_keeps_the_comments_around_them(make_services: Callable[..., Services],
                                                               mappings_dir: Path, clock: Any) -> None:
    path = mappings_dir / "zendesk.yaml"
    block = ("fields:\n  category: 360001234567  # Deskroute category\n  tier: 360001234569\n"
             "# Where a ticket no category is sure of goes\n\n")
    path.write_text(path.read_text().replace("\ntriage:\n", f"\n{block}triage:\n", 1))
    services = make_services(deskroute_mappings_dir=mappings_dir)
    triage = RouteEdit(group_id=services.mappings["zendesk"].triage.group_id, tags=["needs_routing"])
    unset = {"category": None, "confidence_band": None}

    save_helpdesk(mappings_dir, services.store, "zendesk", triage, {**unset, "tier": None}, author="a", now=clock())
    text = services.store.configs.latest().files["zendesk.yaml"]  # type: ignore[union-attr]
    assert "\nfields:" not in text and "# Where a ticket no category is sure of goes\n\ntriage:\n" in text
    assert text.startswith("# Where each category goes in Zendesk.")

    save_helpdesk(mappings_dir, services.store, "zendesk", triage, {**unset, "tier": "360001234569"}, author="a",
                  now=clock())
    with pytest.raises(ConfigError):  # not a number: refused by validation, not a crash
        save_helpdesk(mappings_dir, services.store, "zendesk", triage, {**unset, "tier": "²"}, author="a",
                      now=clock())


def test_clearing_ticket_fields_at_the_end_of_a_file_keeps_the_comments_after_them(
        make_services: Callable[..., Services], mappings_dir: Path, clock: Any) -> None:
    """A hand-edited file may end with its fields block and a note after it: the note stays."""
    path = mappings_dir / "zendesk.yaml"
    path.write_text(path.read_text() + "fields:\n  tier: 360001234569\n\n# Ask Sam before changing the field ids\n")
    services = make_services(deskroute_mappings_dir=mappings_dir)
    triage = RouteEdit(group_id=services.mappings["zendesk"].triage.group_id, tags=["needs_routing"])

    save_helpdesk(mappings_dir, services.store, "zendesk", triage, {"tier": None}, author="a", now=clock())
    text = services.store.configs.latest().files["zendesk.yaml"]  # type: ignore[union-attr]
    assert "\nfields:" not in text and text.endswith("    tags: [admin]\n\n# Ask Sam before changing the field ids\n")
    assert services.reload_config(force=True) and services.mappings["zendesk"].fields.configured() == {}
