"""Labelled ticket files: CSV or JSONL with `subject`, `body` (or `text`) and `category`."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path


class DatasetError(ValueError):
    """The file can't be read as a dataset; the message names the file and the row."""


@dataclass
class Dataset:
    """Texts and their labels, in file order."""

    texts: list[str]
    labels: list[str]

    def __len__(self) -> int:
        return len(self.texts)

    def __add__(self, other: Dataset) -> Dataset:
        return Dataset(self.texts + other.texts, self.labels + other.labels)


def _text(row: dict[str, object]) -> str:
    if row.get("text"):
        return str(row["text"]).strip()
    return f"{row.get('subject') or ''}\n{row.get('body') or ''}".strip()


def load_dataset(path: Path) -> Dataset:
    """Read a .csv or .jsonl file; rows without a category are an error, not silently dropped."""
    path = Path(path)
    try:
        if path.suffix.lower() in (".jsonl", ".ndjson"):
            with path.open(encoding="utf-8") as handle:
                rows = [json.loads(line) for line in handle if line.strip()]
        else:
            with path.open(encoding="utf-8", newline="") as handle:
                rows = list(csv.DictReader(handle))
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found") from None
    except (ValueError, csv.Error) as exc:
        raise DatasetError(f"{path}: unreadable: {exc}") from exc
    texts, labels = [], []
    for number, row in enumerate(rows, start=1):
        if not isinstance(row, dict):
            raise DatasetError(f"{path}: row {number}: not an object")
        label = str(row.get("category") or "").strip()
        if not label:
            raise DatasetError(f"{path}: row {number}: no category")
        texts.append(_text(row))
        labels.append(label)
    if not texts:
        raise DatasetError(f"{path}: no rows")
    return Dataset(texts, labels)
