"""Trained local models: every version kept with its metrics, one of them active."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from connector.store.db import Part, Transaction

# Candidates the promotion gate turned down, told apart by their source. (The patterns are bound, not
# written in: SQLAlchemy misreads "%(" in a statement's text as a parameter.)
_REFUSED = "source LIKE :refused OR source LIKE :not_promoted"
_REFUSED_PATTERNS = {"refused": "%(refused)", "not_promoted": "%(not promoted%"}


@dataclass
class ModelInfo:
    """A stored model's metadata (its bytes stay in the database until asked for)."""

    version: int
    created_at: float
    labels: list[str]
    n_examples: int
    metrics: dict[str, Any]
    source: str
    sha256: str
    active: bool


class Models(Part):
    """The `models` table."""

    def save(self, *, blob: bytes, labels: list[str], n_examples: int, metrics: dict[str, Any], source: str,
             sha256: str, activate: bool, now: float) -> int:
        """Keep a trained model; with activate, it becomes the one the router uses."""
        with self.db.transaction() as tx:  # deactivate the old and insert the new as one change
            self._exclusive(tx)
            if activate:
                tx.execute("UPDATE models SET active = 0 WHERE active = 1")
            rows = tx.execute(
                "INSERT INTO models (created_at, labels, n_examples, metrics, source, sha256, blob, active)"
                " VALUES (:now, :labels, :n_examples, :metrics, :source, :sha256, :blob, :active) RETURNING version",
                {"now": now, "labels": json.dumps(labels), "n_examples": n_examples, "metrics": json.dumps(metrics),
                 "source": source, "sha256": sha256, "blob": blob, "active": int(activate)})
        return int(rows[0]["version"])

    def _exclusive(self, tx: Transaction) -> None:
        """PostgreSQL: one activation at a time, or two processes activating at once (say, each retraining
        after the same configuration edit) would leave two active models. SQLite's BEGIN IMMEDIATE does this."""
        if not self.db.sqlite:
            tx.execute("LOCK TABLE models IN EXCLUSIVE MODE")

    def prune(self, keep: int, keep_refused: int = 3) -> list[int]:
        """Delete models beyond the newest `keep` that were not refused, and the newest `keep_refused`
        refused candidates (never the active one): each holds its vocabulary. Refused candidates don't
        push out the versions a rollback needs."""
        rows = self.execute(
            "DELETE FROM models WHERE active = 0 AND version NOT IN"
            f" (SELECT version FROM models WHERE NOT ({_REFUSED}) ORDER BY version DESC LIMIT :keep) AND version NOT IN"
            f" (SELECT version FROM models WHERE {_REFUSED} ORDER BY version DESC LIMIT :keep_refused)"
            " RETURNING version", {"keep": keep, "keep_refused": keep_refused, **_REFUSED_PATTERNS})
        return sorted(r["version"] for r in rows)

    def activate(self, version: int) -> None:
        """Make a stored model the one the router uses."""
        with self.db.transaction() as tx:
            self._exclusive(tx)
            if not tx.execute("SELECT 1 FROM models WHERE version = :v", {"v": version}):
                raise KeyError(version)
            tx.execute("UPDATE models SET active = CASE WHEN version = :v THEN 1 ELSE 0 END"
                       " WHERE active = 1 OR version = :v", {"v": version})

    def active_version(self) -> int | None:
        """The version the router should be using, or None before the first training."""
        rows = self.execute("SELECT version FROM models WHERE active = 1")
        return rows[0]["version"] if rows else None

    def blob(self, version: int) -> bytes:
        """A stored model's bytes."""
        rows = self.execute("SELECT blob FROM models WHERE version = :v", {"v": version})
        if not rows:
            raise KeyError(version)
        return bytes(rows[0]["blob"])

    def info(self, version: int) -> ModelInfo:
        """One stored model's metadata (read alone: workers ask for the active one's every minute)."""
        rows = self.execute(f"SELECT {_INFO} FROM models WHERE version = :v", {"v": version})
        if not rows:
            raise KeyError(version)
        return _model_info(rows[0])

    def all(self) -> list[ModelInfo]:
        """Every stored model's metadata, newest first."""
        return [_model_info(r) for r in self.execute(f"SELECT {_INFO} FROM models ORDER BY version DESC")]


_INFO = "version, created_at, labels, n_examples, metrics, source, sha256, active"


def _model_info(row: Any) -> ModelInfo:
    return ModelInfo(version=row["version"], created_at=row["created_at"], labels=json.loads(row["labels"]),
                     n_examples=row["n_examples"], metrics=json.loads(row["metrics"]), source=row["source"],
                     sha256=row["sha256"], active=bool(row["active"]))


@dataclass
class RetrainRecord:
    """What one retrain did (RetrainReport, as kept for the admin UI)."""

    started_at: float
    finished_at: float
    trigger: str  # schedule | admin | admin:NAME (a named user's Retrain now) | cli
    outcome: str  # promoted | refused | kept inactive | skipped | failed
    reason: str
    version: int | None = None  # the candidate kept (none: skipped or failed)
    candidate_f1: float | None = None
    current_f1: float | None = None
    n_holdout: int | None = None


class Retrains(Part):
    """The `retrains` table: the newest KEEP retrains' outcomes."""

    KEEP = 100

    def record(self, record: RetrainRecord) -> None:
        with self.db.transaction() as tx:
            tx.execute("INSERT INTO retrains (started_at, finished_at, trigger, outcome, version, candidate_f1,"
                       " current_f1, n_holdout, reason) VALUES (:started_at, :finished_at, :trigger, :outcome,"
                       " :version, :candidate_f1, :current_f1, :n_holdout, :reason)", vars(record))
            tx.execute("DELETE FROM retrains WHERE id NOT IN (SELECT id FROM retrains ORDER BY id DESC LIMIT :keep)",
                       {"keep": self.KEEP})

    def recent(self, limit: int = 10) -> list[RetrainRecord]:
        """The newest retrains, newest first."""
        rows = self.execute("SELECT started_at, finished_at, trigger, outcome, version, candidate_f1, current_f1,"
                            " n_holdout, reason FROM retrains ORDER BY id DESC LIMIT :limit", {"limit": limit})
        return [RetrainRecord(**dict(row)) for row in rows]
