"""Filter stage: keep the generated (query, document) pairs worth training on.

Reads: ``data/runs/<experiment>/generate/<variant>/`` (``queries.jsonl`` with metadata
``{"doc_id", "logprob", "variant"}``, ``qrels/train.tsv``), the corpus in
``data/beir/<dataset>/``, the labeled queries of ``split/`` (``not_labeled``) and the base
encoder's corpus embeddings (``dense_consistency``, through the embedding cache).
Writes to ``data/runs/<experiment>/filter/<variant>/``:

- ``queries.jsonl`` + ``qrels/train.tsv``: the kept pairs, in the generated set's format and
  order; each query's metadata gains ``"bm25_rank"``, the rank of its source document when BM25
  searches the whole corpus with the query (null when it is not within the searched depth);
- ``dropped.jsonl``: one row per dropped pair (``query_id``, ``doc_id``, ``text``, ``filter``,
  ``reason``);
- ``stats.json``: counts and shares after each step, the distribution of the source
  document's BM25 rank, the share kept at k = 10, 30, 70, 100, the median query length.

The steps of ``filter.steps`` run in their config order, each on what the previous one kept:
``bm25_consistency`` (SPTAR), ``dedup``, ``length``, ``logprob_topn`` (InPars v1), ``not_labeled``
(copies of the labeled / example queries) and ``dense_consistency`` (Promptagator's round trip
with the untouched base encoder); see :mod:`sptar.retrieval.weak_filters`. BM25 indexes
the corpus once and ranks every query's source document in one batched call, whatever the steps,
so that the statistics show what each choice of k would keep.
"""

from __future__ import annotations

import logging
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

from sptar.config import (
    ENCODER_KEYS,
    Config,
)
from sptar.io.formats import (
    Corpus,
    write_json,
)
from sptar.io.manifest import manifests
from sptar.io.paths import Paths
from sptar.outputs.dataset import load_corpus
from sptar.outputs.fewshot import load_split
from sptar.outputs.weakset import STATS, WeakSet, read_weak_set, write_weak_set
from sptar.retrieval.bm25 import recorded_rank, search_depth
from sptar.retrieval.weak_filters import Context, Outcome, apply_steps, logprob_of, n_words, share

log = logging.getLogger(__name__)

SHARE_AT_K = (10, 30, 70, 100)
RANK_BUCKETS = ((1, 1), (2, 3), (4, 10), (11, 30), (31, 70), (71, 100))
NOT_FOUND = ">100/not found"


def dense_ranks(cfg: Config, paths: Paths, weak: WeakSet, corpus: Corpus) -> dict[str, int]:
    """The untouched base encoder over the whole corpus: the rank of each query's source document
    within the largest k of the dense_consistency steps (0: not that high)."""
    from sptar.retrieval.corpus_search import dense_retrieve

    depth = max(step.params.k for step in cfg.filter.steps if step.name == "dense_consistency")
    log.info("%s: ranking the source documents of %d queries", cfg.models.encoder, len(weak.queries))
    run = dense_retrieve(cfg, paths, cfg.models.encoder, corpus, weak.queries, top_k=depth,
                         what="filter dense_consistency")
    ranks = {}
    for query_id, scores in run.items():
        order = sorted(scores, key=lambda d: (-scores[d], d))
        source = weak.source[query_id]
        ranks[query_id] = order.index(source) + 1 if source in scores else 0
    return ranks


def source_ranks(cfg: Config, weak: WeakSet, corpus: Corpus) -> dict[str, int]:
    """BM25 over the whole corpus: the exact rank of each query's source document."""
    from sptar.retrieval.bm25 import BM25Searcher

    searcher = BM25Searcher(corpus, cfg.bm25)
    ids = list(weak.queries)
    ranks = searcher.ranks([weak.queries[q] for q in ids], [weak.source[q] for q in ids])
    return dict(zip(ids, (int(r) for r in ranks), strict=True))


# ---------------------------------------------------------------- statistics


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
        "kept_share": share(len(outcome.kept), total),
        "steps": outcome.steps,
        "dropped_by_filter": dict(reasons),
        "bm25": {
            "depth": ctx.depth,
            "rank_definition": "1 + the number of documents BM25 scores strictly higher than the"
                               " source document (whole corpus)",
            "rank_histogram_input": rank_histogram(input_ranks),
            "rank_histogram_kept": rank_histogram(kept_ranks),
            "kept_share_at_k": {str(k): share(sum(0 < r <= k for r in input_ranks), total)
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
        f"{bucket}: {share(count, stats['input']):.1%}" for bucket, count in histogram.items()))
    lines.append("  share with the source doc in BM25 top-k: " + ", ".join(
        f"k={k}: {share:.1%}" for k, share in bm25["kept_share_at_k"].items()))
    words_ = stats["median_query_words"]
    lines.append(f"  median query length: {words_['input']} words (kept: {words_['kept']});"
                 f" kept {stats['kept']} of {stats['input']} ({stats['kept_share']:.1%})")
    log.info("\n".join(lines))


# ---------------------------------------------------------------- stage


def sections(variant: str) -> tuple[str, ...]:
    # models.encoder (and its settings), dense: the base encoder of dense_consistency
    return ("dataset.name", "bm25", "filter", *ENCODER_KEYS, "models.trust_remote_code", "dense",
            "device")


def output_dir(paths: Paths, variant: str) -> Path:
    return paths.stage("filter", variant)


def upstream(cfg: Config, paths: Paths, variant: str) -> list[Path]:
    return manifests(paths.beir, paths.stage("split"), paths.stage("generate", variant))


def step_names(cfg: Config) -> set[str]:
    """The filter steps ``filter.steps`` uses."""
    return {step.name for step in cfg.filter.steps}


def source_digests(cfg: Config, variant: str) -> dict[str, str]:
    from sptar.retrieval.dense import int8_recipe

    return int8_recipe(cfg.dense) if "dense_consistency" in step_names(cfg) else {}


def run(cfg: Config, paths: Paths, variant: str) -> dict:
    corpus = load_corpus(paths)
    weak = read_weak_set(paths.stage("generate", variant), corpus)
    names = step_names(cfg)
    for step, keys in (("logprob_topn", ("logprob",)), ("query_likelihood", ("ll_doc", "ll_nodoc"))):
        if step in names:
            for query_id in weak.queries:  # a missing score fails now, not after the BM25 pass
                for key in keys:
                    logprob_of(weak, query_id, key)
    log.info("BM25: ranking the source documents of %d queries over %d documents",
             len(weak.queries), len(corpus))
    ctx = Context(weak, corpus, source_ranks(cfg, weak, corpus), search_depth(cfg))
    if "not_labeled" in names:
        ctx.labeled = list(load_split(paths).queries.values())
    if "dense_consistency" in names:
        ctx.dense_ranks = dense_ranks(cfg, paths, weak, corpus)
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
