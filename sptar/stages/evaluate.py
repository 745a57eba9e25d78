"""Evaluate stage: retrieve for the validation and test queries with one system and score it.

Systems: ``bm25`` (the configured BM25 backend), ``zero-shot`` (the base encoder untouched), the
trained retrievers ``wo-aug`` / ``inpars`` / ``sptar`` (``train/<system>/model``), and the
query-likelihood rerankers of BM25's top ``rerank.depth``: ``ql-rerank`` (the LLM with the tuned
soft prompt and its chosen examples, ``tune/``) and ``ql-rerank-untuned`` (the plain LLM).
Splits (``evaluate.splits``): ``validation``, the split stage's validation queries
(``split/validation/``), and ``test``, the dataset's ``evaluate.test_split`` qrels. This stage
and the report are the only readers of either.
Reads: ``data/beir/<dataset>/`` (and the trained model for trained systems, the split stage's
validation queries for ``validation``).
Writes to ``data/runs/<experiment>/evaluate/<system>/<split>/``: ``run.trec`` (top-k TREC run),
``metrics.json`` (means, BEIR names), ``per_query.json`` (every metric per query). A split that
does not exist (a local corpus without test examples, ``split.validation: none``) is skipped,
and the manifest's summary says why (``skipped``).
"""

from __future__ import annotations

import logging
from pathlib import Path

from sptar.config import ENCODER_KEYS, VALIDATION, Config
from sptar.errors import SptarError
from sptar.io.atomic import remove_stale_temporaries
from sptar.io.formats import Qrels, Queries, sha256_file
from sptar.io.manifest import MANIFEST, manifests
from sptar.io.paths import Paths
from sptar.outputs.dataset import has_split, load_corpus, load_split_queries
from sptar.outputs.evaluation import write_evaluation
from sptar.outputs.fewshot import load_validation
from sptar.outputs.model import model_dir
from sptar.reporting.metrics import evaluate_run
from sptar.run.runner import PARTIAL
from sptar.systems import RERANKERS, TRAINED

log = logging.getLogger(__name__)

def sections(system: str) -> tuple[str, ...]:
    common = ("dataset.name", "evaluate", "seed")
    if system == "bm25":
        return (*common, "bm25")
    if system in RERANKERS:
        return (*common, "bm25", "rerank", "models.llm", "models.trust_remote_code", "device")
    return (*common, "dense", *ENCODER_KEYS, "models.trust_remote_code", "device")


def output_dir(paths: Paths, system: str) -> Path:
    return paths.stage("evaluate", system)


def upstream(cfg: Config, paths: Paths, system: str) -> list[Path]:
    needed = manifests(paths.beir)
    if VALIDATION in cfg.evaluate.splits:
        needed += manifests(paths.stage("split"))
    if system in TRAINED:
        needed += manifests(paths.stage("train", system))
    if RERANKERS.get(system) == "tuned":
        needed += manifests(paths.stage("tune"))
    return needed


def source_digests(cfg: Config, system: str) -> dict[str, str]:
    from sptar.retrieval.dense import int8_recipe

    return int8_recipe(cfg.dense) if system != "bm25" and system not in RERANKERS else {}


def encoder_for(cfg: Config, paths: Paths, system: str) -> str:
    """The model a dense system retrieves with."""
    return cfg.models.encoder if system == "zero-shot" else str(model_dir(paths, system))


def retrieve(cfg: Config, paths: Paths, system: str, corpus, queries, shard: int = 0,
             num_shards: int = 1, flagged: bool = False):
    """The run of ``system``, or None when this shard only encoded its share of the corpus.

    ``flagged``: the shards came from --shard/--num-shards (independent processes), not from a
    launcher whose processes join one process group.
    """
    if system == "bm25":
        from sptar.retrieval.bm25 import BM25Searcher

        return BM25Searcher(corpus, cfg.bm25).search(queries)
    from sptar.retrieval.corpus_search import dense_retrieve

    extra = ""
    if system in TRAINED:
        # model_fingerprint hashes weight files above 512 MiB by size only, which training
        # does not change: the train manifest (new on every training run) tells runs apart.
        extra = sha256_file(paths.stage("train", system) / MANIFEST)[:16]
    return dense_retrieve(cfg, paths, encoder_for(cfg, paths, system), corpus, queries,
                          fingerprint_extra=extra, shard=shard, num_shards=num_shards,
                          flagged=flagged, what=f"evaluate {system}")


