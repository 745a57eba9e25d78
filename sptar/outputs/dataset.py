"""The validated BEIR dataset folder ``data/beir/<name>/``: corpus, queries, qrels per split."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from sptar.errors import SptarError, input_error
from sptar.io.formats import (
    Corpus,
    Qrels,
    Queries,
    read_corpus,
    read_qrels,
    read_queries,
    write_corpus,
    write_qrels,
    write_queries,
)
from sptar.io.paths import Paths

CORPUS, QUERIES, QRELS = "corpus.jsonl", "queries.jsonl", "qrels"


@dataclass
class BeirDataset:
    """A loaded BEIR dataset: corpus, queries and the qrels of each split."""

    corpus: Corpus
    queries: Queries
    qrels: dict[str, Qrels] = field(default_factory=dict)
    folder: Path = Path(".")

    def split(self, name: str) -> Qrels:
        if name not in self.qrels:
            raise _missing_split(self.folder, name, sorted(self.qrels))
        return self.qrels[name]


def corpus_file(folder: Path) -> Path:
    return folder / CORPUS


def qrels_file(folder: Path, split: str) -> Path:
    return folder / QRELS / f"{split}.tsv"


def dataset_files(folder: Path, splits) -> list[Path]:
    return [folder / CORPUS, folder / QUERIES, *(qrels_file(folder, s) for s in splits)]


def _missing_split(folder: Path, name: str, available: list[str]) -> SptarError:
    return input_error(qrels_file(folder, name), f"split {name!r} does not exist "
                       f"(has: {', '.join(available) or 'none'})", fix="name an existing split")


def load_beir(folder: str | Path, splits: list[str] | None = None) -> BeirDataset:
    """Read and cross-check a BEIR folder; ``splits=None`` loads every ``qrels/*.tsv``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SptarError(f"{folder}: dataset folder not found (fix: run `sptar data` first)")
    qrels_dir = folder / QRELS
    available = sorted(p.stem for p in qrels_dir.glob("*.tsv")) if qrels_dir.is_dir() else []
    if not available:
        raise input_error(qrels_dir, "no qrels/<split>.tsv files", fix="add at least one qrels split")
    corpus = read_corpus(folder / CORPUS)
    queries = read_queries(folder / QUERIES)
    dataset = BeirDataset(corpus, queries, folder=folder)
    for name in splits if splits is not None else available:
        if name not in available:
            raise _missing_split(folder, name, available)
        dataset.qrels[name] = read_qrels(qrels_file(folder, name), queries=queries, corpus=corpus)
    return dataset


def load_corpus(paths: Paths) -> Corpus:
    """The experiment's corpus (what every stage after ``data`` may read of the dataset)."""
    return read_corpus(paths.beir / CORPUS)


def has_split(paths: Paths, split: str) -> bool:
    return qrels_file(paths.beir, split).is_file()


def load_split_queries(paths: Paths, split: str) -> tuple[Queries, Qrels]:
    """``(queries, qrels)`` of one qrels split (the test split: for ``sptar evaluate`` only)."""
    queries = read_queries(paths.beir / QUERIES)
    qrels = read_qrels(qrels_file(paths.beir, split), queries=queries)
    return {qid: queries[qid] for qid in qrels}, qrels


def copy_dataset(source: Path, target: Path, splits) -> None:
    """Copy a validated BEIR folder's files (into an ``atomic_dir`` temporary ``target``)."""
    (target / QRELS).mkdir()
    for name in (CORPUS, QUERIES):
        shutil.copyfile(source / name, target / name)
    for split in splits:
        shutil.copyfile(qrels_file(source, split), qrels_file(target, split))


def write_dataset(target: Path, corpus: Corpus, queries: Queries, qrels: dict[str, Qrels]) -> None:
    """Write a dataset (a converted local corpus) as a BEIR folder."""
    write_corpus(target / CORPUS, corpus)
    write_queries(target / QUERIES, queries)
    for split, rows in qrels.items():
        write_qrels(qrels_file(target, split), rows)


def write_training_set(target: Path, source: Path, queries: Queries, metadata, qrels: Qrels) -> None:
    """A BEIR training folder over the whole corpus of the dataset folder ``source``: its
    ``corpus.jsonl`` as it is, the given queries (with metadata) and ``qrels/train.tsv``."""
    (target / QRELS).mkdir(parents=True)
    shutil.copyfile(source / CORPUS, target / CORPUS)
    write_queries(target / QUERIES, queries, metadata)
    write_qrels(qrels_file(target, "train"), qrels)
