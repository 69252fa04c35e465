"""The admin's configuration: the taxonomy and, per helpdesk, where each category goes.

`mappings/taxonomy.yaml` names the categories (description, keywords, example tickets, default
priority) and the guardrails. `mappings/<platform>.yaml` maps each category to a group id, tags and
a priority, plus the triage route, and optionally names ticket fields that also get the decision.
Both are validated at startup; an error names the file and key.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from connector.models import (
    GROUP_LEVEL_TAG,
    OUT_OF_SCOPE,
    PRIORITIES,
    ROUTED_TAG,
    TRIAGE_TAG,
    Classification,
    Priority,
    RoutingDecision,
    TicketField,
    Tier,
    TierResult,
    candidates,
)

NAME_PATTERN = r"^[a-z][a-z0-9_]{0,49}$"
# Zendesk tags can't hold spaces and are lower-cased by Zendesk; Freshdesk accepts the same set.
TAG_PATTERN = r"^[a-z0-9][a-z0-9_\-:./]{0,79}$"
PACKAGED_MAPPINGS = Path(__file__).parent / "default_mappings"
PROJECT_MAPPINGS = Path(__file__).parent.parent / "mappings"

Name = Annotated[str, Field(pattern=NAME_PATTERN)]
Tag = Annotated[str, Field(pattern=TAG_PATTERN)]


def _id_text(value: Any) -> Any:
    # YAML reads 360000123 as an int; ids are strings everywhere else.
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _group_id(value: Any) -> str:
    # Both helpdesks number their groups. Held to the one way of writing a number, "0360..." or " 360" would be
    # written as the number but never recognised as it on the ticket (a retry would see our routing as moved).
    text = _id_text(value)
    if not isinstance(text, str) or not re.fullmatch(r"[1-9][0-9]{0,19}", text):
        raise ValueError(f"{value!r} is not a group id: give the helpdesk's group number (e.g. 360000123456)")
    return text


GroupId = Annotated[str, BeforeValidator(_group_id)]
# Zendesk numbers its ticket fields (360001234567); Freshdesk writes its custom fields by name (cf_category).
_FIELD_ID = re.compile(r"\A(?:[1-9][0-9]{0,19}|[A-Za-z][A-Za-z0-9_]{0,63})\Z")


def _field_id(value: Any) -> str:
    text = _id_text(value)
    if not isinstance(text, str) or not _FIELD_ID.match(text):
        raise ValueError(f"{value!r} is not a ticket field id: give Zendesk's field number (e.g. 360001234567) "
                         "or Freshdesk's field name (e.g. cf_deskroute_category)")
    return text


FieldId = Annotated[str, BeforeValidator(_field_id)]
BANDS = ("high", "medium", "low")


class MappingError(ValueError):
    """The configuration is invalid; the message names the file and the key."""


class Category(BaseModel):
    """One routing category."""

    model_config = ConfigDict(extra="forbid")
    description: str = Field(min_length=1)
    keywords: list[str] = Field(default_factory=list)
    examples: list[str] = Field(default_factory=list)
    priority: Priority = "normal"
    # shadow: classify and record tickets of this category, but don't write to the helpdesk.
    mode: Literal["live", "shadow"] = "live"


class Guardrail(BaseModel):
    """Phrases that send a ticket to humans at high priority, whatever the tiers say."""

    model_config = ConfigDict(extra="forbid")
    name: Name
    patterns: list[str] = Field(min_length=1)
    priority: Priority = "high"

    @field_validator("patterns")
    @classmethod
    def _compiles(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"pattern {pattern!r} is not a valid regular expression: {exc}") from exc
        return patterns


class Taxonomy(BaseModel):
    """Every category the router may choose, and the guardrails."""

    model_config = ConfigDict(extra="forbid")
    version: int = 1
    # ISO 639-1 codes of the languages tickets are expected in; others can go straight to the strong model.
    languages: list[Annotated[str, Field(pattern=r"^[a-z]{2}$")]] = Field(default_factory=lambda: ["en"])
    categories: dict[Name, Category] = Field(min_length=1)
    guardrails: list[Guardrail] = Field(default_factory=list)

    @property
    def fingerprint(self) -> str:
        """Changes whenever anything in the taxonomy changes."""
        return hashlib.sha256(json.dumps(self.model_dump(), sort_keys=True).encode()).hexdigest()[:12]

    def examples(self) -> tuple[list[str], list[str]]:
        """(texts, labels) from every category's example tickets."""
        texts, labels = [], []
        for name, category in self.categories.items():
            texts.extend(category.examples)
            labels.extend([name] * len(category.examples))
        return texts, labels


