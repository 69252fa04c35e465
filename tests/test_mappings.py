"""mappings/: the default taxonomy and Zendesk mapping, validation errors, and decide()."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from connector.mappings import (
    MappingError,
    decide,
    load_mapping,
    load_taxonomy,
    possible_field_values,
    triage_instead,
)
from connector.models import ROUTED_TAG, TRIAGE_TAG, Classification, TierResult
from helpers import PROJECT

MAPPINGS = PROJECT / "mappings"


@pytest.fixture
def mappings_copy(tmp_path: Path) -> Path:
    target = tmp_path / "mappings"
    shutil.copytree(MAPPINGS, target)
    return target


def test_default_taxonomy_is_a_real_one() -> None:
    taxonomy = load_taxonomy(MAPPINGS)
    assert len(taxonomy.categories) >= 8
    for name, category in taxonomy.categories.items():
        assert category.description, name
        assert len(category.examples) >= 15, name
        assert len(set(category.examples)) == len(category.examples), f"{name} repeats an example"
    assert {g.name for g in taxonomy.guardrails} >= {"data_loss", "security"}


def test_default_zendesk_mapping_routes_every_category() -> None:
    taxonomy = load_taxonomy(MAPPINGS)
    mapping = load_mapping(MAPPINGS, "zendesk", taxonomy)
    assert set(mapping.categories) == set(taxonomy.categories)
    assert mapping.triage.group_id.isdigit()


@pytest.mark.parametrize(("old", "new", "expected"), [
    ("group_id: 360000000102", "group_id: [1, 2]", "zendesk.yaml: categories.account_access.group_id:"),
    ("    priority: urgent\n", "    priority: asap\n", "zendesk.yaml: categories.outage_performance.priority:"),
    ("    tags: [api]", "    tags: [two words]", "zendesk.yaml: categories.integrations_api.tags.0:"),
    ("  how_to:\n    group_id: 360000000106\n    tags: [how_to]\n", "",
     "zendesk.yaml: categories.how_to: missing; every taxonomy category needs a route"),
    ("categories:\n", "categories:\n  gardening:\n    group_id: 5\n",
     "zendesk.yaml: categories.gardening: not a category in taxonomy.yaml"),
    ("triage:\n  group_id: 360000000100\n", "triage:\n", "zendesk.yaml: triage.group_id: Field required"),
    ("triage:", "triage: [", "zendesk.yaml: not valid YAML"),
    ("\ntriage:", "\nfields:\n  category: [360001234567]\ntriage:",
     "zendesk.yaml: fields.category: Value error, [360001234567] is not a ticket field id"),
    ("\ntriage:", "\nfields:\n  tier: 1.5\ntriage:", "zendesk.yaml: fields.tier: Value error, 1.5 is not a ticket"),
    ("\ntriage:", "\nfields:\n  tier: true\ntriage:", "zendesk.yaml: fields.tier: Value error, True is not a ticket"),
    ("\ntriage:", "\nfields:\n  category: Deskroute category\ntriage:",
     "zendesk.yaml: fields.category: Value error, 'Deskroute category' is not a ticket field id: give Zendesk's "
     "field number (e.g. 360001234567) or Freshdesk's field name (e.g. cf_deskroute_category)"),
    ("\ntriage:", "\nfields:\n  priority: 360001234567\ntriage:",
     "zendesk.yaml: fields.priority: Extra inputs are not permitted"),
    # A group id in one spelling only: "0360..." would be written as the number, never recognised as it.
    ("group_id: 360000000101", 'group_id: "0360000000101"',
     "zendesk.yaml: categories.billing.group_id: Value error, '0360000000101' is not a group id"),
    ("group_id: 360000000101", "group_id: billing-team",
     "zendesk.yaml: categories.billing.group_id: Value error, 'billing-team' is not a group id"),
    ("\ntriage:", "\nfields:\n  category: 360001234567\n  tier: 360001234567\ntriage:",
     "zendesk.yaml: fields: Value error, tier and category name the same field 360001234567"),
])
def test_mapping_errors_name_the_file_and_key(mappings_copy: Path, old: str, new: str, expected: str) -> None:
    path = mappings_copy / "zendesk.yaml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(MappingError) as error:
        load_mapping(mappings_copy, "zendesk", load_taxonomy(mappings_copy))
    assert expected in str(error.value)


@pytest.mark.parametrize(("old", "new", "expected"), [
    ("  billing:\n    description:", "  Billing Team:\n    description:", "taxonomy.yaml: categories.Billing Team"),
    ('      - "(been|was|got) hacked"', '      - "(unclosed"', "taxonomy.yaml: guardrails.1.patterns"),
    ("    priority: low\n", "    priority: 3\n", "taxonomy.yaml: categories.feature_request.priority"),
    ("version: 1", "version: 1\nlanguage: en", "taxonomy.yaml: language: Extra inputs are not permitted"),
    ("languages: [en]", "languages: [english]", "taxonomy.yaml: languages.0: String should match pattern"),
])
def test_taxonomy_errors_name_the_file_and_key(mappings_copy: Path, old: str, new: str, expected: str) -> None:
    path = mappings_copy / "taxonomy.yaml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(MappingError) as error:
        load_taxonomy(mappings_copy)
    assert expected in str(error.value)


def uncomment_fields(text: str) -> str:
    """The file with its commented-out `fields:` example switched on."""
    example = text[text.index("# fields:\n"):text.index("\ntriage:")]
    return text.replace(example, "\n".join(line.removeprefix("# ") for line in example.splitlines()) + "\n")


@pytest.mark.parametrize(("platform", "ids"), [
    ("zendesk", ("360001234567", "360001234568", "360001234569")),
    ("freshdesk", ("cf_deskroute_category", "cf_deskroute_confidence", "cf_deskroute_tier")),
])
def test_the_commented_fields_example_is_valid_and_each_field_gets_its_tag(
        mappings_copy: Path, platform: str, ids: tuple[str, str, str]) -> None:
    taxonomy = load_taxonomy(mappings_copy)
    assert load_mapping(mappings_copy, platform, taxonomy).fields.configured() == {}  # off by default
    path = mappings_copy / f"{platform}.yaml"
    path.write_text(uncomment_fields(path.read_text()))
    mapping = load_mapping(mappings_copy, platform, taxonomy)
    category, band, tier = ids
    assert mapping.fields.configured() == {"category": category, "confidence_band": band, "tier": tier}

    routed = decide(Classification(category="billing", confidence=0.8, tier="local", reason="r"), mapping, taxonomy)
    assert routed.fields == {category: "deskroute_billing", band: "deskroute_conf_medium", tier: "deskroute_tier_local"}
    assert set(routed.fields.values()) <= set(routed.tags)  # the field says what the tag says
    guarded = decide(Classification(category=None, confidence=1.0, tier="rules", reason="g", guardrail="security"),
                     mapping, taxonomy)
    assert guarded.fields == {category: TRIAGE_TAG, band: "deskroute_conf_high", tier: "deskroute_tier_rules"}
    assert set(guarded.fields.values()) <= set(guarded.tags)
    # The fallback after a refused routing writes no fields: the plainest write.
    assert triage_instead(routed, mapping, taxonomy, reason="refused").fields == {}
    for key in ("category", "confidence_band", "tier"):
        assert routed.fields[mapping.fields.configured()[key]] in possible_field_values(key, taxonomy)
        assert guarded.fields[mapping.fields.configured()[key]] in possible_field_values(key, taxonomy)


def test_possible_field_values_cover_every_category_band_and_tier(config: tuple) -> None:
    taxonomy, _ = config
    categories = possible_field_values("category", taxonomy)
    assert categories[-1] == TRIAGE_TAG and len(categories) == len(taxonomy.categories) + 1
    assert possible_field_values("confidence_band", taxonomy) == [
        "deskroute_conf_high", "deskroute_conf_medium", "deskroute_conf_low"]
    assert possible_field_values("tier", taxonomy) == [
        "deskroute_tier_rules", "deskroute_tier_local", "deskroute_tier_llm", "deskroute_tier_triage"]


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(MappingError, match="taxonomy.yaml: file not found"):
        load_taxonomy(tmp_path)


@pytest.fixture
def config() -> tuple:
    taxonomy = load_taxonomy(MAPPINGS)
    return taxonomy, load_mapping(MAPPINGS, "zendesk", taxonomy)


def test_decide_routes_a_confident_category(config: tuple) -> None:
    taxonomy, mapping = config
    c = Classification(category="outage_performance", confidence=0.93, tier="local", reason="local model: 0.93")
    d = decide(c, mapping, taxonomy)
    assert not d.triage and d.group_id == "360000000104" and d.priority == "urgent"
    assert d.tags == [ROUTED_TAG, "incident", "deskroute_outage_performance", "deskroute_tier_local",
                      "deskroute_conf_high"]
    assert "outage_performance" in d.note and "confidence 0.93" in d.note and "tier: local" in d.note


def test_decide_uses_the_taxonomy_priority_when_the_mapping_has_none(config: tuple) -> None:
    taxonomy, mapping = config
    d = decide(Classification(category="feature_request", confidence=0.8, tier="rules", reason="r"), mapping, taxonomy)
    assert d.priority == "low" and "deskroute_conf_medium" in d.tags


def test_decide_sends_guardrails_to_triage_at_their_priority(config: tuple) -> None:
    taxonomy, mapping = config
    c = Classification(category=None, confidence=1.0, tier="rules", reason="guardrail 'security'", guardrail="security",
                       priority="urgent", tiers=[TierResult(tier="local", category="account_access", confidence=0.9)])
    d = decide(c, mapping, taxonomy)
    assert d.triage and d.group_id == mapping.triage.group_id and d.priority == "urgent"
    assert TRIAGE_TAG in d.tags and "deskroute_guardrail_security" in d.tags
    assert "Best guess: account_access" in d.note


def test_triage_instead_keeps_the_guess_and_priority(config: tuple) -> None:
    taxonomy, mapping = config
    first = decide(Classification(category="outage_performance", confidence=0.9, tier="local", reason="r"),
                   mapping, taxonomy)
    fallback = triage_instead(first, mapping, taxonomy, reason="zendesk refused the routing (422)")
    assert fallback.triage and fallback.group_id == mapping.triage.group_id and fallback.priority == "urgent"
    assert "zendesk refused the routing (422)" in fallback.note and "Best guess: outage_performance" in fallback.note
