"""The admin's configuration (taxonomy and mappings): where the live copy is, and how it changes.

`mappings/*.yaml` are the first-run default. The first edit (admin UI or `deskroute config import`)
stores a whole new version in the database, with who, when and each file's diff; from then on the
newest version is live on every process of the install, and `deskroute config export` writes it back
out as YAML for review. Edits are validated, and ruamel.yaml round-trips them so comments survive.
"""

from __future__ import annotations

import difflib
import io
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from connector.mappings import MappingError, PlatformMapping, Taxonomy, parse_mapping, parse_taxonomy
from connector.store import Store
from platforms import PLATFORMS

if TYPE_CHECKING:
    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedMap

RACE = "someone else changed the configuration meanwhile; reload and try again"


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
    from ruamel.yaml import YAML  # only edits need it: the web process loads it on the first save

    yaml = YAML()  # round-trip: comments, order and flow styles survive
    yaml.width = 4096  # never re-wrap long lines (ruamel would fold long examples)
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.preserve_quotes = True
    return yaml


def _replace_list(node: CommentedMap, key: str, values: list[str]) -> None:
    from ruamel.yaml.comments import CommentedSeq

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


def _following_lines(node: CommentedMap, key: Any) -> str:
    """The comment lines after node[key]'s value, up to the next key. ruamel keeps them with that value (with
    its last key's, for a mapping), so they would go if the key went."""
    value = node[key]
    if isinstance(value, dict) and value:
        return _following_lines(value, list(value)[-1])  # type: ignore[arg-type]
    slot = node.ca.items.get(key)
    token = slot[2] if slot and len(slot) > 2 else None
    if token is None:
        return ""
    text = str(token.value)
    return text[1:] if text.startswith("\n") else text.partition("\n")[2]  # not its own end-of-line comment


def _pop(node: CommentedMap, key: Any, *, within: tuple[CommentedMap, Any] | None = None) -> None:
    """Remove node[key] but keep the comment lines after it, before whatever comes next (in node, or after
    `within`: the parent and the key node is the value of)."""
    from ruamel.yaml.error import CommentMark
    from ruamel.yaml.tokens import CommentToken

    if key not in node:
        return
    lines = _following_lines(node, key)
    keys = list(node)
    node.pop(key)
    node.ca.items.pop(key, None)
    after = keys[keys.index(key) + 1:]
    target, next_key = (node, after[0]) if after else (None, None)
    if target is None and within is not None:
        parent_keys = list(within[0])
        later = parent_keys[parent_keys.index(within[1]) + 1:]
        target, next_key = (within[0], later[0]) if later else (None, None)
    if not lines.strip():
        return
    if target is None:  # nothing follows: the lines go after what is now the file's last value
        root = within[0] if within is not None else node
        if root:
            _append_following(root, list(root)[-1], lines)
        return
    slot = target.ca.items.setdefault(next_key, [None, None, None, None])
    slot[1] = [CommentToken(lines, CommentMark(0), None), *(slot[1] or [])]


def _append_following(node: CommentedMap, key: Any, lines: str) -> None:
    """Add comment lines after node[key]'s value, where ruamel keeps them: with its deepest last key or item."""
    from ruamel.yaml.comments import CommentedSeq
    from ruamel.yaml.error import CommentMark
    from ruamel.yaml.tokens import CommentToken

    value = node[key]
    if isinstance(value, dict) and value:
        _append_following(value, list(value)[-1], lines)  # type: ignore[arg-type]
        return
    if isinstance(value, CommentedSeq) and value and not value.fa.flow_style():
        slot, index = value.ca.items.setdefault(len(value) - 1, [None, None, None, None]), 0
    else:
        slot, index = node.ca.items.setdefault(key, [None, None, None, None]), 2
    token = slot[index]
    if token is None:
        slot[index] = CommentToken("\n" + lines, CommentMark(0), None)
    else:
        token.value = token.value + lines if token.value.endswith("\n") else f"{token.value}\n{lines}"


def _dump(yaml: YAML, data: Any) -> str:
    out = io.StringIO()
    yaml.dump(data, out)
    return out.getvalue()


def _numeric_id(value: str) -> Any:
    """A Zendesk id as the files write it, a number; anything else (a Freshdesk cf_ name, "0123", "²") as text,
    for the files' validation to judge."""
    return int(value) if re.fullmatch(r"[1-9][0-9]{0,18}", value) else value


