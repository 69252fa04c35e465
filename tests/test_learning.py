"""Learning from corrections: accepted re-routes retrain the local model, behind a promotion gate."""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from connector.classify.local import LocalModel
from connector.cli import main
from connector.datasets import Dataset
from connector.feedback import consider, retrain, rollback
from connector.model_keeper import TRAIN_LOCK
from connector.services import Services
from helpers import FakeClock, cli_environment

# Tickets the team routes to integrations_api (the SSO app config lives with the API team), but whose
# words ("SSO", "login", "certificate") the taxonomy's examples put under account_access.
SSO_CONFIG = [
    "Our SSO login stopped working after the IdP certificate rotation, users cannot sign in",
    "We need to upload the new SAML certificate for single sign-on, login fails with signature error",
    "Okta login broken since we renewed the SSO certificate this morning",
    "SAML metadata changed on our side, SSO login now fails for the whole company",
    "Please update our single sign-on certificate, logins fail since it expired",
    "Azure AD SSO login error after certificate renewal: invalid signature",
    "After rotating the identity provider certificate nobody can log in through SSO",
    "SSO certificate expired today and login through Okta is failing",
    "Login via SAML fails, the assertion signature doesn't validate with our new certificate",
    "We replaced the SSO signing certificate and now single sign-on login is rejected",
    "OneLogin SSO login fails since the certificate rollover last night",
    "Users get a SAML error at login after we changed our IdP certificate",
    "Can you reload our SSO metadata? The certificate changed and login fails",
    "Single sign-on login broken, certificate fingerprint mismatch after renewal",
    "Our identity provider issued a new certificate and SSO login stopped working",
    "SSO login error: certificate not trusted, we renewed it on the IdP yesterday",
    "Google Workspace SAML login failing since certificate update",
    "Need help updating the SAML certificate, login via SSO is down for our users",
]
NEW_TICKET = "Our SSO login fails after the certificate was renewed, users cannot sign in"


def accept_corrections(services: Services, texts: list[str], label: str, clock: FakeClock) -> None:
    for n, text in enumerate(texts):
        services.store.corrections.add({
            "platform": "zendesk", "ticket_id": str(1000 + n), "change_id": f"c{n}", "seq": 1, "text": text,
            "predicted_category": "account_access", "predicted_group_id": "360000000102", "predicted_tier": "local",
            "predicted_confidence": 0.9, "previous_group_id": "360000000102", "corrected_group_id": "360000000107",
            "corrected_category": label, "agent_id": "555", "via": "web", "routed_at": clock() - 600,
            "rerouted_at": clock(), "status": "accepted", "reviewed_at": clock(), "created_at": clock(),
        })


def predicted(services: Services, text: str) -> str:
    """The active local model's answer (the router reloads it whenever another version is activated)."""
    model = services.router.cascade().local
    assert model is not None
    return model.predict(text).top_label


def test_accepted_corrections_flip_a_prediction_the_model_got_wrong(services: Services, clock: FakeClock) -> None:
    assert predicted(services, NEW_TICKET) == "account_access"  # consistently wrong for this team
    assert sum(predicted(services, t) == "account_access" for t in SSO_CONFIG) >= 12

    clock.advance(3600)  # the corrections arrive after the current model was trained
    accept_corrections(services, SSO_CONFIG, "integrations_api", clock)
    report = retrain(services.store, services.taxonomy, services.settings, now=clock())
    assert report.promoted, report.reason
    assert report.n_holdout >= 5 and report.current_f1 is not None and report.candidate_f1 > report.current_f1

    assert predicted(services, NEW_TICKET) == "integrations_api"
    [active] = [m for m in services.store.models.all() if m.active]
    assert active.metrics["holdout_macro_f1"] == round(report.candidate_f1, 4)
    assert active.n_examples == len(services.taxonomy.examples()[0]) + len(SSO_CONFIG)


def test_a_worse_candidate_is_refused(services: Services) -> None:
    texts, labels = services.taxonomy.examples()
    shuffled = labels[:]
    random.Random(7).shuffle(shuffled)
    worse = LocalModel.train(texts, shuffled)  # trained on scrambled labels
    holdout = Dataset(["Please resend our invoice for March", "The whole app is down, 502 everywhere",
                       "I am locked out, the 2FA code is rejected", "Could you add a dark mode?",
                       "How do I export all projects to CSV?"],
                      ["billing", "outage_performance", "account_access", "feature_request", "data_import_export"])
    active = services.store.models.active_version()
    report = consider(services.store, worse, holdout, source="test: scrambled labels")
    assert not report.promoted and report.current_f1 is not None and report.candidate_f1 < report.current_f1
    assert "below the current model's" in report.reason
    assert services.store.models.active_version() == active  # unchanged
    refused = services.store.models.info(report.version)  # type: ignore[arg-type]
    assert not refused.active and refused.source.endswith("(refused)")


