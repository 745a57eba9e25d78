"""The weak-data filters of ``filter.steps``: each takes the query ids that reach it (in order)
and returns the ones it drops, with the reason; :func:`apply_steps` runs them in order."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sptar.config import (
    BM25ConsistencyFilter,
    Config,
    DedupFilter,
    DenseConsistencyFilter,
    LengthFilter,
    LogprobTopNFilter,
    NotLabeledFilter,
    QueryLikelihoodFilter,
)
from sptar.errors import SptarError, input_error
from sptar.io.formats import Corpus, doc_text
from sptar.outputs.weakset import WeakSet
from sptar.text import words


@dataclass
class Context:
    """What the filters look at besides the query ids they get."""

    weak: WeakSet
    corpus: Corpus
    ranks: dict[str, int]  # exact BM25 rank of the source doc; 0 when it shares no term
    depth: int
    labeled: list[str] = field(default_factory=list)  # the labeled query texts (not_labeled)
    dense_ranks: dict[str, int] = field(default_factory=dict)  # base encoder's rank; 0: not found
    _doc_tokens: dict[str, list[str]] = field(default_factory=dict)

    def doc_tokens(self, doc_id: str) -> list[str]:
        if doc_id not in self._doc_tokens:
            self._doc_tokens[doc_id] = words(doc_text(self.corpus[doc_id]))
        return self._doc_tokens[doc_id]


# A filter takes the ids that reach it (in order) and returns {dropped id: reason}.
Filter = Callable[[list[str], Context, Any], dict[str, str]]


# ---------------------------------------------------------------- text helpers

def n_words(text: str) -> int:
    """Whitespace-separated words: what the length filter and the statistics count."""
    return len(text.split())


def longest_shared_run(query: list[str], doc: list[str]) -> int:
    """The longest run of consecutive tokens that ``query`` and ``doc`` share verbatim."""
    positions: dict[str, list[int]] = {}
    for index, token in enumerate(doc):
        positions.setdefault(token, []).append(index)
    best, previous = 0, {}
    for token in query:
        current = {j: previous.get(j - 1, 0) + 1 for j in positions.get(token, ())}
        if current:
            best = max(best, max(current.values()))
        previous = current
    return best


class NearDuplicateIndex:
    """Finds an indexed token set with Jaccard similarity >= ``threshold`` to a new one.

    Exact, without comparing all pairs (prefix filtering, as in all-pairs similarity joins):
    with tokens in one global order (rarest first), two sets whose Jaccard similarity is at
    least t share a token among the first ``|x| - ceil(t |x|) + 1`` tokens of each.
    """

    def __init__(self, threshold: float, token_counts: Counter):
        self.threshold = threshold
        self.counts = token_counts
        self.sets: list[frozenset[str]] = []
        self.labels: list[str] = []
        self.postings: dict[str, list[int]] = {}

    def _prefix(self, tokens: frozenset[str]) -> list[str]:
        ordered = sorted(tokens, key=lambda t: (self.counts[t], t))
        size = len(ordered) - math.ceil(self.threshold * len(ordered) - 1e-9) + 1
        return ordered[:max(size, 1)]

    def find(self, tokens: frozenset[str]) -> tuple[str, float] | None:
        """The first indexed set (by insertion) similar enough to ``tokens``, and the similarity."""
        if not tokens:
            return None
        candidates = sorted({i for t in self._prefix(tokens) for i in self.postings.get(t, ())})
        for index in candidates:
            other = self.sets[index]
            similarity = len(tokens & other) / len(tokens | other)
            if similarity >= self.threshold:
                return self.labels[index], similarity
        return None

    def add(self, tokens: frozenset[str], label: str) -> None:
        if not tokens:
            return
        for token in self._prefix(tokens):
            self.postings.setdefault(token, []).append(len(self.sets))
        self.sets.append(tokens)
        self.labels.append(label)


# ---------------------------------------------------------------- the filters


def bm25_consistency(ids: list[str], ctx: Context, params: BM25ConsistencyFilter) -> dict[str, str]:
    dropped = {}
    for query_id in ids:
        rank = ctx.ranks[query_id]
        if rank == 0:
            dropped[query_id] = ("bm25_consistency: the query shares no term with its source"
                                 " document (BM25 never retrieves it)")
        elif rank > params.k:
            dropped[query_id] = f"bm25_consistency: source document ranked {rank} > k={params.k}"
    return dropped


def dedup(ids: list[str], ctx: Context, params: DedupFilter) -> dict[str, str]:
    """Copies of the document first (so they never shadow a later query), then duplicates."""
    dropped: dict[str, str] = {}
    tokens = {query_id: words(ctx.weak.queries[query_id]) for query_id in ids}
    for query_id in ids:
        query = tokens[query_id]
        run = longest_shared_run(query, ctx.doc_tokens(ctx.weak.source[query_id]))
        if run >= params.copy_words or (run >= params.copy_min_words
                                        and run >= params.copy_fraction * len(query)):
            dropped[query_id] = (f"dedup: copies {run} consecutive words of its document verbatim"
                                 f" ({run} of its {len(query)} words)")
    remaining = [query_id for query_id in ids if query_id not in dropped]
    counts = Counter(t for query_id in remaining for t in set(tokens[query_id]))
    near = NearDuplicateIndex(params.near_jaccard, counts)
    exact: dict[tuple[str, ...], str] = {}
    for query_id in remaining:
        key = tuple(tokens[query_id])
        if key in exact:
            dropped[query_id] = f"dedup: exact duplicate of {exact[key]} (after normalisation)"
            continue
        token_set = frozenset(key)
        match = near.find(token_set)
        if match is not None:
            dropped[query_id] = (f"dedup: near-duplicate of {match[0]} (token-set Jaccard"
                                 f" {match[1]:.2f} >= {params.near_jaccard})")
            continue
        exact[key] = query_id
        near.add(token_set, query_id)
    return dropped


def length(ids: list[str], ctx: Context, params: LengthFilter) -> dict[str, str]:
    dropped = {}
    for query_id in ids:
        count = n_words(ctx.weak.queries[query_id])
        if count < params.min_words:
            dropped[query_id] = f"length: {count} words < min_words={params.min_words}"
        elif count > params.max_words:
            dropped[query_id] = f"length: {count} words > max_words={params.max_words}"
    return dropped


def _best(ids: list[str], score: dict[str, float], params, what: str) -> dict[str, str]:
    """Keep the best ``params.n`` (or ``params.fraction``) by ``score``; ties go to the earlier
    query."""
    if params.n is not None:
        keep, how = min(params.n, len(ids)), f"n={params.n}"
    else:
        keep, how = max(1, round(params.fraction * len(ids))), f"fraction={params.fraction}"
    order = sorted(range(len(ids)), key=lambda i: (-score[ids[i]], i))
    if keep >= len(ids):
        return {}
    cut = score[ids[order[keep - 1]]]
    return {ids[i]: (f"{what} {score[ids[i]]:.3f} not among the best {keep} of {len(ids)} ({how},"
                     f" cut-off {cut:.3f})") for i in order[keep:]}


def logprob_topn(ids: list[str], ctx: Context, params: LogprobTopNFilter) -> dict[str, str]:
    """Keep the best n (or fraction) by mean log-probability."""
    return _best(ids, {q: logprob_of(ctx.weak, q) for q in ids}, params,
                 "logprob_topn: mean log-probability")


def query_likelihood(ids: list[str], ctx: Context, params: QueryLikelihoodFilter) -> dict[str, str]:
    """Keep the best n (or fraction) by ll_doc - ll_nodoc: what the document adds."""
    gain = {q: logprob_of(ctx.weak, q, "ll_doc") - logprob_of(ctx.weak, q, "ll_nodoc") for q in ids}
    return _best(ids, gain, params, "query_likelihood: log-probability gain from the document")


def logprob_of(weak: WeakSet, query_id: str, key: str = "logprob") -> float:
    value = weak.metadata[query_id].get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        fix = ("re-run sptar generate, or drop logprob_topn from filter.steps" if key == "logprob"
               else "set generate.score_without_doc: true and re-run sptar generate")
        raise input_error(weak.queries_file, f"query {query_id!r} has no numeric"
                          f" metadata '{key}' (got {value!r})", fix=fix)
    return float(value)


def not_labeled(ids: list[str], ctx: Context, params: NotLabeledFilter) -> dict[str, str]:
    """Drop a query that equals a labeled query or comes near one (token-set Jaccard)."""
    labeled = [frozenset(words(text)) for text in ctx.labeled]
    counts = Counter(t for tokens in labeled for t in tokens)
    counts.update(t for query_id in ids for t in set(words(ctx.weak.queries[query_id])))
    index = NearDuplicateIndex(params.near_jaccard, counts)
    for number, tokens in enumerate(labeled):
        index.add(tokens, str(number))
    dropped = {}
    for query_id in ids:
        match = index.find(frozenset(words(ctx.weak.queries[query_id])))
        if match is not None:
            dropped[query_id] = (f"not_labeled: near a labeled query {ctx.labeled[int(match[0])]!r}"
                                 f" (token-set Jaccard {match[1]:.2f} >= {params.near_jaccard})")
    return dropped


def dense_consistency(ids: list[str], ctx: Context, params: DenseConsistencyFilter) -> dict[str, str]:
    dropped = {}
    for query_id in ids:
        rank = ctx.dense_ranks[query_id]
        if rank == 0 or rank > params.k:
            where = "beyond the searched depth" if rank == 0 else f"{rank}"
            dropped[query_id] = f"dense_consistency: source document ranked {where} > k={params.k}"
    return dropped


FILTERS: dict[str, Filter] = {"bm25_consistency": bm25_consistency, "dedup": dedup,
                              "length": length, "logprob_topn": logprob_topn,
                              "not_labeled": not_labeled, "dense_consistency": dense_consistency,
                              "query_likelihood": query_likelihood}


# ---------------------------------------------------------------- applying the steps


@dataclass
class Outcome:
    kept: list[str]
    dropped: dict[str, tuple[str, str]]  # query id -> (filter, reason)
    steps: list[dict[str, Any]]


def apply_steps(cfg: Config, ctx: Context) -> Outcome:
    """Run ``filter.steps`` in order; an error when a step leaves nothing."""
    kept = list(ctx.weak.queries)
    total = len(kept)
    dropped: dict[str, tuple[str, str]] = {}
    steps = []
    for number, step in enumerate(cfg.filter.steps, start=1):
        removed = FILTERS[step.name](kept, ctx, step.params)
        before = len(kept)
        kept = [query_id for query_id in kept if query_id not in removed]
        dropped.update({query_id: (step.name, reason) for query_id, reason in removed.items()})
        steps.append({"step": number, "filter": step.name,
                      "params": step.params.model_dump(mode="json"), "in": before,
                      "kept": len(kept), "share_of_step": share(len(kept), before),
                      "share_of_input": share(len(kept), total)})
        if not kept:
            raise SptarError(f"filter: step {number} '{step.name}' removed all {before} remaining"
                             f" queries of {ctx.weak.folder} (fix: loosen or remove it in"
                             " filter.steps)")
    return Outcome(kept, dropped, steps)


def share(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole else 0.0
