"""History import: solved tickets, labelled with their final group's category, as training data.

A helpdesk with history starts with a local model trained on its own tickets on the first day.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from connector.classify.redact import redact
from connector.corrections import category_for_group

if TYPE_CHECKING:
    from connector.services import Services

# Rows written per transaction, and how often progress is reported.
BATCH = 200


@dataclass
class BackfillReport:
    """What an import read and kept."""

    read: int = 0
    kept: int = 0
    skipped_open: int = 0
    skipped_unmapped: int = 0


def backfill(services: Services, platform_name: str, *, days: int,
             progress: Callable[[int, int], None] = lambda read, kept: None) -> BackfillReport:
    """Import tickets solved in the last `days` days; their text is redacted before it is stored."""
    platform = services.platforms[platform_name]
    mapping = services.mappings[platform_name]
    now = time.time()
    since = datetime.fromtimestamp(now - days * 86400, UTC)
    report = BackfillReport()
    rows = []
    for ticket in platform.solved_tickets(since):
        report.read += 1
        category = category_for_group(mapping, ticket.group_id)
        if not ticket.solved:
            report.skipped_open += 1
        elif category not in services.taxonomy.categories:
            report.skipped_unmapped += 1
        elif ticket.text:
            rows.append({"platform": platform_name, "ticket_id": ticket.id, "text": redact(ticket.text),
                         "category": category, "group_id": ticket.group_id, "solved_at": ticket.updated_at,
                         "imported_at": now})
        if len(rows) >= BATCH:
            report.kept += services.store.corrections.add_history(rows)
            rows = []
        if report.read % BATCH == 0:
            progress(report.read, report.kept + len(rows))
    report.kept += services.store.corrections.add_history(rows)
    progress(report.read, report.kept)
    return report
