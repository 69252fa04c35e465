"""Redact personal data before any text leaves this machine (the LLM tier) or is kept (training text).

Each match becomes a typed placeholder, such as [EMAIL] or [CARD], so the classifier still sees
that an email address or a card number was there. Card numbers must pass the Luhn check and IBANs
the mod-97 check, so order numbers and dates are left alone.
"""

from __future__ import annotations

import re
from collections.abc import Callable

_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]{4}){2,7}(?:[ ]?[A-Z0-9]{1,4})?\b")
# 13 to 19 digits, in groups separated by single spaces or dashes.
_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
_PHONE = re.compile(r"(?<![\w+/.-])(?:\+|00|\()?\d[\d ().-]{6,18}\d(?![\w])")
_IPV4 = re.compile(r"\b(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)\b")
_SECRET = re.compile(r"\b(?:sk|pk|api|key|token|secret)[-_][A-Za-z0-9_-]{16,}\b", re.IGNORECASE)


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, char in enumerate(reversed(digits)):
        n = int(char)
        if i % 2:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0


def _card(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group())
    return "[CARD]" if 13 <= len(digits) <= 19 and _luhn_ok(digits) else match.group()


def _iban(match: re.Match[str]) -> str:
    compact = match.group().replace(" ", "")
    rearranged = compact[4:] + compact[:4]
    number = "".join(str(int(c, 36)) for c in rearranged)
    return "[IBAN]" if int(number) % 97 == 1 else match.group()


def _phone(match: re.Match[str]) -> str:
    text = match.group()
    digits = re.sub(r"\D", "", text)
    international = text.startswith(("+", "00"))
    if not 8 <= len(digits) <= 15:  # E.164 numbers have at most 15 digits
        return text
    if not international and text.isdigit():
        return text  # a bare run of digits: an order or account number, not a phone
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}|\d+(\.\d+)+", text):
        return text  # a date or a version number
    return "[PHONE]"


# Order matters: IBANs and cards before phones, which would also match their digit runs.
_RULES: tuple[tuple[re.Pattern[str], Callable[[re.Match[str]], str] | str], ...] = (
    (_EMAIL, "[EMAIL]"),
    (_SECRET, "[SECRET]"),
    (_IBAN, _iban),
    (_CARD, _card),
    (_IPV4, "[IP]"),
    (_PHONE, _phone),
)


def redact(text: str) -> str:
    """The text with emails, secrets, IBANs, card numbers, IP addresses and phone numbers replaced."""
    for pattern, replacement in _RULES:
        text = pattern.sub(replacement, text)
    return text