class Route(BaseModel):
    """Where a category goes in one helpdesk."""

    model_config = ConfigDict(extra="forbid")
    group_id: GroupId
    tags: list[Tag] = Field(default_factory=list)
    priority: Priority | None = None


class TicketFields(BaseModel):
    """Ticket fields that get the decision too (besides the tags), for views, reports and triggers.

    Each gets the tag Deskroute adds for the same thing (see `field_values`): on Zendesk, a drop-down
    option's value is a tag, so the field and the tags always agree.
    """

    model_config = ConfigDict(extra="forbid")
    category: FieldId | None = None  # deskroute_<category>, or deskroute_needs_triage
    confidence_band: FieldId | None = None  # deskroute_conf_<high|medium|low>
    tier: FieldId | None = None  # deskroute_tier_<rules|local|llm|triage>

    @model_validator(mode="after")
    def _one_field_each(self) -> TicketFields:
        seen: dict[str, str] = {}
        for key, field_id in self.configured().items():
            if field_id in seen:
                raise ValueError(f"{key} and {seen[field_id]} name the same field {field_id}; each needs its own")
            seen[field_id] = key
        return self

    def configured(self) -> dict[str, str]:
        """{key: field id} for the fields set."""
        return {key: value for key, value in self.model_dump().items() if value is not None}


class PlatformMapping(BaseModel):
    """One helpdesk's routes."""

    model_config = ConfigDict(extra="forbid")
    triage: Route
    categories: dict[Name, Route]
    fields: TicketFields = Field(default_factory=TicketFields)


def resolve_dir(directory: Path) -> Path:
    """The configured folder; if that default doesn't exist here, the project's or the packaged defaults."""
    if directory.exists() or directory.is_absolute() or directory != Path("mappings"):
        return directory
    for fallback in (PROJECT_MAPPINGS, PACKAGED_MAPPINGS):
        if fallback.exists():
            return fallback
    return directory


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MappingError(f"{path}: file not found") from None


def _validated(model: type[BaseModel], text: str, path: Path) -> Any:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise MappingError(f"{path}: not valid YAML: {exc}") from exc
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = [f"{path}: {'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}"
                    for err in exc.errors()]
        raise MappingError("\n".join(problems)) from None


def load_taxonomy(directory: Path) -> Taxonomy:
    """Read and validate taxonomy.yaml."""
    path = directory / "taxonomy.yaml"
    return parse_taxonomy(_read(path), path)


def parse_taxonomy(text: str, path: Path) -> Taxonomy:
    """Validate taxonomy.yaml's text (`path` names it in errors)."""
    return _validated(Taxonomy, text, path)


def load_mapping(directory: Path, platform: str, taxonomy: Taxonomy) -> PlatformMapping:
    """Read <platform>.yaml and check that it routes exactly the taxonomy's categories."""
    path = directory / f"{platform}.yaml"
    return parse_mapping(_read(path), path, taxonomy)


def parse_mapping(text: str, path: Path, taxonomy: Taxonomy) -> PlatformMapping:
    """Validate a platform mapping's text against the taxonomy (`path` names it in errors)."""
    mapping: PlatformMapping = _validated(PlatformMapping, text, path)
    missing = [name for name in taxonomy.categories if name not in mapping.categories]
    unknown = [name for name in mapping.categories if name not in taxonomy.categories]
    problems = [f"{path}: categories.{name}: missing; every taxonomy category needs a route" for name in missing]
    problems += [f"{path}: categories.{name}: not a category in taxonomy.yaml" for name in unknown]
    if problems:
        raise MappingError("\n".join(problems))
    return mapping


