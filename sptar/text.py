"""Text comparison helpers shared by the split's leak guard and the weak-data filter."""

from __future__ import annotations

import re
import unicodedata

_WORD = re.compile(r"\w+")


def words(text: str) -> list[str]:
    """Lower-case word tokens (letters, digits, underscore): what dedup compares."""
    return _WORD.findall(text.lower())


def normalized(text: str) -> str:
    """A query's text for equality tests: Unicode-normalised (NFKC), case-folded, punctuation
    and spacing dropped (``"Salt raises  blood-pressure."`` -> ``"salt raises blood pressure"``)."""
    return " ".join(_WORD.findall(unicodedata.normalize("NFKC", text).casefold()))
