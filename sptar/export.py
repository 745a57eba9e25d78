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
  (the document text, title + text), ``negative_1`` ... (``export.hard_negatives`` BM25-mined
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

Gold rows come first (split order), then the weak rows in the filter's order. Hard negatives are
drawn (seeded) from BM25's top ``export.hard_negative_depth`` documents for the query, never a
document judged relevant to it (as ``sptar train`` mines them).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from sptar.atomic import atomic_dir
from sptar.config import Config
from sptar.errors import SptarError
from sptar.formats import (
    Corpus,
    doc_text,
    read_corpus,
    write_jsonl,
    write_qrels,
    write_queries,
    write_table,
)
from sptar.paths import Paths
from sptar.split import FewShotSplit, load_split
from sptar.train import LABELED, WEAK, Example, judged_relevant, mine_hard_negatives

log = logging.getLogger(__name__)

GOLD = "gold"
PROVENANCE = ("source", "variant", "query_id", "doc_id")
SCORES = ("logprob", "bm25_rank")


def sections(variant: str) -> tuple[str, ...]:
    # filter: the depth up to which bm25_rank is recorded
    return ("dataset.name", "bm25", "filter", "export", "seed")


def output_dir(paths: Paths, variant: str) -> Path:
    return paths.stage("export", variant)


def upstream(cfg: Config, paths: Paths, variant: str) -> list[Path]:
    return [paths.beir / "manifest.json", paths.stage("split") / "manifest.json",
            paths.stage("filter", variant) / "manifest.json"]


def columns(n_negatives: int) -> list[str]:
    """The columns of every exported row, in order."""
    negatives = [f"negative_{k + 1}" for k in range(n_negatives)]
    return ["anchor", "positive", *negatives, *PROVENANCE, *(f"{n}_id" for n in negatives), *SCORES]


def build_rows(cfg: Config, paths: Paths, variant: str, corpus: Corpus,
               split: FewShotSplit) -> list[dict[str, Any]]:
    """Gold then weak rows, with provenance, BM25 ranks and (optionally) hard negatives."""
    from sptar.bm25 import BM25Searcher
    from sptar.filter import load_weak_set, recorded_rank, search_depth

    weak = load_weak_set(paths.stage("filter", variant), corpus)
    clash = set(weak.queries) & set(split.queries)
    if clash:
        raise SptarError(f"{paths.stage('filter', variant) / 'queries.jsonl'}: weak query id "
                         f"{sorted(clash)[0]!r} is also a labeled query id (fix: re-run sptar generate)")
    rows = [Example(qid, split.queries[qid], did, LABELED)
            for qid, did in (split.pairs("labeled") if cfg.export.gold else [])]
    rows += [Example(qid, text, weak.source[qid], WEAK) for qid, text in weak.queries.items()]
    searcher = BM25Searcher(corpus, cfg.bm25)
    depth = search_depth(cfg)
    gold = [row for row in rows if row.source == LABELED]
    gold_ranks = searcher.ranks([r.query for r in gold], [r.doc_id for r in gold]) if gold else []
    ranks = {(r.query_id, r.doc_id): recorded_rank(int(rank), depth)
             for r, rank in zip(gold, gold_ranks, strict=True)}
    n = cfg.export.hard_negatives
    if n:
        judged = judged_relevant(split)
        for row in rows:
            judged.setdefault(row.query_id, set()).add(row.doc_id)
        mine_hard_negatives(rows, corpus, searcher, judged, n, cfg.export.hard_negative_depth,
                            cfg.seed)
    out = []
    for row in rows:
        is_gold = row.source == LABELED
        meta = {} if is_gold else weak.metadata[row.query_id]
        record: dict[str, Any] = {
            "anchor": row.query, "positive": doc_text(corpus[row.doc_id]),
            "source": GOLD if is_gold else WEAK,
            "variant": None if is_gold else meta.get("variant", variant),
            "query_id": row.query_id, "doc_id": row.doc_id, "logprob": meta.get("logprob"),
            "bm25_rank": ranks[(row.query_id, row.doc_id)] if is_gold else meta.get("bm25_rank")}
        for k, did in enumerate(row.negatives, start=1):
            record[f"negative_{k}"], record[f"negative_{k}_id"] = doc_text(corpus[did]), did
        out.append({name: record.get(name) for name in columns(n)})
    return out


def write_beir(folder: Path, paths: Paths, rows: list[dict[str, Any]], split_qrels) -> None:
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
    (folder / "qrels").mkdir(parents=True)
    shutil.copyfile(paths.beir / "corpus.jsonl", folder / "corpus.jsonl")
    write_queries(folder / "queries.jsonl", queries, metadata)
    write_qrels(folder / "qrels" / "train.tsv", qrels)


def run(cfg: Config, paths: Paths, variant: str) -> dict:
    from datasets import Dataset

    corpus = read_corpus(paths.beir / "corpus.jsonl")
    split = load_split(paths)
    rows = build_rows(cfg, paths, variant, corpus, split)
    labeled = {**split.prompt_train, **split.prompt_eval}
    names = columns(cfg.export.hard_negatives)
    with atomic_dir(output_dir(paths, variant)) as tmp:
        write_beir(tmp / "beir", paths, rows, labeled)
        write_jsonl(tmp / "pairs.jsonl", rows)
        write_table(tmp / "pairs.tsv", names, rows)
        Dataset.from_list(rows).save_to_disk(str(tmp / "hf"))
    gold = sum(row["source"] == GOLD for row in rows)
    log.info("export %s: %d gold + %d weak pairs -> %s", variant, gold, len(rows) - gold,
             output_dir(paths, variant))
    return {"variant": variant, "gold_pairs": gold, "weak_pairs": len(rows) - gold,
            "rows": len(rows), "hard_negatives": cfg.export.hard_negatives, "columns": names,
            "files": ["beir/", "pairs.jsonl", "pairs.tsv", "hf/"]}
