"""Your own corpus: a local collection plus a few labeled examples, as a BEIR dataset.

The data stage calls :func:`build_dataset` when the pipeline's ``dataset.corpus`` is set, and
writes the result to ``data/beir/<dataset.name>/`` like any BEIR dataset, so every later stage
works unchanged:

- the corpus (``dataset.corpus``): JSON Lines (a BEIR ``corpus.jsonl`` with the default fields),
  CSV or TSV with a header naming the id / title / text columns, or a folder of ``.txt`` /
  ``.md`` files (id = path relative to the folder);
- ``dataset.examples``: labeled (query, document) pairs, the document named by ``doc_id`` or by
  its text (``doc_text``) -> ``queries.jsonl`` + ``qrels/train.tsv``;
- ``dataset.test_examples`` (optional, same format) -> ``qrels/test.tsv``. Without it there is
  no test split: the pipeline makes training data (and a retriever, if asked) and
  ``sptar evaluate`` / ``sptar report`` say that there is nothing to evaluate.

A ``doc_text`` is matched to the corpus document whose text (or title + text) is the same after
collapsing whitespace (the first one, in corpus order, if several are); a text that matches no
document is added to the corpus as a new document with id ``example-<hash of the text>``. The same
query text gets the same id (``q1``, ``q2``, ... in order of first appearance, examples first), so
a query that is in both files is judged in the test split and never sampled for training.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sptar.config import Config, CorpusSource
from sptar.errors import SptarError, input_error
from sptar.io.formats import Corpus, Qrels, Queries, read_corpus, sha256_file
from sptar.io.own_readers import LabeledPair, read_corpus_folder, read_corpus_table, read_examples

log = logging.getLogger(__name__)

FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv", ".tsv": "tsv"}


def corpus_format(source: CorpusSource) -> str:
    """``jsonl``, ``csv``, ``tsv`` or ``folder``: as configured, or by the path."""
    if source.format != "auto":
        return source.format
    path = Path(source.path)
    if path.is_dir():
        return "folder"
    if path.suffix.lower() not in FORMATS:
        raise input_error(path, f"cannot tell the corpus format from {path.suffix or 'no suffix'!r}"
                          if path.exists() else "corpus not found",
                          fix="check dataset.corpus.path, or set dataset.corpus.format "
                          "(jsonl, csv, tsv or folder)")
    return FORMATS[path.suffix.lower()]


def read_local_corpus(source: CorpusSource) -> Corpus:
    """The documents of a local corpus, validated (one-line errors naming file and line)."""
    kind = corpus_format(source)
    fields = {"id_field": source.id_field, "title_field": source.title_field,
              "text_field": source.text_field}
    if kind == "folder":
        corpus = read_corpus_folder(source.path, source.extensions)
    elif kind == "jsonl":
        corpus = read_corpus(source.path, **fields)
    else:
        corpus = read_corpus_table(source.path, "," if kind == "csv" else "\t", **fields)
    if not corpus:
        raise input_error(source.path, "no documents", fix="add documents after the header")
    return corpus


def source_files(cfg: Config) -> list[Path]:
    """Every file the local dataset is read from (for the data stage's freshness check)."""
    source = cfg.dataset.corpus
    if source is None:
        return []
    files = [Path(p) for p in (cfg.dataset.examples, cfg.dataset.test_examples) if p]
    root = Path(source.path)
    if root.is_dir():
        wanted = {ext.lower() for ext in source.extensions}
        files += sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in wanted
                        and not any(part.startswith(".") for part in p.relative_to(root).parts))
    else:
        files.append(root)
    return files


def source_digests(cfg: Config) -> dict[str, str]:
    """``{file: content hash}`` of the local dataset's files (none for a BEIR dataset)."""
    return {str(path): sha256_file(path)[:16] for path in source_files(cfg) if path.is_file()}


def _normal(text: str) -> str:
    return " ".join(text.split())


