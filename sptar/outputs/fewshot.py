"""The split stage's output ``split/``: the labeled pairs, their judgements, the unlabeled pool,
and (apart, for ``sptar evaluate`` alone) the validation queries."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sptar.io.formats import (
    Qrels,
    Queries,
    read_ids,
    read_qrels,
    read_queries,
    write_ids,
    write_qrels,
    write_queries,
)
from sptar.io.paths import Paths

PROMPT_TRAIN, PROMPT_EVAL, JUDGED = "prompt_train", "prompt_eval", "judged"
QUERIES, QRELS, POOL = "queries.jsonl", "qrels", "unlabeled_ids.txt"
VALIDATION = "validation"  # the folder of the validation queries


@dataclass
class FewShotSplit:
    """The labeled part of the split (never the validation queries)."""

    queries: Queries
    prompt_train: Qrels
    prompt_eval: Qrels
    unlabeled: list[str]
    judged: Qrels = field(default_factory=dict)  # every judgement of the labeled queries

    def pairs(self, part: str) -> list[tuple[str, str]]:
        """(query id, doc id) pairs of ``prompt_train``, ``prompt_eval`` or ``labeled`` (both)."""
        parts = {PROMPT_TRAIN: [self.prompt_train], PROMPT_EVAL: [self.prompt_eval],
                 "labeled": [self.prompt_train, self.prompt_eval]}[part]
        return [(qid, did) for qrels in parts for qid, docs in qrels.items() for did in docs]


@dataclass
class Validation:
    """The validation queries and their judgements."""

    queries: Queries
    qrels: Qrels


def labeled_files(paths: Paths) -> list[Path]:
    """The files :func:`load_split` reads."""
    folder = paths.stage("split")
    return [folder / QUERIES, *(folder / QRELS / f"{part}.tsv" for part in (PROMPT_TRAIN, PROMPT_EVAL,
                                                                            JUDGED)), folder / POOL]


def pool_file(paths: Paths) -> Path:
    return paths.stage("split") / POOL


def load_split(paths: Paths) -> FewShotSplit:
    folder = paths.stage("split")
    queries = read_queries(folder / QUERIES)
    return FewShotSplit(
        queries=queries,
        prompt_train=read_qrels(folder / QRELS / f"{PROMPT_TRAIN}.tsv", queries=queries),
        prompt_eval=read_qrels(folder / QRELS / f"{PROMPT_EVAL}.tsv", queries=queries),
        unlabeled=read_ids(folder / POOL),
        judged=read_qrels(folder / QRELS / f"{JUDGED}.tsv", queries=queries),
    )


def load_validation(paths: Paths) -> Validation | None:
    """The validation queries (only ``sptar evaluate`` may call this), or None if there are none."""
    folder = paths.stage("split") / VALIDATION
    if not (folder / "qrels.tsv").is_file():
        return None
    queries = read_queries(folder / QUERIES)
    return Validation(queries=queries, qrels=read_qrels(folder / "qrels.tsv", queries=queries))


def write_split(folder: Path, split: FewShotSplit, validation: Validation | None) -> None:
    write_queries(folder / QUERIES, split.queries)
    write_qrels(folder / QRELS / f"{PROMPT_TRAIN}.tsv", split.prompt_train)
    write_qrels(folder / QRELS / f"{PROMPT_EVAL}.tsv", split.prompt_eval)
    write_qrels(folder / QRELS / f"{JUDGED}.tsv", split.judged)
    write_ids(folder / POOL, split.unlabeled)
    if validation is not None:
        write_queries(folder / VALIDATION / QUERIES, validation.queries)
        write_qrels(folder / VALIDATION / "qrels.tsv", validation.qrels)
