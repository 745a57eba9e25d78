"""A weak set, as ``generate/<variant>/`` writes it and ``filter/<variant>/`` keeps it: generated
queries (BEIR ``queries.jsonl`` with metadata), each with exactly one source document
(``qrels/train.tsv``), the dropped ones (``dropped.jsonl``) and, after the filter, its
counts per step (``stats.json``)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sptar.errors import input_error
from sptar.io.formats import (
    Corpus,
    read_qrels,
    read_queries,
    write_jsonl,
    write_qrels,
    write_queries,
)

log = logging.getLogger(__name__)

QUERIES, QRELS, DROPPED = "queries.jsonl", "qrels/train.tsv", "dropped.jsonl"
STATS = "stats.json"  # the filter's counts after each step


@dataclass
class WeakSet:
    """Query texts and metadata in file order, and each query's source document."""

    queries: dict[str, str]
    metadata: dict[str, dict[str, Any]]
    source: dict[str, str]
    folder: Path = Path(".")

    @property
    def queries_file(self) -> Path:
        return self.folder / QUERIES


def weak_set_files(folder: Path) -> list[Path]:
    """The files :func:`read_weak_set` reads."""
    return [folder / QUERIES, folder / QRELS]


def read_weak_set(folder: Path, corpus: Corpus | None = None) -> WeakSet:
    """Read a weak set and check that every query has exactly one source document (in
    ``corpus``, when given); an empty set (a filter that kept nothing) reads as empty."""
    queries_path, qrels_path = folder / QUERIES, folder / QRELS
    if queries_path.is_file() and not queries_path.read_text(encoding="utf-8").strip():
        log.warning("%s is empty: the set holds no weak pairs", queries_path)
        return WeakSet({}, {}, {}, folder)
    queries, metadata = read_queries(queries_path, with_metadata=True)
    qrels = read_qrels(qrels_path, queries=queries, corpus=corpus)
    source: dict[str, str] = {}
    for query_id in queries:
        docs = [did for did, score in qrels.get(query_id, {}).items() if score > 0]
        if len(docs) != 1:
            raise input_error(qrels_path, f"query {query_id!r} has {len(docs)} source documents,"
                              " expected exactly 1", fix="give each generated query one qrels row")
        named = metadata[query_id].get("doc_id")
        if named is not None and str(named) != docs[0]:
            raise input_error(queries_path, f"query {query_id!r}: metadata doc_id {named!r} differs"
                              f" from its qrels document {docs[0]!r}", fix="re-run sptar generate")
        source[query_id] = docs[0]
    return WeakSet(queries, metadata, source, folder)


def write_weak_set(folder: Path, queries: Mapping[str, str], metadata: Mapping[str, Mapping[str, Any]],
                   source: Mapping[str, str], dropped: Iterable[Mapping[str, Any]]) -> None:
    """``queries.jsonl`` (in the given order), ``qrels/train.tsv`` (each query -> its source
    document) and ``dropped.jsonl``."""
    write_queries(folder / QUERIES, queries, metadata)
    write_qrels(folder / QRELS, {qid: {source[qid]: 1} for qid in queries})
    write_jsonl(folder / DROPPED, dropped)


def count_pairs(folder: Path) -> dict[str, int] | None:
    """Queries and (query, doc) pairs of a finished weak set folder, or None if there is none."""
    if not (folder / "manifest.json").is_file() or not (folder / QRELS).is_file():
        return None
    queries_path = folder / QUERIES
    has_queries = queries_path.is_file() and queries_path.stat().st_size > 0
    return {"queries": len(read_queries(queries_path)) if has_queries else 0,
            "pairs": sum(len(docs) for docs in read_qrels(folder / QRELS).values())}