def rerank_by_likelihood(cfg: Config, paths: Paths, system: str, corpus, queries, run):
    """BM25's ``run`` with each query's top ``rerank.depth`` reordered by the LLM's query
    likelihood: with the tuned soft prompt and its examples, or the plain LLM without any."""
    from sptar.io.formats import doc_text
    from sptar.llm.reranking import open_scorer, rerank

    documents = {did: doc_text(corpus[did]) for docs in run.values() for did in docs}
    with open_scorer(cfg, paths, RERANKERS[system] == "tuned") as scorer:
        reranked, counts = rerank(scorer, run, queries, documents, cfg.rerank.depth,
                                  f"{system} reranking")
    log.info("%s: %.2f query-document pairs scored per second", system, counts["pairs_per_s"])
    return reranked, counts


def evaluation_targets(cfg: Config, paths: Paths) -> tuple[dict[str, tuple[Queries, Qrels]],
                                                              dict[str, str]]:
    """``({split: (queries, qrels)}, {split: why it is skipped})`` for ``evaluate.splits``."""
    targets: dict[str, tuple[Queries, Qrels]] = {}
    skipped: dict[str, str] = {}
    for name in cfg.evaluate.splits:
        if name == VALIDATION:
            validation = load_validation(paths)
            if validation is None:
                skipped[name] = "no validation queries (split.validation is none, or none were left)"
            else:
                targets[name] = (validation.queries, validation.qrels)
        elif has_split(paths, cfg.evaluate.test_split):
            targets[name] = load_split_queries(paths, cfg.evaluate.test_split)
        else:
            skipped[name] = f"no {cfg.evaluate.test_split} split: nothing to evaluate"
    return targets, skipped


def run(cfg: Config, paths: Paths, system: str, shard: int | None = None,
        num_shards: int | None = None) -> dict:
    from sptar.run.shards import resolve_shard

    flagged = shard is not None or num_shards is not None
    shard, num_shards = resolve_shard(shard, num_shards)
    targets, skipped = evaluation_targets(cfg, paths)
    for name, reason in skipped.items():
        log.warning("%s: %s: %s", system, name, reason)
    if shard != 0 and (not targets or system == "bm25" or system in RERANKERS):
        return {PARTIAL: f"shard {shard}/{num_shards}: nothing to share "
                         f"({'BM25' if targets else 'no split to evaluate'}); shard 0 does it all"}
    summary: dict = {"system": system, "splits": {}}
    if skipped:
        summary["skipped"] = skipped
    if not targets:
        return summary
    queries: Queries = {}
    for split_queries, _ in targets.values():
        clash = set(queries) & set(split_queries)
        if clash:  # the split stage keeps validation and test apart: a hand-edited folder
            raise SptarError(f"query {sorted(clash)[0]!r} is both a validation and a test query"
                             " (fix: re-run sptar split)")
        queries.update(split_queries)
    corpus = load_corpus(paths)
    first = "bm25" if system in RERANKERS else system
    results = retrieve(cfg, paths, first, corpus, queries, shard, num_shards, flagged)
    if system in RERANKERS:
        results, summary["rerank"] = rerank_by_likelihood(cfg, paths, system, corpus, queries,
                                                          results)
    if results is None:
        from sptar.run.shards import group_rank

        merger = "the last shard to finish (or any later run)" if group_rank() is None else "rank 0"
        return {PARTIAL: f"shard {shard}/{num_shards} encoded its chunks of the corpus; {merger} "
                         "merges them, searches and writes the output"}
    folder = output_dir(paths, system)
    remove_stale_temporaries(folder, recursive=True)  # sharded runs skip the clean-up in execute()
    for name, (split_queries, qrels) in targets.items():
        run_split = {qid: results[qid] for qid in split_queries if qid in results}
        mean, per_query = evaluate_run(qrels, run_split)
        write_evaluation(paths, system, name, run_split, mean, per_query)
        log.info("%s on %s/%s (%d queries): %s", system, cfg.dataset.name, name, len(qrels),
                 ", ".join(f"{k} {mean[k]:.4f}" for k in ("NDCG@10", "Recall@100")))
        summary["splits"][name] = {"queries": len(qrels), "metrics": mean}
    if num_shards > 1:
        summary["shards"] = num_shards
    return summary
