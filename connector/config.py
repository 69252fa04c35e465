"""Edits to mappings/ from the admin UI: validated, written back to the YAML files with their comments
kept (ruamel.yaml round-trips them), and recorded with who, when and the diff.

The files stay the source of truth, reviewable in git; the UI is a careful editor of them.
"""

from __future__ import annotations

import difflib
import io
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from connector.mappings import MappingError, Taxonomy, parse_mapping, parse_taxonomy
from connector.store import Store


class ConfigError(ValueError):
    """The edit would make the configuration invalid; the message says where and why."""


@dataclass
class RouteEdit:
    """A category's route in one helpdesk."""

    group_id: str
    tags: list[str] = field(default_factory=list)
    priority: str | None = None


@dataclass
class CategoryEdit:
    """A category as the admin UI's form submits it."""

    name: str
    description: str
    keywords: list[str]
    examples: list[str]
    priority: str
    mode: str
    routes: dict[str, RouteEdit]  # platform -> route


def _yaml() -> YAML:
    yaml = YAML()  # round-trip: comments, order and flow styles survive
    yaml.width = 4096  # never re-wrap long lines (ruamel would fold long examples)
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.preserve_quotes = True
    return yaml


def _replace_list(node: CommentedMap, key: str, values: list[str]) -> None:
    current = node.get(key)
    if isinstance(current, CommentedSeq):
        if list(current) != values:
            current.clear()  # in place, so a [flow, style] list stays one
            current.extend(values)
    elif values:
        node[key] = values


def _set(node: CommentedMap, key: str, value: Any, *, default: Any = None) -> None:
    """Set a key the file has; add one only when it differs from the default (files stay short)."""
    if value is None:
        node.pop(key, None)
    elif key in node or value != default:
        node[key] = value


def _dump(yaml: YAML, data: Any) -> str:
    out = io.StringIO()
    yaml.dump(data, out)
    return out.getvalue()


def _group_id(value: str) -> Any:
    return int(value) if value.isdigit() else value


def _write(path: Path, text: str) -> None:
    # Write beside, then rename: a crash never leaves a half-written configuration file.
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    # mkstemp makes the file 0600: keep the old file's mode, so a worker running as another user still reads it.
    os.fchmod(fd, path.stat().st_mode & 0o7777 if path.exists() else 0o644)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(temp, path)


def save_category(directory: Path, store: Store, edit: CategoryEdit, *, author: str, now: float,
                  known_groups: dict[str, dict[str, str]] | None = None) -> list[str]:
    """Apply one category's edit to taxonomy.yaml and every <platform>.yaml; returns the files changed.

    Args:
        known_groups: per platform, the live group list; a group id not in it is refused.
    """
    for platform, route in edit.routes.items():
        groups = (known_groups or {}).get(platform)
        if groups is not None and route.group_id not in groups:
            raise ConfigError(f"{platform}: group {route.group_id} doesn't exist in {platform}; "
                              f"pick one of its {len(groups)} groups")
    yaml = _yaml()
    files: dict[Path, tuple[str, str]] = {}  # path -> (old text, new text)

    taxonomy_path = directory / "taxonomy.yaml"
    old = taxonomy_path.read_text(encoding="utf-8")
    data = yaml.load(old)
    categories = data["categories"]
    node = categories.get(edit.name)
    if node is None:
        node = categories[edit.name] = CommentedMap()
    node["description"] = edit.description
    _set(node, "priority", edit.priority, default="normal")
    _set(node, "mode", edit.mode, default="live")
    _replace_list(node, "keywords", edit.keywords)
    _replace_list(node, "examples", edit.examples)
    files[taxonomy_path] = (old, _dump(yaml, data))
    try:
        taxonomy: Taxonomy = parse_taxonomy(files[taxonomy_path][1], taxonomy_path)
    except MappingError as exc:
        raise ConfigError(str(exc)) from None

    for platform, route in edit.routes.items():
        path = directory / f"{platform}.yaml"
        old = path.read_text(encoding="utf-8")
        data = yaml.load(old)
        node = data["categories"].get(edit.name)
        if node is None:
            node = data["categories"][edit.name] = CommentedMap()
        node["group_id"] = _group_id(route.group_id)
        _replace_list(node, "tags", route.tags)
        if not route.tags:
            node.pop("tags", None)
        _set(node, "priority", route.priority)
        files[path] = (old, _dump(yaml, data))
        try:
            parse_mapping(files[path][1], path, taxonomy)
        except MappingError as exc:
            raise ConfigError(str(exc)) from None

    changed = []
    for path, (old, new) in files.items():
        if old == new:
            continue
        _write(path, new)
        diff = "".join(difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True),
                                            fromfile=f"a/{path.name}", tofile=f"b/{path.name}"))
        store.add_config_change(at=now, author=author, file=path.name, summary=f"category {edit.name}", diff=diff)
        changed.append(path.name)
    return changed