def test_a_retrain_with_nothing_new_waits(services: Services, clock: FakeClock) -> None:
    report = retrain(services.store, services.taxonomy, services.settings, now=clock())
    assert not report.promoted and report.version is None and "waiting for" in report.reason


def test_model_cli_lists_promotes_and_rolls_back(services: Services, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch, clock: FakeClock) -> None:
    cli_environment(monkeypatch, tmp_path, services.settings.database_url)

    def run(*args: str) -> Any:
        return CliRunner().invoke(main, list(args), catch_exceptions=False)

    first = services.store.models.active_version()
    nothing_new = run("model", "retrain")
    assert nothing_new.output.startswith("retrain skipped: only 0 new feedback example(s)"), nothing_new.output
    assert [r.trigger for r in services.store.retrains.recent()] == ["cli"]
    clock.advance(3600)
    accept_corrections(services, SSO_CONFIG, "integrations_api", clock)
    assert services.store.auth.try_lock(TRAIN_LOCK, "a-worker", until=time.time() + 60, now=time.time())
    busy = CliRunner().invoke(main, ["model", "retrain"])
    assert busy.exit_code == 1 and "being trained now" in busy.output  # not a second training at once
    assert services.store.models.active_version() == first
    services.store.auth.unlock(TRAIN_LOCK, "a-worker")
    result = run("model", "retrain")
    assert result.exit_code == 0 and "promoted" in result.output, result.output
    second = services.store.models.active_version()
    assert second is not None and first is not None and second > first
    listing = run("model", "list").output.splitlines()
    assert listing[0].startswith(f"* v{second}") and "held-out macro-F1" in listing[0]
    assert run("model", "rollback").output.strip() == f"rolled back: model v{first} is now active"
    assert services.store.models.active_version() == first
    assert run("model", "promote", str(second)).exit_code == 0
    assert services.store.models.active_version() == second
    assert run("model", "promote", "999").exit_code == 1


def test_rollback_needs_an_earlier_model(services: Services) -> None:
    with pytest.raises(LookupError):
        rollback(services.store, services.taxonomy)


def test_a_retrain_embeds_each_text_once_and_forgets_the_vectors(services: Services, clock: FakeClock,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The candidate's fit, the held-out answers of both models and the final fit all embed the same texts:
    once is enough, and the vectors go with the retrain."""
    from connector.classify import embeddings

    if not embeddings.available():
        pytest.skip("the [embeddings] extra is not installed")
    embedded: list[str] = []
    original = embeddings.Embedder._embed

    def counting(self: embeddings.Embedder, texts: list[str], batch_size: int) -> Any:
        embedded.extend(texts)
        return original(self, texts, batch_size)

    monkeypatch.setattr(embeddings.Embedder, "_embed", counting)
    clock.advance(3600)
    accept_corrections(services, SSO_CONFIG, "integrations_api", clock)
    report = retrain(services.store, services.taxonomy, services.settings, now=clock())
    assert report.promoted, report.reason
    assert len(embedded) == len(set(embedded))  # no text embedded twice...
    texts, _ = services.taxonomy.examples()
    assert len(embedded) >= len(set(texts)) + len(SSO_CONFIG) - 1  # ...though every one was (the final fit's too)
    assert getattr(embeddings._reuse, "vectors", None) is None  # and nothing is kept afterwards
    before = len(embedded)
    embeddings.embedder().embed(["Our SSO login fails"] * 2)
    assert len(embedded) == before + 2  # outside a retrain, nothing is remembered


def test_only_the_newest_retrains_are_kept(services: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    from connector.store import RetrainRecord
    from connector.store.trained import Retrains

    monkeypatch.setattr(Retrains, "KEEP", 3)
    for n in range(5):
        services.store.retrains.record(RetrainRecord(n, n + 1, "schedule", "skipped", f"r{n}", n_holdout=0))
    assert [r.reason for r in services.store.retrains.recent(10)] == ["r4", "r3", "r2"]