def _write(path: Path, text: str) -> None:
    # Write beside, then rename: a crash never leaves a half-written configuration file.
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    # mkstemp makes the file 0600: keep the old file's mode, so a worker running as another user still reads it.
    os.fchmod(fd, path.stat().st_mode & 0o7777 if path.exists() else 0o644)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(temp, path)


def file_names() -> list[str]:
    """The configuration's files: taxonomy.yaml, then one <platform>.yaml per helpdesk."""
    return ["taxonomy.yaml", *(f"{platform}.yaml" for platform in PLATFORMS)]


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MappingError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise MappingError(f"{path}: can't be read: {exc}") from None


def directory_files(directory: Path) -> dict[str, str]:
    """The configuration as the files in `directory` hold it (MappingError names a missing one)."""
    return {name: _read(directory / name) for name in file_names()}


def current_files(store: Store, directory: Path) -> tuple[int | None, dict[str, str]]:
    """The live configuration: (its version, {file name: text}); version None while the files in
    `directory` are live (no edit stored yet)."""
    latest = store.configs.latest()
    if latest is None:
        return None, directory_files(directory)
    files = dict(latest.files)
    for name in file_names():
        if name not in files:  # a helpdesk added since that version: its default file, until an edit stores it
            files[name] = _read(directory / name)
    return latest.version, files


def parse_files(files: Mapping[str, str], *, paths: Mapping[str, Path] | None = None,
                ) -> tuple[Taxonomy, dict[str, PlatformMapping]]:
    """Validate a whole configuration; MappingError says which file and key is wrong.

    Args:
        paths: the name errors give each file (default: its bare name).
    """
    def path(name: str) -> Path:
        return (paths or {}).get(name, Path(name))

    missing = [name for name in file_names() if name not in files]
    if missing:
        raise MappingError(f"{', '.join(missing)}: missing from the configuration")
    taxonomy = parse_taxonomy(files["taxonomy.yaml"], path("taxonomy.yaml"))
    mappings = {platform: parse_mapping(files[f"{platform}.yaml"], path(f"{platform}.yaml"), taxonomy)
                for platform in PLATFORMS}
    return taxonomy, mappings


def load_config(store: Store, directory: Path) -> tuple[int | None, Taxonomy, dict[str, PlatformMapping]]:
    """The live configuration, validated: (version or None, taxonomy, {platform: mapping})."""
    version, files = current_files(store, directory)
    if version is None:
        return None, *parse_files(files, paths={name: directory / name for name in files})
    try:
        return version, *parse_files(files)
    except MappingError as exc:
        raise MappingError(f"configuration v{version} (in the database):\n{exc}") from None


def _diff(name: str, old: str, new: str) -> str:
    return "".join(difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True),
                                        fromfile=f"a/{name}", tofile=f"b/{name}"))


def _save(store: Store, old: Mapping[str, str], new: dict[str, str], *, based_on: int | None, author: str,
          summary: str, now: float) -> tuple[int | None, list[str]]:
    """Store `new` as the next version (if it changes anything); (version, names of the files changed)."""
    changed = [name for name in new if old.get(name) != new[name]]
    if not changed:
        return based_on, []
    version = store.configs.save(new, based_on=based_on, author=author, summary=summary, now=now,
                                 diffs={name: _diff(name, old.get(name, ""), new[name]) for name in changed})
    if version is None:
        raise ConfigError(RACE)
    return version, changed


def _check_group(platform: str, group_id: str, groups: Mapping[str, str] | None) -> None:
    if groups is not None and group_id not in groups:
        raise ConfigError(f"{platform}: group {group_id} doesn't exist in {platform}; "
                          f"pick one of its {len(groups)} groups")


def _live_files(store: Store, directory: Path) -> tuple[int | None, dict[str, str]]:
    try:
        return current_files(store, directory)
    except MappingError as exc:
        raise ConfigError(str(exc)) from None


def _set_route(node: CommentedMap, route: RouteEdit) -> None:
    """A route's group and tags (a route without tags has no `tags:` key)."""
    node["group_id"] = _numeric_id(route.group_id)
    _replace_list(node, "tags", route.tags)
    if not route.tags:
        node.pop("tags", None)