def confidence_band(confidence: float) -> str:
    """Coarse band for tags, so agents can filter views by how sure the router was."""
    return "high" if confidence >= 0.9 else "medium" if confidence >= 0.75 else "low"


def field_values(*, category: str | None, confidence: float, tier: str) -> dict[str, str]:
    """What each `fields:` key gets: the very tag Deskroute adds for it (category None: triage)."""
    return {"category": TRIAGE_TAG if category is None else f"deskroute_{category}",
            "confidence_band": f"deskroute_conf_{confidence_band(confidence)}",
            "tier": f"deskroute_tier_{tier}"}


def fits_taxonomy(labels: Collection[str], taxonomy: Taxonomy) -> bool:
    """True if a model with these labels can route every taxonomy category and nothing else."""
    return set(labels) - {OUT_OF_SCOPE} == set(taxonomy.categories)


def possible_field_values(key: str, taxonomy: Taxonomy) -> list[str]:
    """Every value Deskroute may write into the field `key`: a drop-down needs an option for each."""
    if key == "category":
        return [*(f"deskroute_{name}" for name in taxonomy.categories), TRIAGE_TAG]
    if key == "confidence_band":
        return [f"deskroute_conf_{band}" for band in BANDS]
    if key == "tier":
        return [f"deskroute_tier_{tier}" for tier in get_args(Tier)]
    raise KeyError(key)


def missing_groups(mapping: PlatformMapping, groups: Collection[str]) -> list[tuple[str, str]]:
    """(key, group id) of each route whose group isn't one of the helpdesk's `groups` (say, the default
    placeholder ids left in place): a ticket routed there is refused, and falls back to triage."""
    routes = [("triage", mapping.triage.group_id)] + [(f"categories.{c}", r.group_id)
                                                      for c, r in mapping.categories.items()]
    return [(key, group_id) for key, group_id in routes if group_id not in groups]


def field_problem(platform: str, key: str, field_id: str, fields: Mapping[str, TicketField],
                  taxonomy: Taxonomy) -> str | None:
    """Why the helpdesk's ticket field `field_id` can't take the values of `fields:` key `key`, or None when it
    can: it exists, is active, takes text, and a drop-down has an option for every value Deskroute may write.
    `deskroute doctor` and the admin UI's helpdesk form say the same."""
    field = fields.get(field_id)
    if field is None:
        usable = [f for f in fields.values() if f.kind != "other" and f.active]
        return f"is not a ticket field in {platform}; " + (
            f"pick one of: {', '.join(f'{f.id} ({f.title})' for f in usable[:8])}" if usable else
            f"create a drop-down or text field in {platform} first (README: Ticket fields)")
    if not field.active:
        return f"({field.title}) is inactive in {platform}: activate it"
    if field.kind == "other":
        return (f"({field.title}) is a {field.type} field, which can't take Deskroute's values: "
                "give a drop-down or text field")
    if field.kind == "dropdown" and (missing := [v for v in possible_field_values(key, taxonomy)
                                                 if v not in field.options]):
        return (f"({field.title}): the drop-down has no option with the value {', '.join(missing)}: add "
                + ("an option with each as its tag" if platform == "zendesk" else "each as a choice"))
    return None


def shared_route(categories: list[str], mapping: PlatformMapping) -> Route | None:
    """The one route several categories share in this mapping (the tags they all carry; no priority of its
    own), or None if they don't all go to one group."""
    routes = [mapping.categories[c] for c in categories if c in mapping.categories]
    if len(routes) != len(categories) or len({r.group_id for r in routes}) != 1:
        return None
    return Route(group_id=routes[0].group_id, tags=[t for t in routes[0].tags if all(t in r.tags for r in routes)])


