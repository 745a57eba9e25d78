"""Readers of a local corpus and its labeled examples (``sptar.io.own``): a CSV or TSV table with
named columns, a folder of text files, and example files of query + doc_id or doc_text."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sptar.errors import input_error
from sptar.io.formats import (
    Corpus,
    add_document,
    check_id,
    decode_text,
    iter_jsonl,
    iter_table,
    string_field,
)


def read_corpus_table(path: str | Path, delimiter: str, id_field: str = "_id",
                      title_field: str = "title", text_field: str = "text") -> Corpus:
    """A corpus as CSV/TSV: the header names the id and text columns (the title is optional)."""
    path = Path(path)
    corpus: Corpus = {}
    for number, row in iter_table(path, delimiter, required=(id_field, text_field)):
        doc_id = check_id(path, number, row[id_field].strip(), id_field)
        add_document(corpus, path, number, doc_id, row.get(title_field, ""), row[text_field])
    return corpus


# ---------------------------------------------------------------- a folder of text files


def read_corpus_folder(folder: str | Path, extensions: Iterable[str] = (".txt", ".md")) -> Corpus:
    """Every file with one of ``extensions`` under ``folder`` (hidden files and folders
    skipped), id = its path relative to ``folder``; a Markdown file whose first line is a
    ``# heading`` has that heading as its title, the rest as its text."""
    folder = Path(folder)
    if not folder.is_dir():
        raise input_error(folder, "corpus folder not found", fix="check dataset.corpus.path")
    wanted = {ext.lower() for ext in extensions}
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in wanted
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    if not files:
        raise input_error(folder, f"no {'/'.join(sorted(wanted))} files in the folder",
                          fix="check dataset.corpus.path and dataset.corpus.extensions")
    corpus: Corpus = {}
    for file in files:
        doc_id = file.relative_to(folder).as_posix()
        if any(char.isspace() for char in doc_id):
            raise input_error(file, f"document id {doc_id!r} (the relative path) contains "
                              "whitespace", fix="rename the file: ids end up in TREC run files")
        text = decode_text(file, file.read_bytes()).strip()
        title = ""
        if file.suffix.lower() == ".md" and text.startswith("# "):
            title, _, text = text.partition("\n")
            title, text = title[2:].strip(), text.strip()
        add_document(corpus, file, None, doc_id, title, text)
    return corpus


# ---------------------------------------------------------------- labeled examples


@dataclass(frozen=True)
class LabeledPair:
    """One row of an examples file: a query and its relevant document, by id or by text."""

    line: int
    query: str
    doc_id: str | None
    doc_text: str | None


EXAMPLE_COLUMNS = ("query", "doc_id", "doc_text")


def read_examples(path: str | Path) -> list[LabeledPair]:
    """Labeled pairs from a TSV/CSV (header ``query`` plus ``doc_id`` and/or ``doc_text``) or a
    JSONL file (``{"query": ..., "doc_id": ...}`` or ``{"query": ..., "doc_text": ...}``); each
    row names its document one way."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        rows: Iterable[tuple[int, dict[str, Any]]] = iter_jsonl(path)
    elif suffix in (".tsv", ".csv"):
        rows = iter_table(path, "\t" if suffix == ".tsv" else ",", required=("query",))
    else:
        raise input_error(path, f"unknown examples format {suffix or '(no suffix)'!r}",
                          fix="use a .tsv, .csv or .jsonl file")
    pairs = []
    for number, row in rows:
        unknown = sorted(set(row) - set(EXAMPLE_COLUMNS))
        if unknown:
            raise input_error(path, f"unknown field {unknown[0]!r}", line=number,
                              fix=f"use only {', '.join(EXAMPLE_COLUMNS)}")
        query = string_field(path, number, row, "query", required=True).strip()
        if not query:
            raise input_error(path, "empty query", line=number, fix="give every row a query")
        doc_id = row.get("doc_id")
        doc_id = "" if doc_id in (None, "") else check_id(path, number, doc_id, "doc_id").strip()
        text = string_field(path, number, row, "doc_text", required=False).strip()
        if bool(doc_id) == bool(text):
            raise input_error(path, "a row needs exactly one of doc_id and doc_text", line=number,
                              fix="name the relevant document by its id or by its text")
        pairs.append(LabeledPair(number, query, doc_id or None, text or None))
    return pairs