def save_category(directory: Path, store: Store, edit: CategoryEdit, *, author: str, now: float,
                  known_groups: dict[str, dict[str, str]] | None = None) -> list[str]:
    """Apply one category's edit to taxonomy.yaml and every <platform>.yaml of the live configuration,
    and store the result as a new version; returns the files changed (none: no new version).

    Args:
        directory: the default files, while no version is stored yet.
        known_groups: per platform, the live group list; a group id not in it is refused.
    """
    for platform, route in edit.routes.items():
        _check_group(platform, route.group_id, (known_groups or {}).get(platform))
    version, old = _live_files(store, directory)
    yaml = _yaml()
    new = dict(old)

    data = yaml.load(old["taxonomy.yaml"])
    categories = data["categories"]
    node = categories.get(edit.name)
    if node is None:
        node = categories[edit.name] = yaml.map()
    node["description"] = edit.description
    _set(node, "priority", edit.priority, default="normal")
    _set(node, "mode", edit.mode, default="live")
    _replace_list(node, "keywords", edit.keywords)
    _replace_list(node, "examples", edit.examples)
    new["taxonomy.yaml"] = _dump(yaml, data)
    try:  # the taxonomy alone first: a bad name is reported as such, not as every mapping's missing route
        parse_taxonomy(new["taxonomy.yaml"], Path("taxonomy.yaml"))
    except MappingError as exc:
        raise ConfigError(str(exc)) from None

    for platform, route in edit.routes.items():
        name = f"{platform}.yaml"
        data = yaml.load(old[name])
        node = data["categories"].get(edit.name)
        if node is None:
            node = data["categories"][edit.name] = yaml.map()
        _set_route(node, route)
        _set(node, "priority", route.priority)
        new[name] = _dump(yaml, data)
    try:
        parse_files(new)
    except MappingError as exc:
        raise ConfigError(str(exc)) from None
    return _save(store, old, new, based_on=version, author=author, summary=f"category {edit.name}", now=now)[1]


def save_helpdesk(directory: Path, store: Store, platform: str, triage: RouteEdit, fields: Mapping[str, str | None],
                  *, author: str, now: float, known_groups: dict[str, str] | None = None) -> list[str]:
    """Apply one helpdesk's triage route and ticket fields (key -> field id, None: unset) to <platform>.yaml
    of the live configuration, and store the result as a new version; returns the files changed."""
    _check_group(platform, triage.group_id, known_groups)
    version, old = _live_files(store, directory)
    yaml = _yaml()
    name = f"{platform}.yaml"
    data = yaml.load(old[name])
    _set_route(data["triage"], triage)
    if any(fields.values()):
        node = data.get("fields")
        if node is None:  # before the triage route, under the file's comments about fields, not at its end
            node = yaml.map()
            data.insert(list(data).index("triage") if "triage" in data else len(data), "fields", node)
        for key, value in fields.items():
            if value:
                node[key] = _numeric_id(value)  # Zendesk's field ids are numbers, as group ids are
            else:
                _pop(node, key, within=(data, "fields"))
    else:
        _pop(data, "fields")
    new = {**old, name: _dump(yaml, data)}
    try:
        parse_files(new)
    except MappingError as exc:
        raise ConfigError(str(exc)) from None
    return _save(store, old, new, based_on=version, author=author, summary=f"{platform} triage and fields",
                 now=now)[1]


def import_config(store: Store, path: Path, *, directory: Path, author: str,
                  now: float) -> tuple[int | None, list[str]]:
    """Make a directory's configuration files, or one file (which replaces the file of its name), the
    live configuration, once the whole result validates; (version, names of the files changed).

    Args:
        directory: the default files, while no version is stored yet.
    """
    try:
        version, old = current_files(store, directory)
        if path.is_dir():
            given, paths = directory_files(path), {name: path / name for name in file_names()}
        elif path.name in file_names():
            given, paths = {path.name: _read(path)}, {path.name: path}
        else:
            raise ConfigError(f"{path}: not a configuration file; give a directory, or one of "
                              f"{', '.join(file_names())}")
        new = {**old, **given}
        parse_files(new, paths=paths)
    except MappingError as exc:
        raise ConfigError(str(exc)) from None
    return _save(store, old, new, based_on=version, author=author, summary=f"import of {path}", now=now)


def export_config(store: Store, directory: Path, out_dir: Path) -> tuple[int | None, list[Path]]:
    """Write the live configuration's files into `out_dir`; (its version, the files written).

    Args:
        directory: the default files, while no version is stored yet (they are the live ones then).
    """
    try:
        version, files = current_files(store, directory)
    except MappingError as exc:
        raise ConfigError(str(exc)) from None
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name in sorted(files):
        target = out_dir / Path(name).name  # names come from the database: never outside out_dir
        _write(target, files[name])
        written.append(target)
    return version, written
