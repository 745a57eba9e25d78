"""Query text helpers: comparing texts (the split's leak guard, the weak-data filter) and
cleaning up what the LLM wrote (SPTAR's post-processing of a generated query)."""

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


_LABEL = re.compile(r"^(?:relevant\s+)?(?:query|question)\s*\d*\s*:\s*", re.IGNORECASE)
_PROMPT_BLOCK = re.compile(r"^(?:document|example\s*\d*)\s*:", re.IGNORECASE)
_QUOTES = "\"'`“”‘’"


def clean_query(raw: str) -> tuple[str, str | None]:
    """``(query, None)``, or ``("", reason)`` when nothing usable was written.

    SPTAR's post-processing: keep the first line, drop an echoed prompt label such as
    ``Relevant Query:``, strip quotes, and cut a tail that repeats itself.
    """
    line = re.split(r"[\r\n]", raw, maxsplit=1)[0]
    text = " ".join(line.split())
    while (match := _LABEL.match(text)) is not None:
        text = text[match.end():]
    if _PROMPT_BLOCK.match(text):
        return "", "prompt echo"
    text = text.strip(_QUOTES + " ")
    text = cut_repeated_tail(text)
    if not any(ch.isalnum() for ch in text):
        return "", "empty"
    return text, None


def cut_repeated_tail(text: str) -> str:
    """Keep one copy of what the model started to repeat.

    - a word sequence repeating at the end: ``a b c a b c a`` -> ``a b c`` (a period of one word
      needs three copies, ``the the the``; longer periods two; the last word may be cut short,
      as when ``max_new_tokens`` ends the line mid-word);
    - a restart: the query's first three words again after a sentence end (``What is the X? What
      is the Y`` -> ``What is the X?``).
    """
    words = text.split()
    folded = [w.lower() for w in words]
    n = len(words)

    def same(i: int, j: int) -> bool:  # word j repeats word i (the last word may be partial)
        return folded[i] == folded[j] or (j == n - 1 and folded[i].startswith(folded[j]))

    best = n
    for period in range(1, n // 2 + 1):
        start = n - period
        while start > 0 and same(start - 1, start - 1 + period):
            start -= 1
        copies = 3 if period == 1 else 2
        if n - start >= copies * period:
            best = min(best, start + period)
    for i in range(3, best - 2):
        if folded[i:i + 3] == folded[:3] and any(mark in words[i - 1] for mark in ".?!"):
            best = i
            break
    return " ".join(words[:best]) if best < n else text
