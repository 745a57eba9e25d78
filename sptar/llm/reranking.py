"""Query-likelihood reranking (UPR / ART's relevance signal): a candidate document's score for a
query is the LLM's mean log-probability per token of the query (end of line included) after the
prompt with that document, ``log P(q | d)`` in the prompt format the soft prompt was tuned on.

The work is grouped by document: the prefix every prompt shares (the soft prompt and the
in-context examples) runs once, each candidate document then runs once on top of it, and every
query that has the document among its candidates is scored on that cache
(:mod:`sptar.llm.kvcache`). The scores equal those of whole prompts run one by one.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sptar.config import Config
from sptar.io.paths import Paths
from sptar.llm.prompts import IGNORE_INDEX, PromptFormat
from sptar.outputs.prompt import Example

log = logging.getLogger(__name__)


@dataclass
class QueryLikelihood:
    """Mean ``log P(query | document)`` of a causal LM (with an optional soft prompt
    ``[1, n, hidden]`` in front) in the prompt format ``fmt`` with the ``examples``."""

    model: Any
    fmt: PromptFormat
    examples: Sequence[Example] = ()
    soft_prompt: Any = None
    pad_id: int = 0
    device: str = "cpu"
    batch_size: int = 16
    _states: list | None = field(init=False, repr=False)
    _prefix_len: int = field(init=False, repr=False)

    def __post_init__(self) -> None:
        from sptar.llm.kvcache import prefix_embeddings, prefix_states

        prefix = self.fmt.prefix_ids(self.examples)
        if not prefix and self.soft_prompt is None:  # no BOS, no example, no soft prompt
            self._states, self._prefix_len = None, 0
            return
        embeds = prefix_embeddings(self.model, prefix, self.soft_prompt)
        self._states, self._prefix_len = prefix_states(self.model, embeds), embeds.shape[1]

    def _with_document(self, doc_ids: Sequence[int]) -> list | None:
        """The shared prefix's states extended by every document token but the last (whose
        logits predict a query's first token, so it opens each query's row)."""
        import torch

        from sptar.llm.kvcache import prefix_cache

        head = list(doc_ids[:-1])
        if not head:
            return self._states
        cache = prefix_cache(self.model, self._states, 1)
        mask = torch.ones(1, self._prefix_len + len(head), dtype=torch.long, device=self.device)
        with torch.inference_mode():
            out = self.model(input_ids=torch.tensor([head], device=self.device),
                             attention_mask=mask, past_key_values=cache, use_cache=True,
                             logits_to_keep=1)
        return [(keys, values) for keys, values, *_ in out.past_key_values]

    def scores(self, doc: str, queries: Sequence[str]) -> list[float]:
        """Each query's mean log-probability per token after the prompt with ``doc``."""
        from sptar.llm.scoring import scores_after_prefix

        doc_ids = self.fmt.doc_ids(doc, len(self.examples))
        states = self._with_document(doc_ids)
        rows = []
        for query in queries:
            target = self.fmt.target_ids(query)
            rows.append(([doc_ids[-1], *target], [IGNORE_INDEX, *target]))
        cached = self._prefix_len + len(doc_ids) - 1
        nll = scores_after_prefix(self.model, states, cached, rows, self.pad_id, self.device,
                                  self.batch_size)
        return [-total / max(count, 1) for total, count in nll]


@contextlib.contextmanager
def open_scorer(cfg: Config, paths: Paths, tuned: bool) -> Iterator[QueryLikelihood]:
    """The configured LLM as a :class:`QueryLikelihood` scorer in the ``rerank`` section's
    settings (document tokens, batch, precision), inside its precision's autocast: with the
    tuned soft prompt and its chosen examples (``tune/``), or the plain LLM without any. The
    one scorer of the ql-rerank systems and of the training teacher (``train.loss margin_mse``)."""
    from sptar.llm.prompts import PromptFormat
    from sptar.models import autocast, cast_linear_weights, load_causal_lm, resolve_device
    from sptar.outputs.prompt import load_prompt

    rc = cfg.rerank
    device = resolve_device(cfg.device)
    model, tokenizer = load_causal_lm(cfg.models.llm, device, cfg.models.trust_remote_code,
                                      cfg.models.download)
    soft, examples, limits = None, [], {}
    if tuned:
        from sptar.llm.softprompt import soft_prompt_embeddings

        prompt = load_prompt(paths)
        model, soft = soft_prompt_embeddings(model, prompt.adapter)
        examples, limits = prompt.examples, prompt.limits
    cast_linear_weights(model, device, rc.precision)
    fmt = PromptFormat(tokenizer, style="sptar", max_doc_tokens=rc.max_doc_tokens, **limits)
    with autocast(device, rc.precision):
        yield QueryLikelihood(model, fmt, examples, soft, tokenizer.pad_token_id, device,
                              rc.batch_size)


def rerank(scorer: QueryLikelihood, run: Mapping[str, Mapping[str, float]],
           queries: Mapping[str, str], documents: Mapping[str, str], depth: int,
           desc: str = "reranking") -> tuple[dict[str, dict[str, float]], dict[str, Any]]:
    """``(new run, counts)``: each query's top ``depth`` documents of ``run`` reordered by the
    scorer (ties keep the first run's order), the rest below them in their first order. The
    new run's scores are ranks turned around (the top document scores highest)."""
    from tqdm.auto import tqdm

    ranked = {qid: sorted(docs, key=lambda d: -docs[d]) for qid, docs in run.items()}
    by_doc: dict[str, list[str]] = {}
    for qid, docs in ranked.items():
        for did in docs[:depth]:
            by_doc.setdefault(did, []).append(qid)
    likelihood: dict[str, dict[str, float]] = {qid: {} for qid in ranked}
    started = time.perf_counter()
    for did, qids in tqdm(by_doc.items(), desc=desc, unit="doc"):
        for qid, value in zip(qids, scorer.scores(documents[did], [queries[q] for q in qids]),
                              strict=True):
            likelihood[qid][did] = value
    out = {}
    for qid, docs in ranked.items():
        top = sorted(docs[:depth], key=lambda d: (-likelihood[qid][d], docs.index(d)))
        order = top + docs[depth:]
        out[qid] = {did: float(len(order) - rank) for rank, did in enumerate(order)}
    seconds = time.perf_counter() - started
    pairs = sum(len(q) for q in by_doc.values())
    counts = {"depth": depth, "pairs_scored": pairs, "documents_scored": len(by_doc),
              "seconds": round(seconds, 2), "pairs_per_s": round(pairs / max(seconds, 1e-9), 3)}
    log.info("%s: %d pairs over %d documents in %.1f s", desc, pairs, len(by_doc), seconds)
    return out, counts
