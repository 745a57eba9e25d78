"""Split stage: SPTAR's few-shot split of the labeled data, the validation queries, and the
unlabeled pool.

Reads: ``data/beir/<dataset>/``.
Writes to ``data/runs/<experiment>/split/``:

- ``queries.jsonl``: the sampled labeled queries (prompt-train and prompt-eval);
- ``qrels/prompt_train.tsv``, ``qrels/prompt_eval.tsv``: their relevant documents (over the
  original corpus); ``qrels/judged.tsv``: every judgement of those queries in the dataset (what
  must never be a negative for them);
- ``unlabeled_ids.txt``: the unlabeled pool, documents that appear in no qrels split at all
  (``split.pool: unjudged``, SPTAR's choice) or, for corpora where every document is judged
  somewhere, documents judged neither in the test split, nor in the validation split, nor by the
  sampled labeled pairs (``split.pool: not-in-eval``), or every document but those of the sampled
  labeled pairs (``split.pool: corpus``: as GPL, InPars and Promptagator, which use no labels to
  choose what to generate for); capped at ``split.max_unlabeled_docs`` (sampled by seed), in
  corpus order;
- ``validation/queries.jsonl`` and ``validation/qrels.tsv``: the validation queries
  (``split.validation``), which every choice is made on. They are held out exactly like the test
  split: only ``sptar evaluate`` reads them (no other stage opens ``validation/``).

Labeled queries are sampled from the train qrels (dev when there is no train split). The leak
guard keeps three kinds of query apart, by id and by normalised text (:func:`sptar.text.normalized`;
some BEIR train queries repeat a test query's text): a query judged in the test split, or whose
text equals a test query's, is never a labeled or validation query; a query of the validation
split, or whose text equals one, is never labeled; with ``split.validation: rest`` a query whose
text equals a sampled labeled query's is not a validation query. The manifest counts what the
guard set aside, and why. A dataset may lack the test split (a local corpus without test
examples). With ``split.shrink_to_fit`` and fewer usable queries than ``n_prompt_train +
n_prompt_eval`` (a small examples file), a third of them (at least one) go to prompt-eval and the
rest (at most ``n_prompt_train``) to prompt-train.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from sptar.config import Config
from sptar.errors import SptarError
from sptar.io.formats import Qrels, Queries
from sptar.io.manifest import manifests
from sptar.io.paths import Paths
from sptar.outputs.dataset import BeirDataset, load_beir
from sptar.outputs.fewshot import PROMPT_EVAL, PROMPT_TRAIN, FewShotSplit, Validation, write_split
from sptar.text import normalized

log = logging.getLogger(__name__)

NONE, REST = "none", "rest"


@dataclass
class SplitResult:
    split: FewShotSplit
    validation: Validation | None
    validation_source: str  # "none", "rest of <source split>" or a qrels split name
    set_aside: Counter = field(default_factory=Counter)  # why the leak guard set queries aside


def source_split_name(cfg: Config, dataset: BeirDataset) -> str:
    if cfg.split.source_split != "auto":
        return cfg.split.source_split
    for name in ("train", "dev"):
        if name in dataset.qrels and name != cfg.evaluate.test_split:
            return name
    raise SptarError(f"dataset {cfg.dataset.name!r} has no train or dev qrels to sample labeled pairs"
                     " from (fix: set split.source_split to an existing split)")


def validation_source(cfg: Config, dataset: BeirDataset, source: str) -> str:
    """``none``, ``rest`` or the name of the qrels split that holds the validation queries."""
    choice = cfg.split.validation
    held_out = cfg.evaluate.test_split
    if choice == "auto":
        return "dev" if "dev" in dataset.qrels and "dev" not in (source, held_out) else REST
    if choice in (NONE, REST):
        return choice
    if choice in (source, held_out):
        raise SptarError(f"split.validation is {choice!r}, which is also the "
                         f"{'source' if choice == source else 'test'} split (fix: use rest, none,"
                         " or another qrels split)")
    dataset.split(choice)  # a one-line error when the dataset has no such split
    return choice


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


class LeakGuard:
    """Held-out query ids and texts; :meth:`admits` says whether a query may join another part."""

    def __init__(self, queries: Queries) -> None:
        self.queries = queries
        self.ids: dict[str, str] = {}  # query id -> the held-out part it belongs to
        self.texts: dict[str, str] = {}  # normalised text -> that part
        self.set_aside: Counter = Counter()

    def hold(self, part: str, query_ids) -> None:
        for qid in query_ids:
            self.ids.setdefault(qid, part)
            self.texts.setdefault(normalized(self.queries[qid]), part)

    def admits(self, part: str, qid: str) -> bool:
        held = self.ids.get(qid)
        if held is None:
            text_of = self.texts.get(normalized(self.queries[qid]))
            if text_of is None:
                return True
            self.set_aside[f"{part}: text of a {text_of} query"] += 1
            return False
        self.set_aside[f"{part}: judged in the {held} split"] += 1
        return False


def sample_split(cfg: Config, dataset: BeirDataset) -> SplitResult:
    source = source_split_name(cfg, dataset)
    test_name = cfg.evaluate.test_split
    if source == test_name:
        raise SptarError(f"split.source_split is {source!r}, the test split"
                         " (fix: sample labeled pairs from train or dev, never from test)")
    qrels = dataset.split(source)
    test = dataset.qrels.get(test_name, {})  # a local corpus may have no test split
    guard = LeakGuard(dataset.queries)
    guard.hold("test", test)
    where = validation_source(cfg, dataset, source)
    validation: Qrels = {}
    if where not in (NONE, REST):
        validation = {qid: docs for qid, docs in dataset.split(where).items()
                      if guard.admits("validation", qid)}
        guard.hold("validation", validation)

    positive = {qid: {did: score for did, score in docs.items() if score >= cfg.split.min_relevance}
                for qid, docs in qrels.items()}
    candidates = [qid for qid in sorted(positive) if positive[qid] and guard.admits("labeled", qid)]
    n_train, n_eval = split_sizes(cfg, len(candidates), source)
    rng = random.Random(cfg.seed)
    chosen = rng.sample(candidates, n_train + n_eval)
    train_ids, eval_ids = chosen[:n_train], chosen[n_train:]
    if where == REST:
        guard.hold("labeled", chosen)
        taken = set(chosen)
        validation = {qid: qrels[qid] for qid in candidates
                      if qid not in taken and guard.admits("validation", qid)}
        if not validation and cfg.split.validation == REST:
            raise SptarError(f"split.validation is rest, but every usable {source!r} query is a"
                             " labeled one (fix: lower split.n_prompt_train / n_prompt_eval, or set"
                             " split.validation: none)")
    validation = cap_validation(cfg, validation)

    cap_pairs = cfg.split.max_pairs_per_query
    if cap_pairs is not None:
        pair_rng = random.Random(cfg.seed + 2)
        for qid in chosen:
            if len(positive[qid]) > cap_pairs:
                keep = set(pair_rng.sample(sorted(positive[qid]), cap_pairs))
                positive[qid] = {did: s for did, s in positive[qid].items() if did in keep}
    pool = unlabeled_pool(cfg, dataset, [test, validation, {qid: positive[qid] for qid in chosen}])
    for reason, count in sorted(guard.set_aside.items()):
        log.info("leak guard: %d quer%s set aside (%s)", count, "y" if count == 1 else "ies", reason)
    return SplitResult(
        split=FewShotSplit(
            queries={qid: dataset.queries[qid] for qid in chosen},
            prompt_train={qid: positive[qid] for qid in train_ids},
            prompt_eval={qid: positive[qid] for qid in eval_ids},
            unlabeled=pool,
            judged=judgements(dataset, chosen),
        ),
        validation=Validation({qid: dataset.queries[qid] for qid in validation}, validation)
        if validation else None,
        validation_source=NONE if not validation else f"rest of {source}" if where == REST else where,
        set_aside=guard.set_aside,
    )


def cap_validation(cfg: Config, validation: Qrels) -> Qrels:
    cap = cfg.split.max_validation_queries
    if cap is None or len(validation) <= cap:
        return validation
    keep = set(random.Random(f"{cfg.seed}-validation").sample(sorted(validation), cap))
    return {qid: docs for qid, docs in validation.items() if qid in keep}


def judgements(dataset: BeirDataset, query_ids: list[str]) -> Qrels:
    """Every judgement of the given queries, in every qrels split of the dataset."""
    wanted = set(query_ids)
    out: Qrels = {}
    for name in sorted(dataset.qrels):
        for qid, docs in dataset.qrels[name].items():
            if qid in wanted:
                out.setdefault(qid, {}).update(docs)
    return out


def unlabeled_pool(cfg: Config, dataset: BeirDataset, held: list[Qrels]) -> list[str]:
    """The unlabeled documents: judged in no split (``unjudged``), by none of ``held`` (the
    test, validation and sampled labeled judgements: ``not-in-eval``), or not by the labeled
    pairs (``corpus``: the last of ``held``); capped by seed."""
    excluded = {"unjudged": dataset.qrels.values(), "not-in-eval": held, "corpus": held[-1:]}[
        cfg.split.pool]
    judged = {did for qrels in excluded for docs in qrels.values() for did in docs}
    pool = [did for did in dataset.corpus if did not in judged]
    cap = cfg.split.max_unlabeled_docs
    if cap is not None and cap < len(pool):
        keep = set(random.Random(cfg.seed + 1).sample(pool, cap))
        pool = [did for did in pool if did in keep]
    if not pool:
        raise SptarError(f"dataset {cfg.dataset.name!r}: every document is judged in some qrels split,"
                         " so the unlabeled pool is empty (fix: set split.pool: not-in-eval)")
    return pool


# ---------------------------------------------------------------- stage


def sections() -> tuple[str, ...]:
    return ("dataset.name", "split", "seed", "evaluate.test_split")


def output_dir(paths: Paths) -> Path:
    return paths.stage("split")


def upstream(cfg: Config, paths: Paths) -> list[Path]:
    return manifests(paths.beir)


def run(cfg: Config, paths: Paths) -> dict:
    result = sample_split(cfg, load_beir(paths.beir))
    write_split(output_dir(paths), result.split, result.validation)
    split, validation = result.split, result.validation
    return {
        "prompt_train_queries": len(split.prompt_train),
        "prompt_train_pairs": len(split.pairs(PROMPT_TRAIN)),
        "prompt_eval_queries": len(split.prompt_eval),
        "prompt_eval_pairs": len(split.pairs(PROMPT_EVAL)),
        "unlabeled_docs": len(split.unlabeled),
        "validation_source": result.validation_source,
        "validation_queries": len(validation.qrels) if validation else 0,
        "validation_pairs": sum(len(d) for d in validation.qrels.values()) if validation else 0,
        "set_aside": dict(sorted(result.set_aside.items())),
    }
