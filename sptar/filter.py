"""Filter stage: keep the generated (query, document) pairs worth training on.

Reads: ``data/runs/<experiment>/generate/<variant>/`` (``queries.jsonl`` with metadata
``{"doc_id", "logprob", "variant"}``, ``qrels/train.tsv``) and the corpus in
``data/beir/<dataset>/``.
Writes to ``data/runs/<experiment>/filter/<variant>/``:

- ``queries.jsonl`` + ``qrels/train.tsv``: the kept pairs, in the generated set's format and
  order; each query's metadata gains ``"bm25_rank"``, the rank of its source document when BM25
  searches the whole corpus with the query (null when it is not within the searched depth);
- ``dropped.jsonl``: one row per dropped pair (``query_id``, ``doc_id``, ``text``, ``filter``,
  ``reason``);
- ``stats.json``: counts and shares after each step, the distribution of the source
  document's BM25 rank, the share kept at k = 10, 30, 70, 100, the median query length.

The steps of ``filter.steps`` run in their config order, each on what the previous one kept:
``bm25_consistency`` (SPTAR), ``dedup``, ``length`` and ``logprob_topn`` (InPars v1). BM25 indexes
the corpus once and ranks every query's source document in one batched call, whatever the steps,
so that the statistics show what each choice of k would keep.
"""

from __future__ import annotations

import logging
import math
import statistics
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sptar.bm25 import recorded_rank, search_depth
from sptar.config import (
    BM25ConsistencyFilter,
    Config,
    DedupFilter,
    LengthFilter,
    LogprobTopNFilter,
)
from sptar.errors import SptarError, input_error
from sptar.formats import (
    Corpus,
    doc_text,
    write_json,
)
from sptar.outputs.dataset import load_corpus
from sptar.outputs.weakset import WeakSet, read_weak_set, write_weak_set
from sptar.paths import Paths
from sptar.text import words

log = logging.getLogger(__name__)

STATS = "stats.json"
SHARE_AT_K = (10, 30, 70, 100)
RANK_BUCKETS = ((1, 1), (2, 3), (4, 10), (11, 30), (31, 70), (71, 100))
NOT_FOUND = ">100/not found"


@dataclass
class Context:
    """What the filters look at besides the query ids they get."""

    weak: WeakSet
    corpus: Corpus
    ranks: dict[str, int]  # exact BM25 rank of the source doc; 0 when it shares no term
    depth: int
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


def logprob_topn(ids: list[str], ctx: Context, params: LogprobTopNFilter) -> dict[str, str]:
    """Keep the best n (or fraction) by mean log-probability; ties go to the earlier query."""
    logprob = {query_id: _logprob(ctx.weak, query_id) for query_id in ids}
    if params.n is not None:
        keep, what = min(params.n, len(ids)), f"n={params.n}"
    else:
        keep, what = max(1, round(params.fraction * len(ids))), f"fraction={params.fraction}"
    order = sorted(range(len(ids)), key=lambda i: (-logprob[ids[i]], i))
    if keep >= len(ids):
        return {}
    cut = logprob[ids[order[keep - 1]]]
    return {ids[i]: (f"logprob_topn: mean log-probability {logprob[ids[i]]:.3f} not among the best"
                     f" {keep} of {len(ids)} ({what}, cut-off {cut:.3f})") for i in order[keep:]}


def _logprob(weak: WeakSet, query_id: str) -> float:
    value = weak.metadata[query_id].get("logprob")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise input_error(weak.queries_file, f"query {query_id!r} has no numeric"
                          f" metadata 'logprob' (got {value!r})",
                          fix="re-run sptar generate, or drop logprob_topn from filter.steps")
    return float(value)


FILTERS: dict[str, Filter] = {"bm25_consistency": bm25_consistency, "dedup": dedup,
                              "length": length, "logprob_topn": logprob_topn}


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
                      "kept": len(kept), "share_of_step": _share(len(kept), before),
                      "share_of_input": _share(len(kept), total)})
        if not kept:
            raise SptarError(f"filter: step {number} '{step.name}' removed all {before} remaining"
                             f" queries of {ctx.weak.folder} (fix: loosen or remove it in"
                             " filter.steps)")
    return Outcome(kept, dropped, steps)


def source_ranks(cfg: Config, weak: WeakSet, corpus: Corpus) -> dict[str, int]:
    """BM25 over the whole corpus: the exact rank of each query's source document."""
    from sptar.bm25 import BM25Searcher

    searcher = BM25Searcher(corpus, cfg.bm25)
    ids = list(weak.queries)
    ranks = searcher.ranks([weak.queries[q] for q in ids], [weak.source[q] for q in ids])
    return dict(zip(ids, (int(r) for r in ranks), strict=True))


# ---------------------------------------------------------------- statistics


