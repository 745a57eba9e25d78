"""Export stage: the filtered synthetic pairs plus the labeled (gold) pairs, as training data.

Reads: ``data/beir/<dataset>/corpus.jsonl``, the labeled part of ``split/`` (the prompt-train and
prompt-eval pairs; ``qrels/judged.tsv`` keeps judged-relevant documents out of the hard
negatives) and ``filter/<variant>/`` (the kept weak pairs and their metadata). The validation and
test splits' queries and qrels are never read.
Writes to ``data/runs/<experiment>/export/<variant>/``:

- ``beir/``: a BEIR folder, ``corpus.jsonl`` (the whole corpus), ``queries.jsonl`` (gold queries
  with metadata ``{"source": "gold"}``, then the weak ones with their metadata and
  ``"source": "weak"``) and ``qrels/train.tsv``;
- ``pairs.jsonl``: one row per (query, positive document): ``anchor`` (the query), ``positive``
  (the document text, title + text), ``negative_1`` ... (``train.hard_negatives`` BM25-mined
  negative texts), then the provenance: ``source`` (``gold`` / ``weak``), ``variant`` (null for
  gold), ``query_id``, ``doc_id`` (the source document), ``negative_1_id`` ..., ``logprob``
  (the generator's mean token log-probability; null for gold) and ``bm25_rank`` (the rank of the
  source document when BM25 searches the whole corpus with the query; null beyond the depth the
  filter records);
- ``pairs.tsv``: the same rows and columns, tab-separated with a header (tabs and line breaks
  inside a text become spaces, null an empty cell);
- ``hf/``: the same rows as a Hugging Face ``datasets.Dataset`` (``save_to_disk``; load with
  ``datasets.load_from_disk``). For sentence-transformers training, keep the text columns:
  ``dataset.select_columns(["anchor", "positive", "negative_1"])``.

The rows are the training set ``sptar train`` builds for the variant (:mod:`sptar.retrieval.trainset`), no
dev set held out: gold rows first (capped by ``train.max_pairs_per_query``; ``export.gold: false``
leaves them out), then the weak rows in the filter's order, each with the same hard negatives
(``train.hard_negatives`` from BM25's top ``train.hard_negative_depth``, never a document judged
relevant to the query).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sptar.config import Config
from sptar.io.atomic import atomic_dir
from sptar.io.formats import Corpus, Qrels, doc_text
from sptar.io.manifest import manifests
from sptar.io.paths import Paths
from sptar.outputs.dataset import load_corpus, write_training_set
from sptar.outputs.export import FILES, beir_dir, write_rows
from sptar.retrieval.trainset import (
    LABELED,
    WEAK,
    TrainingData,
    add_hard_negatives,
    build_training_data,
)

log = logging.getLogger(__name__)

GOLD = "gold"
PROVENANCE = ("source", "variant", "query_id", "doc_id")
SCORES = ("logprob", "bm25_rank")


def sections(variant: str) -> tuple[str, ...]:
    # filter: the depth up to which bm25_rank is recorded; train: the rows and negatives
    return ("dataset.name", "bm25", "filter", "export", "seed", "train.max_pairs_per_query",
            "train.hard_negatives", "train.hard_negative_depth", "train.seed")


def output_dir(paths: Paths, variant: str) -> Path:
    return paths.stage("export", variant)


def upstream(cfg: Config, paths: Paths, variant: str) -> list[Path]:
    return manifests(paths.beir, paths.stage("split"), paths.stage("filter", variant))


def columns(n_negatives: int) -> list[str]:
    """The columns of every exported row, in order."""
    negatives = [f"negative_{k + 1}" for k in range(n_negatives)]
    return ["anchor", "positive", *negatives, *PROVENANCE, *(f"{n}_id" for n in negatives), *SCORES]


def build_rows(cfg: Config, data: TrainingData, variant: str, corpus: Corpus) -> list[dict[str, Any]]:
    """The rows ``sptar train`` trains the variant on (gold then weak; ``data`` built with no dev
    set held out), with provenance, BM25 ranks and the same hard negatives."""
    from sptar.retrieval.bm25 import BM25Searcher, recorded_rank, search_depth

    if not cfg.export.gold:
        data.train = [row for row in data.train if row.source == WEAK]
    searcher = BM25Searcher(corpus, cfg.bm25)
    add_hard_negatives(cfg, data, corpus, searcher)
    depth = search_depth(cfg)
    gold = [row for row in data.train if row.source == LABELED]
    gold_ranks = searcher.ranks([r.query for r in gold], [r.doc_id for r in gold]) if gold else []
    ranks = {(r.query_id, r.doc_id): recorded_rank(int(rank), depth)
             for r, rank in zip(gold, gold_ranks, strict=True)}
    metadata = data.weak.metadata if data.weak else {}
    out = []
    for row in data.train:
        is_gold = row.source == LABELED
        meta = {} if is_gold else metadata[row.query_id]
        record: dict[str, Any] = {
            "anchor": row.query, "positive": doc_text(corpus[row.doc_id]),
            "source": GOLD if is_gold else WEAK,
            "variant": None if is_gold else meta.get("variant", variant),
            "query_id": row.query_id, "doc_id": row.doc_id, "logprob": meta.get("logprob"),
            "bm25_rank": ranks[(row.query_id, row.doc_id)] if is_gold else meta.get("bm25_rank")}
        for k, did in enumerate(row.negatives, start=1):
            record[f"negative_{k}"], record[f"negative_{k}_id"] = doc_text(corpus[did]), did
        out.append({name: record.get(name) for name in columns(cfg.train.hard_negatives)})
    return out


def write_beir(folder: Path, paths: Paths, rows: list[dict[str, Any]], split_qrels: Qrels) -> None:
    """The rows as a BEIR training folder over the whole corpus."""
    queries, metadata, qrels = {}, {}, {}
    for row in rows:
        qid = row["query_id"]
        queries[qid] = row["anchor"]
        if row["source"] == GOLD:
            metadata[qid] = {"source": GOLD}
            qrels.setdefault(qid, {})[row["doc_id"]] = split_qrels[qid][row["doc_id"]]
        else:
            metadata[qid] = {"source": WEAK, "doc_id": row["doc_id"], "variant": row["variant"],
                             "logprob": row["logprob"], "bm25_rank": row["bm25_rank"]}
            qrels.setdefault(qid, {})[row["doc_id"]] = 1
    write_training_set(folder, paths.beir, queries, metadata, qrels)


def run(cfg: Config, paths: Paths, variant: str) -> dict:
    corpus = load_corpus(paths)
    data = build_training_data(cfg, paths, variant, corpus, dev_fraction=0.0)
    rows = build_rows(cfg, data, variant, corpus)
    labeled = {**data.split.prompt_train, **data.split.prompt_eval}
    names = columns(cfg.train.hard_negatives)
    with atomic_dir(output_dir(paths, variant)) as tmp:
        write_beir(beir_dir(tmp), paths, rows, labeled)
        write_rows(tmp, names, rows)
    gold = sum(row["source"] == GOLD for row in rows)
    log.info("export %s: %d gold + %d weak pairs -> %s", variant, gold, len(rows) - gold,
             output_dir(paths, variant))
    return {"variant": variant, "gold_pairs": gold, "weak_pairs": len(rows) - gold,
            "rows": len(rows), "hard_negatives": cfg.train.hard_negatives, "columns": names,
            "files": FILES}
