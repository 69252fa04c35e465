"""Structured logs: one JSON object per line, carrying ids, never ticket text or secrets.

Call sites pass ids through `extra={...}`; this formatter writes them as fields. Exceptions are
reduced to their type, because a message can quote the data that caused it.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}
# Libraries that log request bodies at DEBUG (zenpy logs every call's kwargs, ticket fields included).
_QUIET = ("zenpy", "urllib3", "httpx", "httpcore", "anthropic", "apscheduler")
_NEEDS_QUOTES = re.compile(r'[\s"=]|^$')


def _fields(record: logging.LogRecord) -> dict[str, object]:
    return {k: v for k, v in record.__dict__.items() if k not in _RESERVED and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    """`{"ts": ..., "level": ..., "logger": ..., "msg": ..., **extra}`."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info and record.exc_info[0] is not None:
            out["exc_type"] = record.exc_info[0].__name__
        return json.dumps(out, default=str, ensure_ascii=False)


def _plain(value: Any) -> str:
    """A value as one token: quoted when it has spaces, quotes or line breaks, so that a request path or a
    helpdesk's error text can't forge another log line or field."""
    text = str(value)
    return json.dumps(text, ensure_ascii=False) if _NEEDS_QUOTES.search(text) else text


class TextFormatter(logging.Formatter):
    """`2026-11-22T10:00:00 INFO connector.worker event finished event_id=3 ticket_id=42`."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        extras = " ".join(f"{k}={_plain(v)}" for k, v in _fields(record).items())
        line = f"{stamp} {record.levelname} {record.name} {record.getMessage()}"
        if record.exc_info and record.exc_info[0] is not None:
            extras += f" exc_type={record.exc_info[0].__name__}"
        return f"{line} {extras}".rstrip()


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    """Send Deskroute's logs to stderr in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in _QUIET:
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLevelName(level)))