def _share(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole else 0.0


def rank_histogram(ranks: list[int]) -> dict[str, int]:
    """Counts per bucket of source-document rank (0 or > 100 is 'not found')."""
    histogram = {(f"{lo}" if lo == hi else f"{lo}-{hi}"): 0 for lo, hi in RANK_BUCKETS}
    histogram[NOT_FOUND] = 0
    for rank in ranks:
        bucket = next((f"{lo}" if lo == hi else f"{lo}-{hi}"
                       for lo, hi in RANK_BUCKETS if lo <= rank <= hi), NOT_FOUND)
        histogram[bucket] += 1
    return histogram


def build_stats(variant: str, ctx: Context, outcome: Outcome) -> dict[str, Any]:
    all_ids = list(ctx.weak.queries)
    total = len(all_ids)
    input_ranks = [ctx.ranks[q] for q in all_ids]
    kept_ranks = [ctx.ranks[q] for q in outcome.kept]
    reasons = Counter(name for name, _ in outcome.dropped.values())
    return {
        "variant": variant,
        "input": total,
        "kept": len(outcome.kept),
        "kept_share": _share(len(outcome.kept), total),
        "steps": outcome.steps,
        "dropped_by_filter": dict(reasons),
        "bm25": {
            "depth": ctx.depth,
            "rank_definition": "1 + the number of documents BM25 scores strictly higher than the"
                               " source document (whole corpus)",
            "rank_histogram_input": rank_histogram(input_ranks),
            "rank_histogram_kept": rank_histogram(kept_ranks),
            "kept_share_at_k": {str(k): _share(sum(0 < r <= k for r in input_ranks), total)
                                for k in SHARE_AT_K},
        },
        "median_query_words": {
            "input": float(statistics.median(n_words(ctx.weak.queries[q]) for q in all_ids)),
            "kept": float(statistics.median(n_words(ctx.weak.queries[q]) for q in outcome.kept)),
        },
    }


def log_table(stats: dict[str, Any]) -> None:
    lines = [f"filter {stats['variant']}: {stats['input']} generated pairs",
             f"  {'in':>7}{'kept':>7}{'of step':>9}{'of input':>10}  step"]
    for step in stats["steps"]:
        params = ", ".join(f"{k}={v}" for k, v in step["params"].items() if v is not None)
        lines.append(f"  {step['in']:>7}{step['kept']:>7}{step['share_of_step']:>9.1%}"
                     f"{step['share_of_input']:>10.1%}  {step['step']}. {step['filter']} ({params})")
    bm25 = stats["bm25"]
    histogram = bm25["rank_histogram_input"]
    lines.append("  BM25 rank of the source doc: " + ", ".join(
        f"{bucket}: {_share(count, stats['input']):.1%}" for bucket, count in histogram.items()))
    lines.append("  share with the source doc in BM25 top-k: " + ", ".join(
        f"k={k}: {share:.1%}" for k, share in bm25["kept_share_at_k"].items()))
    words_ = stats["median_query_words"]
    lines.append(f"  median query length: {words_['input']} words (kept: {words_['kept']});"
                 f" kept {stats['kept']} of {stats['input']} ({stats['kept_share']:.1%})")
    log.info("\n".join(lines))


# ---------------------------------------------------------------- stage


def sections(variant: str) -> tuple[str, ...]:
    return ("dataset.name", "bm25", "filter")


def output_dir(paths: Paths, variant: str) -> Path:
    return paths.stage("filter", variant)


def upstream(cfg: Config, paths: Paths, variant: str) -> list[Path]:
    return [paths.beir / "manifest.json", paths.stage("generate", variant) / "manifest.json"]


def run(cfg: Config, paths: Paths, variant: str) -> dict:
    corpus = load_corpus(paths)
    weak = read_weak_set(paths.stage("generate", variant), corpus)
    if any(step.name == "logprob_topn" for step in cfg.filter.steps):
        for query_id in weak.queries:  # a missing score fails now, not after the BM25 pass
            _logprob(weak, query_id)
    log.info("BM25: ranking the source documents of %d queries over %d documents",
             len(weak.queries), len(corpus))
    ctx = Context(weak, corpus, source_ranks(cfg, weak, corpus), search_depth(cfg))
    outcome = apply_steps(cfg, ctx)
    stats = build_stats(variant, ctx, outcome)
    write_outputs(output_dir(paths, variant), ctx, outcome, stats)
    log_table(stats)
    return {"input": stats["input"], "kept": stats["kept"], "kept_share": stats["kept_share"],
            "steps": [{"filter": s["filter"], "kept": s["kept"]} for s in stats["steps"]]}


def write_outputs(folder: Path, ctx: Context, outcome: Outcome, stats: dict[str, Any]) -> None:
    weak = ctx.weak
    kept_queries = {q: weak.queries[q] for q in outcome.kept}
    metadata = {q: {**weak.metadata[q], "bm25_rank": recorded_rank(ctx.ranks[q], ctx.depth)}
                for q in outcome.kept}
    write_weak_set(folder, kept_queries, metadata, weak.source, (
        {"query_id": q, "doc_id": weak.source[q], "text": weak.queries[q], "filter": name,
         "reason": reason}
        for q in weak.queries if q in outcome.dropped
        for name, reason in [outcome.dropped[q]]))
    write_json(folder / STATS, stats)
