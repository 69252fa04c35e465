"""Ticket text as a classifier should see it: the customer's own words, not the email around them.

Emailed tickets arrive as HTML, carry the quoted thread they reply to, a signature, a legal
disclaimer, and sometimes are nothing but an out-of-office reply. The quoted thread and the
signature are the words most likely to mislead a model (they repeat the last ticket's topic and the
company's name), so they go. mail-parser-reply finds reply headers, signatures and disclaimers in
14 languages, which beats the handful of English patterns we would write ourselves.
"""

from __future__ import annotations

import html
import re
from functools import cache
from html.parser import HTMLParser

_TAG = re.compile(r"<(p|br|div|html|body|span|table|a|b|i|blockquote|ul|li|font|img)\b[^>]*>", re.IGNORECASE)
_BLOCKS = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "table", "ul", "ol", "hr"}
_SKIP = {"script", "style", "head", "title", "blockquote"}  # blockquote: the quoted earlier message
_QUOTE_CLASSES = ("gmail_quote", "yahoo_quoted", "moz-cite-prefix", "divrplyfwdmsg", "ms-outlook-reply")
_QUOTED_LINE = re.compile(r"^[ \t]*>.*$", re.MULTILINE)
_SPACES = re.compile(r"[ \t\u00a0]+")
_BLANK_LINES = re.compile(r"\n\s*\n+")
# Phrases of automatic replies: in a subject line's start, or anywhere in the opening of the body.
# Narrow on purpose: "I was out of the office and now can't log in" is a real ticket.
_AUTO_REPLY_SUBJECT = re.compile(
    r"^\s*(automatic reply|auto[- ]?reply|autoreply|auto[- ]?response|out of (the )?office|ooo|"
    r"abwesenheitsnotiz|automatische antwort|réponse automatique|respuesta automática)\b", re.IGNORECASE)
_AUTO_REPLY_BODY = re.compile(
    r"\b(?:(?:i am|i'm|i will be) (?:currently )?(?:out of (?:the )?office|away from (?:the|my) (?:office|desk)|"
    r"on (?:annual )?leave) (?:until|and will|with limited|from)|"
    r"this is an automatic(?:ally generated)? (?:reply|response|message)|"
    r"ich bin (?:derzeit |zurzeit )?(?:nicht im büro|abwesend)|je suis absente? du bureau)", re.IGNORECASE)
_LANGUAGES = ["en", "de", "fr", "es", "it", "nl", "pl", "sv", "da", "cs"]
MAX_CHARS = 20_000  # a ticket's opening is what says what it is about; the rest only costs time


class _TextExtractor(HTMLParser):
    """HTML to text, keeping line breaks at block elements and dropping quoted and hidden parts."""

    def __init__(self, *, keep_quotes: bool = False) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping: list[str] = []  # tags we are inside of whose content is dropped
        self._keep_quotes = keep_quotes

    def _skips(self, tag: str, classes: str) -> bool:
        if self._keep_quotes:
            return tag in _SKIP - {"blockquote"}
        return tag in _SKIP or any(c in classes for c in _QUOTE_CLASSES)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        classes = " ".join(value or "" for name, value in attrs if name in ("class", "id")).lower()
        if self._skipping or self._skips(tag, classes):
            if tag not in ("br", "img", "hr", "meta", "link", "input"):  # void elements never close
                self._skipping.append(tag)
            return
        if tag in _BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if self._skipping:
            if tag == self._skipping[-1]:
                self._skipping.pop()
            return
        if tag in _BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)


def html_to_text(markup: str, *, keep_quotes: bool = False) -> str:
    """Visible text of an HTML body, without scripts or styles, and without quoted replies unless asked."""
    extractor = _TextExtractor(keep_quotes=keep_quotes)
    extractor.feed(markup)
    extractor.close()
    return html.unescape("".join(extractor.parts))


@cache
def _parser():  # type: ignore[no-untyped-def]
    from mailparser_reply import EmailReplyParser

    return EmailReplyParser(languages=_LANGUAGES)


def latest_reply(text: str) -> str:
    """The newest message in an email thread, without its signature or disclaimer."""
    try:
        replies = _parser().read(text).replies
    except Exception:  # a parser bug must not lose the ticket: classify the raw text instead
        return text
    body = replies[0].body if replies else ""
    return body if body.strip() else text  # all of it looked like a signature: keep the words we have


def is_auto_reply(text: str) -> bool:
    """An out-of-office or other automatic reply: no person is asking for anything."""
    first_line = text.lstrip().split("\n", 1)[0]
    return bool(_AUTO_REPLY_SUBJECT.match(first_line) or _AUTO_REPLY_BODY.search(text[:2000]))


def clean(text: str) -> str:
    """The customer's own words from a ticket's subject and body."""
    text = _unmarked(text)
    if "\n" in text:  # one-line texts have no thread or signature to strip
        text = latest_reply(text)
        text = _QUOTED_LINE.sub("", text)
    return _tidy(text)


def earlier_messages(text: str) -> list[str]:
    """The messages a ticket quotes or forwards below its newest one, oldest last, each without its
    headers and signature (empty when there are none)."""
    text = _unmarked(text, keep_quotes=True)
    try:
        replies = _parser().read(text).replies[1:] if "\n" in text else []
    except Exception:  # a parser bug must not lose the ticket: then there is only the newest message
        return []
    return [body for body in (_tidy(_QUOTED_LINE.sub("", r.body)) for r in replies) if body]


def _unmarked(text: str, *, keep_quotes: bool = False) -> str:
    text = text[:MAX_CHARS].replace("\r\n", "\n").replace("\r", "\n")
    return html_to_text(text, keep_quotes=keep_quotes) if _TAG.search(text) else text


def _tidy(text: str) -> str:
    return _BLANK_LINES.sub("\n", _SPACES.sub(" ", text)).strip()
