"""The configuration's versions (taxonomy and mappings, whole) and the history of its changes.

Until an admin first edits it, the configuration is the files in mappings/; from then on the newest
version here is live, on every process of the install (connector/config.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from connector.store.db import Part


@dataclass
class ConfigVersion:
    version: int
    at: float
    author: str
    summary: str
    files: dict[str, str]  # file name -> YAML text


class Configs(Part):
    """The `config_versions`, `config_changes` and `helpdesk_groups` tables."""

    def latest_version(self) -> int | None:
        """The live version's number (cheap: every process asks every few seconds), or None: the files rule."""
        return self.execute("SELECT max(version) AS v FROM config_versions")[0]["v"]

    def latest(self) -> ConfigVersion | None:
        """The live configuration, or None while the files in mappings/ are."""
        rows = self.execute("SELECT * FROM config_versions ORDER BY version DESC LIMIT 1")
        return self._version(rows[0]) if rows else None

    def get(self, version: int) -> ConfigVersion:
        rows = self.execute("SELECT * FROM config_versions WHERE version = :v", {"v": version})
        if not rows:
            raise KeyError(version)
        return self._version(rows[0])

    @staticmethod
    def _version(row: Any) -> ConfigVersion:
        return ConfigVersion(version=row["version"], at=row["at"], author=row["author"], summary=row["summary"],
                             files=json.loads(row["files"]))

    def save(self, files: dict[str, str], *, based_on: int | None, author: str, summary: str,
             diffs: dict[str, str], now: float) -> int | None:
        """Store a new live version, unless another was saved since `based_on` (None: no version yet);
        returns the new version, or None when someone else's edit got there first."""
        with self.db.transaction() as tx:
            if not self.db.sqlite:  # SQLite's BEGIN IMMEDIATE already serialises this; PostgreSQL needs a lock
                tx.execute("LOCK TABLE config_versions IN EXCLUSIVE MODE")
            current = tx.execute("SELECT max(version) AS v FROM config_versions")[0]["v"]
            if current != based_on:
                return None
            version = int(tx.execute(
                "INSERT INTO config_versions (at, author, summary, files) VALUES (:at, :author, :summary, :files)"
                " RETURNING version",
                {"at": now, "author": author, "summary": summary, "files": json.dumps(files, sort_keys=True)},
            )[0]["version"])
            for name, diff in diffs.items():
                tx.execute("INSERT INTO config_changes (at, author, file, summary, diff, version)"
                           " VALUES (:at, :author, :file, :summary, :diff, :version)",
                           {"at": now, "author": author, "file": name, "summary": summary, "diff": diff,
                            "version": version})
        return version

    def groups(self, platform: str, *, fresher_than: float) -> tuple[bool, dict[str, str] | None]:
        """(found, groups) of the helpdesk's group list if fetched after `fresher_than` by any process;
        groups None: that fetch failed."""
        rows = self.execute("SELECT groups FROM helpdesk_groups WHERE platform = :platform AND fetched_at > :t",
                            {"platform": platform, "t": fresher_than})
        if not rows:
            return False, None
        return True, json.loads(rows[0]["groups"]) if rows[0]["groups"] is not None else None

    def save_groups(self, platform: str, groups: dict[str, str] | None, *, now: float) -> None:
        self.execute("INSERT INTO helpdesk_groups (platform, groups, fetched_at) VALUES (:platform, :groups, :now)"
                     " ON CONFLICT (platform) DO UPDATE SET groups = excluded.groups, fetched_at = excluded.fetched_at",
                     {"platform": platform, "groups": json.dumps(groups) if groups is not None else None,
                      "now": now})

    def changes(self, limit: int = 50) -> list[dict[str, Any]]:
        """Recent edits, newest first."""
        return [dict(r) for r in self.execute("SELECT * FROM config_changes ORDER BY id DESC LIMIT :limit",
                                              {"limit": limit})]
