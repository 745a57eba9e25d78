"""Split stage: SPTAR's few-shot split of the labeled data, and the unlabeled pool.

Reads: ``data/beir/<dataset>/``.
Writes to ``data/runs/<experiment>/split/``:

- ``queries.jsonl``: the sampled labeled queries (prompt-train and prompt-eval);
- ``qrels/prompt_train.tsv``, ``qrels/prompt_eval.tsv``: their relevant documents (over the
  original corpus);
- ``unlabeled_ids.txt``: the unlabeled pool, documents that appear in no qrels split at all
  (``split.pool: unjudged``, SPTAR's choice) or, for corpora where every document is judged
  somewhere, documents judged neither in the evaluation split nor in the sampled labeled pairs
  (``split.pool: not-in-eval``); capped at ``split.max_unlabeled_docs`` (sampled by seed), in
  corpus order.

Queries are sampled from the train qrels (dev when there is no train split); queries that are
also judged in the evaluation split are never sampled, so the test split never reaches training.
A dataset may lack the evaluation split (a local corpus without test examples). With
``split.shrink_to_fit`` and fewer usable queries than ``n_prompt_train + n_prompt_eval`` (a small
examples file), a third of them (at least one) go to prompt-eval and the rest (at most
``n_prompt_train``) to prompt-train.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path

from sptar.config import Config
from sptar.data import BeirDataset, load_beir
from sptar.errors import SptarError
from sptar.formats import (
    Qrels,
    Queries,
    read_ids,
    read_qrels,
    read_queries,
    write_ids,
    write_qrels,
    write_queries,
)
from sptar.paths import Paths

log = logging.getLogger(__name__)

PROMPT_TRAIN, PROMPT_EVAL = "prompt_train", "prompt_eval"


@dataclass
class FewShotSplit:
    """What the split stage wrote, loaded back."""

    queries: Queries
    prompt_train: Qrels
    prompt_eval: Qrels
    unlabeled: list[str]

    def pairs(self, part: str) -> list[tuple[str, str]]:
        """(query id, doc id) pairs of ``prompt_train``, ``prompt_eval`` or ``labeled`` (both)."""
        parts = {PROMPT_TRAIN: [self.prompt_train], PROMPT_EVAL: [self.prompt_eval],
                 "labeled": [self.prompt_train, self.prompt_eval]}[part]
        return [(qid, did) for qrels in parts for qid, docs in qrels.items() for did in docs]


def load_split(paths: Paths) -> FewShotSplit:
    folder = paths.stage("split")
    queries = read_queries(folder / "queries.jsonl")
    return FewShotSplit(
        queries=queries,
        prompt_train=read_qrels(folder / "qrels" / f"{PROMPT_TRAIN}.tsv", queries=queries),
        prompt_eval=read_qrels(folder / "qrels" / f"{PROMPT_EVAL}.tsv", queries=queries),
        unlabeled=read_ids(folder / "unlabeled_ids.txt"),
    )


def source_split_name(cfg: Config, dataset: BeirDataset) -> str:
    if cfg.split.source_split != "auto":
        return cfg.split.source_split
    for name in ("train", "dev"):
        if name in dataset.qrels and name != cfg.evaluate.split:
            return name
    raise SptarError(f"dataset {cfg.dataset.name!r} has no train or dev qrels to sample labeled pairs"
                     " from (fix: set split.source_split to an existing split)")


def split_sizes(cfg: Config, available: int, source: str) -> tuple[int, int]:
    """(prompt-train, prompt-eval) query counts: as configured, or with ``split.shrink_to_fit``
    and fewer queries, a third (at least one) for prompt-eval and the rest (at most
    ``n_prompt_train``) for prompt-train."""
    n_train, n_eval = cfg.split.n_prompt_train, cfg.split.n_prompt_eval
    if available >= n_train + n_eval:
        return n_train, n_eval
    if not cfg.split.shrink_to_fit:
        raise SptarError(f"split.n_prompt_train + split.n_prompt_eval = {n_train + n_eval}, but the"
                         f" {source!r} split has only {available} usable labeled queries"
                         " (fix: lower them, or set split.shrink_to_fit: true)")
    if available < 2:
        raise SptarError(f"the {source!r} split has {available} usable labeled quer"
                         f"{'y' if available == 1 else 'ies'}; the few-shot split needs at least 2"
                         " (one to tune the prompt on, one to evaluate it) (fix: add examples)")
    n_train = min(n_train, available - max(1, available // 3))
    n_eval = min(n_eval, available - n_train)
    log.warning("only %d usable labeled queries in %r: %d for prompt-train, %d for prompt-eval"
                " (split.shrink_to_fit)", available, source, n_train, n_eval)
    return n_train, n_eval


def sample_split(cfg: Config, dataset: BeirDataset) -> FewShotSplit:
    source = source_split_name(cfg, dataset)
    if source == cfg.evaluate.split:
        raise SptarError(f"split.source_split is {source!r}, the evaluation split"
                         " (fix: sample labeled pairs from train or dev, never from test)")
    qrels = dataset.split(source)
    evaluation = dataset.qrels.get(cfg.evaluate.split, {})  # a local corpus may have no test split
    positive = {qid: {did: score for did, score in docs.items() if score >= cfg.split.min_relevance}
                for qid, docs in qrels.items() if qid not in evaluation}
    candidates = sorted(qid for qid, docs in positive.items() if docs)
    n_train, n_eval = split_sizes(cfg, len(candidates), source)
    rng = random.Random(cfg.seed)
    chosen = rng.sample(candidates, n_train + n_eval)
    train_ids, eval_ids = chosen[:n_train], chosen[n_train:]

    cap_pairs = cfg.split.max_pairs_per_query
    if cap_pairs is not None:
        pair_rng = random.Random(cfg.seed + 2)
        for qid in chosen:
            if len(positive[qid]) > cap_pairs:
                keep = set(pair_rng.sample(sorted(positive[qid]), cap_pairs))
                positive[qid] = {did: s for did, s in positive[qid].items() if did in keep}
    if cfg.split.pool == "unjudged":
        excluded = dataset.qrels.values()
    else:
        chosen_qrels = {qid: positive[qid] for qid in chosen}
        excluded = [evaluation, chosen_qrels]
    judged = {did for qrels in excluded for docs in qrels.values() for did in docs}
    pool = [did for did in dataset.corpus if did not in judged]
    cap = cfg.split.max_unlabeled_docs
    if cap is not None and cap < len(pool):
        keep = set(random.Random(cfg.seed + 1).sample(pool, cap))
        pool = [did for did in pool if did in keep]
    if not pool:
        raise SptarError(f"dataset {cfg.dataset.name!r}: every document is judged in some qrels split,"
                         " so the unlabeled pool is empty (fix: set split.pool: not-in-eval)")
    return FewShotSplit(
        queries={qid: dataset.queries[qid] for qid in chosen},
        prompt_train={qid: positive[qid] for qid in train_ids},
        prompt_eval={qid: positive[qid] for qid in eval_ids},
        unlabeled=pool,
    )


# ---------------------------------------------------------------- stage


def sections() -> tuple[str, ...]:
    return ("dataset.name", "split", "seed", "evaluate.split")


def output_dir(paths: Paths) -> Path:
    return paths.stage("split")


def upstream(cfg: Config, paths: Paths) -> list[Path]:
    return [paths.beir / "manifest.json"]


def run(cfg: Config, paths: Paths) -> dict:
    split = sample_split(cfg, load_beir(paths.beir))
    folder = output_dir(paths)
    write_queries(folder / "queries.jsonl", split.queries)
    write_qrels(folder / "qrels" / f"{PROMPT_TRAIN}.tsv", split.prompt_train)
    write_qrels(folder / "qrels" / f"{PROMPT_EVAL}.tsv", split.prompt_eval)
    write_ids(folder / "unlabeled_ids.txt", split.unlabeled)
    return {
        "prompt_train_queries": len(split.prompt_train),
        "prompt_train_pairs": len(split.pairs(PROMPT_TRAIN)),
        "prompt_eval_queries": len(split.prompt_eval),
        "prompt_eval_pairs": len(split.pairs(PROMPT_EVAL)),
        "unlabeled_docs": len(split.unlabeled),
    }