@dataclass
class LocalDataset:
    """What :func:`build_dataset` made: BEIR parts plus how the examples were resolved."""

    corpus: Corpus
    queries: Queries = field(default_factory=dict)
    qrels: dict[str, Qrels] = field(default_factory=dict)
    counts: dict[str, Any] = field(default_factory=dict)


class _Resolver:
    """Turns labeled pairs into (query id, doc id), adding unmatched document texts."""

    def __init__(self, corpus: Corpus):
        self.corpus = corpus
        self.by_text: dict[str, str] = {}
        for doc_id, doc in corpus.items():
            for text in (doc["text"], f"{doc['title']} {doc['text']}"):
                self.by_text.setdefault(_normal(text), doc_id)
        self.query_ids: dict[str, str] = {}
        self.queries: Queries = {}
        self.counts = {"by_id": 0, "by_text": 0, "added_docs": 0}

    def query_id(self, text: str) -> str:
        if text not in self.query_ids:
            qid = f"q{len(self.query_ids) + 1}"
            self.query_ids[text] = qid
            self.queries[qid] = text
        return self.query_ids[text]

    def doc_id(self, path: Path, pair: LabeledPair) -> str:
        if pair.doc_id is not None:
            if pair.doc_id not in self.corpus:
                raise input_error(path, f"unknown document id {pair.doc_id!r}", line=pair.line,
                                  fix="use an id of the corpus, or give the document's text as "
                                  "doc_text")
            self.counts["by_id"] += 1
            return pair.doc_id
        text = _normal(pair.doc_text or "")
        if text in self.by_text:
            self.counts["by_text"] += 1
            return self.by_text[text]
        doc_id = f"example-{hashlib.sha256(text.encode()).hexdigest()[:12]}"
        self.corpus[doc_id] = {"title": "", "text": pair.doc_text or ""}
        self.by_text[text] = doc_id
        self.counts["added_docs"] += 1
        return doc_id

    def qrels(self, path: str | Path) -> Qrels:
        path = Path(path)
        qrels: Qrels = {}
        for pair in read_examples(path):
            qid, did = self.query_id(pair.query), self.doc_id(path, pair)
            if did in qrels.get(qid, {}):
                raise input_error(path, f"repeated pair (query {pair.query!r}, document {did!r})",
                                  line=pair.line, fix="keep one row per (query, document)")
            qrels.setdefault(qid, {})[did] = 1
        return qrels


def build_dataset(cfg: Config) -> LocalDataset:
    """Read and check the local corpus and examples; return them as BEIR parts."""
    assert cfg.dataset.corpus is not None and cfg.dataset.examples
    if cfg.evaluate.test_split == "train":
        raise SptarError("evaluate.test_split is 'train', the split the examples become"
                         " (fix: evaluate on test, with dataset.test_examples)")
    corpus = read_local_corpus(cfg.dataset.corpus)
    read = len(corpus)
    resolver = _Resolver(corpus)
    qrels = {"train": resolver.qrels(cfg.dataset.examples)}
    if cfg.dataset.test_examples:
        qrels[cfg.evaluate.test_split] = resolver.qrels(cfg.dataset.test_examples)
        both = set(qrels["train"]) & set(qrels[cfg.evaluate.test_split])
        if both:
            log.warning("%d quer%s in both %s and %s: judged in the test split, never trained on",
                        len(both), "y is" if len(both) == 1 else "ies are", cfg.dataset.examples,
                        cfg.dataset.test_examples)
    counts = {"corpus_format": corpus_format(cfg.dataset.corpus), "documents_read": read,
              "example_pairs": {"doc_id": resolver.counts["by_id"],
                                "doc_text_matched": resolver.counts["by_text"],
                                "doc_text_added": resolver.counts["added_docs"]}}
    if resolver.counts["added_docs"]:
        log.info("%d example document text(s) matched no corpus document and were added to the"
                 " corpus", resolver.counts["added_docs"])
    return LocalDataset(corpus, resolver.queries, qrels, counts)
