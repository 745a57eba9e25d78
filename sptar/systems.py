"""The systems a report compares and the variants that make them, named once."""

from __future__ import annotations

SYSTEMS = ("bm25", "zero-shot", "wo-aug", "inpars", "sptar")  # in report order
WEAK_VARIANTS = ("inpars", "sptar")  # generated, filtered and exported weak sets
TRAINED = ("wo-aug", "inpars", "sptar")  # retrievers the train stage fine-tunes
