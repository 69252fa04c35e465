"""A cheap guess at a ticket's language, to send tickets outside the taxonomy's languages to the
strong model without asking the fast one first. Stopword counts for a few European languages, and
the script for the rest; good enough to tell "not English" from English, which is all it is for.
"""

from __future__ import annotations

import re

STOPWORDS: dict[str, frozenset[str]] = {
    "en": frozenset("the and is are to of my i you it in for on with this that not can have was please".split()),
    "de": frozenset("der die das und ist nicht ich sie es mit für auf ein eine bitte mein wir haben zu".split()),
    "fr": frozenset("le la les et est pas je vous il elle avec pour sur un une mon ne merci nous".split()),
    "es": frozenset("el la los las y es no yo usted con para en un una mi por favor gracias que".split()),
    "pt": frozenset("o a os as e é não eu você com para em um uma meu por favor obrigado que".split()),
    "it": frozenset("il lo la gli le e è non io lei con per su un una mio grazie che sono".split()),
    "nl": frozenset("de het een en is niet ik u je met voor op mijn wij hebben alstublieft bedankt".split()),
}
_WORD = re.compile(r"[^\W\d_]+")
_LATIN = re.compile(r"[A-Za-zÀ-ɏ]")


def guess_language(text: str) -> str | None:
    """An ISO 639-1 code, "other" for a non-Latin script or no match, or None if the text is too short to tell."""
    letters = [c for c in text if c.isalpha()]
    if len(letters) < 12:
        return None
    if sum(1 for c in letters if _LATIN.match(c)) < 0.5 * len(letters):
        return "other"
    words = [w.lower() for w in _WORD.findall(text)]
    scores = {lang: sum(w in stop for w in words) for lang, stop in STOPWORDS.items()}
    best = max(scores, key=scores.__getitem__)
    return best if scores[best] >= 2 else None


def outside(text: str, languages: list[str]) -> bool:
    """True only when the text is confidently in a language not on the list."""
    guess = guess_language(text)
    return guess is not None and guess not in languages
