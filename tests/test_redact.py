"""PII redaction before any LLM call."""

from __future__ import annotations

import pytest

from connector.classify.redact import redact


@pytest.mark.parametrize(("text", "expected"), [
    ("Write to jo.bloggs+billing@example.co.uk please", "Write to [EMAIL] please"),
    ("Card 4111 1111 1111 1111 was charged", "Card [CARD] was charged"),
    ("card 4111-1111-1111-1111", "card [CARD]"),
    ("my amex 378282246310005", "my amex [CARD]"),
    ("IBAN DE89 3704 0044 0532 0130 00 for the refund", "IBAN [IBAN] for the refund"),
    ("iban GB82WEST12345698765432", "iban [IBAN]"),
    ("Call me on +44 20 7946 0958 tomorrow", "Call me on [PHONE] tomorrow"),
    ("or (415) 555-0132", "or [PHONE]"),
    ("from 192.168.10.4 at night", "from [IP] at night"),
    ("our key sk_live_51HxYzAbCdEfGhIjKlMn leaked", "our key [SECRET] leaked"),
])
def test_personal_data_is_replaced_by_typed_placeholders(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize("text", [
    "Order 1234567890123 arrived late",          # 13 digits, but not a valid card number (Luhn)
    "Invoice INV-2026-0042 for 49.99 EUR",
    "On 2026-11-22 at 10:30 the export failed",
    "We have 250 seats and 3 workspaces",
    "Version 4.12.1 broke the sync",
    "Release 2026.11.22.1 is out",
])
def test_ordinary_numbers_are_left_alone(text: str) -> None:
    assert redact(text) == text


def test_iban_needs_a_valid_checksum() -> None:
    assert "[IBAN]" not in redact("DE89 3704 0044 0532 0130 01")  # one digit off


def test_everything_at_once() -> None:
    text = ("Hi, I'm Ana (ana@shop.io, +1 415 555 0132). Please refund card 5555 5555 5555 4444 "
            "to IBAN NL91ABNA0417164300, order 88231.")
    redacted = redact(text)
    for secret in ("ana@shop.io", "415 555 0132", "5555 5555 5555 4444", "NL91ABNA0417164300"):
        assert secret not in redacted
    assert redacted.count("[") == 4 and "order 88231" in redacted
