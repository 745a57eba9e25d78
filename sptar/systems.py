"""The systems a report compares and the variants that make them, named once."""

from __future__ import annotations

SYSTEMS = ("bm25", "zero-shot", "wo-aug", "inpars", "sptar",  # in report order
           "ql-rerank", "ql-rerank-untuned")
# BM25's top-k reordered by the LLM's query likelihood: with the tuned soft prompt and its
# examples, and the plain LLM (sptar.llm.reranking)
RERANKERS = {"ql-rerank": "tuned", "ql-rerank-untuned": "untuned"}
WEAK_VARIANTS = ("inpars", "sptar")  # generated, filtered and exported weak sets
TRAINED = ("wo-aug", "inpars", "sptar")  # retrievers the train stage fine-tunes