def decide(classification: Classification, mapping: PlatformMapping, taxonomy: Taxonomy) -> RoutingDecision:
    """Turn a classification into the group, tags, priority and note to write back.

    A group-level classification (`ambiguous:a|b`) goes to the group its categories share, with the tags
    they all carry, and names the decision in a tag of its own; its category field is left alone.
    """
    category = classification.category
    members = candidates(category)
    route: Route | None = shared_route(members, mapping) if members else mapping.categories.get(category or "")
    triage = route is None or classification.guardrail is not None
    if triage:
        route = mapping.triage
    assert route is not None
    if classification.guardrail:
        priority = classification.priority or "high"
    else:
        # The admin's mapping first, then the classifier's own reading (Claude's), then the category default;
        # for a group-level decision, the most urgent of what each candidate would get.
        def priority_of(name: str, own: Route) -> Priority:
            default = taxonomy.categories[name].priority if name in taxonomy.categories else None
            return own.priority or classification.priority or default or "normal"

        if members and not triage:
            priority = max((priority_of(name, mapping.categories[name]) for name in members), key=PRIORITIES.index)
        else:
            priority = priority_of(category or "", route)
    values = field_values(category=None if triage else category, confidence=classification.confidence,
                          tier=classification.tier)
    group_level = bool(members) and not triage
    if group_level:
        values["category"] = GROUP_LEVEL_TAG
    tags = [ROUTED_TAG, *route.tags, values["category"]]
    if group_level:
        tags += [f"deskroute_candidate_{name}" for name in members]
    if classification.guardrail:
        tags.append(f"deskroute_guardrail_{classification.guardrail}")
    tags += [values["tier"], values["confidence_band"]]
    fields = {field_id: values[key] for key, field_id in mapping.fields.configured().items()
              if not (key == "category" and group_level)}
    return RoutingDecision(
        category=None if triage else category, group_id=route.group_id, tags=list(dict.fromkeys(tags)),
        priority=priority, note=_note(classification, triage, route.group_id), triage=triage,
        tier=classification.tier, confidence=classification.confidence, reason=classification.reason,
        fields=fields,
    )


def _note(classification: Classification, triage: bool, group_id: str) -> str:
    c = classification
    members = candidates(c.category)
    if not triage and members:
        return (f"Deskroute routed this ticket to group {group_id}, where {' and '.join(members)} all go: it is sure"
                f" of the destination ({c.confidence:.2f}), not of which of these categories it is.\n"
                f"Tier: {c.tier} | {c.reason}\n"
                "If you know which one it is, say so with \"Wrong?\" in the Deskroute app: it teaches the router."
                + (f"\nSummary: {c.summary}" if c.summary else ""))
    if not triage:
        note = (f"Deskroute routed this ticket to {c.category} (group {group_id}).\n"
                f"Category: {c.category} | confidence {c.confidence:.2f} | tier: {c.tier}\n"
                f"Reason: {c.reason}")
        return note + (f"\nSummary: {c.summary}" if c.summary else "")
    lines = [f"Deskroute sent this ticket to triage (group {group_id}) for a person to route.",
             f"Reason: {c.reason}"]
    guesses = sorted((t for t in c.tiers if t.category), key=lambda t: t.confidence, reverse=True)
    if guesses:
        best = guesses[0]
        lines.append(f"Best guess: {best.category} | confidence {best.confidence:.2f} | tier: {best.tier}")
    return "\n".join(lines)


def triage_instead(decision: RoutingDecision, mapping: PlatformMapping, taxonomy: Taxonomy, *,
                   reason: str) -> RoutingDecision:
    """The triage route for a ticket whose first decision the helpdesk refused (e.g. a deleted group).

    It sets no ticket fields: the plainest write, the likeliest to be accepted.
    """
    guess = TierResult(tier=decision.tier, category=decision.category, confidence=decision.confidence,
                       reason=decision.reason)
    fallback = Classification(category=None, confidence=decision.confidence, tier=decision.tier, reason=reason,
                              priority=decision.priority, tiers=[guess])
    return decide(fallback, mapping, taxonomy).model_copy(update={"fields": {}})
