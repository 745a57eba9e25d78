"""Readers and writers for every on-disk format: one reader and one writer per format.

BEIR: ``corpus.jsonl`` (``_id``, ``title``, ``text``), ``queries.jsonl`` (``_id``, ``text``,
optional ``metadata``) and ``qrels/<split>.tsv`` (header ``query-id corpus-id score``).
TREC run files (``qid Q0 docid rank score tag``). Plain JSON and JSON Lines. Local corpora
(JSON Lines / CSV / TSV with named columns, a folder of text files) and labeled example files;
TSV tables with a header.

Readers validate as they go and raise :class:`~sptar.errors.SptarError` naming the file and
line; writers go through :mod:`sptar.io.atomic`, so an output is complete or absent.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from sptar.errors import input_error
from sptar.io.atomic import atomic_write

Corpus = dict[str, dict[str, str]]  # doc id -> {"title": ..., "text": ...}
Queries = dict[str, str]  # query id -> text
Qrels = dict[str, dict[str, int]]  # query id -> {doc id: relevance}
Run = dict[str, dict[str, float]]  # query id -> {doc id: score}

QRELS_HEADER = ("query-id", "corpus-id", "score")


# ---------------------------------------------------------------- low level: lines and JSON


def iter_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """Yield ``(line number, text)`` of a UTF-8 text file, CRLF or LF, skipping blank lines."""
    path = Path(path)
    if not path.is_file():
        raise input_error(path, "file not found", fix="check the path or run the stage that writes it")
    empty = True
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise input_error(path, f"not valid UTF-8 ({exc.reason} at byte {exc.start})",
                                  line=number, fix="re-encode the file as UTF-8") from None
            line = line.rstrip("\r\n")
            if number == 1:
                line = line.lstrip("\ufeff")
            if not line.strip():
                continue
            empty = False
            yield number, line
    if empty:
        raise input_error(path, "file is empty", fix="point to a non-empty file")


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line number, object)`` for each line of a JSON Lines file."""
    for number, line in iter_lines(path):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise input_error(path, f"malformed JSON ({exc.msg})", line=number,
                              fix="make every line one JSON object") from None
        if not isinstance(obj, dict):
            raise input_error(path, f"expected a JSON object, got {type(obj).__name__}",
                              line=number, fix="make every line one JSON object")
        yield number, obj


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    return [obj for _, obj in iter_jsonl(path)]


def write_jsonl(path: str | Path, rows: Iterable[Mapping[str, Any]]) -> None:
    with atomic_write(path) as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def read_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise input_error(path, "file not found", fix="run the stage that writes it")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise input_error(path, f"not valid JSON ({exc})", fix="delete it and re-run its stage") from None


def write_json(path: str | Path, obj: Any) -> None:
    with atomic_write(path) as handle:
        json.dump(obj, handle, indent=2, ensure_ascii=False, sort_keys=False)
        handle.write("\n")


# ---------------------------------------------------------------- BEIR


def _record_id(path: Path, number: int, obj: dict[str, Any], name: str = "_id") -> str:
    if name not in obj:
        raise input_error(path, f"missing field '{name}'", line=number, fix=f"give every line an '{name}'")
    return check_id(path, number, obj[name], name)


def check_id(path: Path, number: int, value: Any, name: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise input_error(path, f"'{name}' must be a string, got {type(value).__name__}", line=number,
                          fix="write ids as strings")
    value = str(value)
    if not value.strip() or "\t" in value or "\n" in value:
        raise input_error(path, f"'{name}' {value!r} is empty or contains a tab/newline", line=number,
                          fix="use ids without whitespace control characters")
    return value


def string_field(path: Path, number: int, obj: dict[str, Any], name: str, required: bool) -> str:
    if name not in obj or obj[name] is None:
        if required:
            raise input_error(path, f"missing field '{name}'", line=number,
                              fix=f"give every line a '{name}'")
        return ""
    value = obj[name]
    if not isinstance(value, str):
        raise input_error(path, f"'{name}' must be a string, got {type(value).__name__}",
                          line=number, fix=f"write '{name}' as a JSON string")
    return value


def read_corpus(path: str | Path, id_field: str = "_id", title_field: str = "title",
                text_field: str = "text") -> Corpus:
    """Read a BEIR ``corpus.jsonl`` (or JSON Lines with other field names); every document
    needs an id and a text field."""
    path = Path(path)
    corpus: Corpus = {}
    for number, obj in iter_jsonl(path):
        doc_id = _record_id(path, number, obj, id_field)
        text = string_field(path, number, obj, text_field, required=True)
        title = string_field(path, number, obj, title_field, required=False)
        add_document(corpus, path, number, doc_id, title, text)
    return corpus


def add_document(corpus: Corpus, path: Path, number: int | None, doc_id: str, title: str,
                 text: str) -> None:
    """Add one document, refusing an empty one or a repeated id (``number``: its line)."""
    if not text.strip() and not title.strip():
        raise input_error(path, f"document {doc_id!r} has empty title and text", line=number,
                          fix="drop the document or give it text")
    if doc_id in corpus:
        raise input_error(path, f"duplicate document id {doc_id!r}", line=number,
                          fix="make document ids unique")
    corpus[doc_id] = {"title": title, "text": text}


def read_queries(path: str | Path, with_metadata: bool = False):
    """Read a BEIR ``queries.jsonl`` into ``{id: text}`` (and ``{id: metadata}`` if asked)."""
    path = Path(path)
    queries: Queries = {}
    metadata: dict[str, dict[str, Any]] = {}
    for number, obj in iter_jsonl(path):
        query_id = _record_id(path, number, obj)
        text = string_field(path, number, obj, "text", required=True)
        if not text.strip():
            raise input_error(path, f"query {query_id!r} has empty text", line=number,
                              fix="drop the query or give it text")
        if query_id in queries:
            raise input_error(path, f"duplicate query id {query_id!r}", line=number,
                              fix="make query ids unique")
        queries[query_id] = text
        meta = obj.get("metadata")
        metadata[query_id] = meta if isinstance(meta, dict) else {}
    return (queries, metadata) if with_metadata else queries


def read_qrels(path: str | Path, *, queries: Mapping[str, Any] | None = None,
               corpus: Mapping[str, Any] | None = None) -> Qrels:
    """Read a BEIR qrels TSV; ids are checked against ``queries``/``corpus`` when given."""
    path = Path(path)
    qrels: Qrels = {}
    lines = iter_lines(path)
    number, header = next(lines)
    if tuple(field.strip().lower() for field in header.split("\t")) != QRELS_HEADER:
        raise input_error(path, f"wrong header {header!r}", line=number,
                          fix="the first line must be 'query-id<TAB>corpus-id<TAB>score'")
    for number, line in lines:
        fields = line.split("\t")
        if len(fields) != 3:
            raise input_error(path, f"expected 3 tab-separated fields, got {len(fields)}",
                              line=number, fix="write 'query-id<TAB>corpus-id<TAB>score'")
        query_id, doc_id, raw_score = (field.strip() for field in fields)
        try:
            score = int(raw_score)
        except ValueError:
            raise input_error(path, f"score {raw_score!r} is not an integer", line=number,
                              fix="write relevance as a whole number") from None
        if queries is not None and query_id not in queries:
            raise input_error(path, f"unknown query id {query_id!r}", line=number,
                              fix="add the query to queries.jsonl or drop the row")
        if corpus is not None and doc_id not in corpus:
            raise input_error(path, f"unknown document id {doc_id!r}", line=number,
                              fix="add the document to corpus.jsonl or drop the row")
        if doc_id in qrels.get(query_id, {}):
            raise input_error(path, f"duplicate judgement ({query_id!r}, {doc_id!r})", line=number,
                              fix="keep one row per (query, document)")
        qrels.setdefault(query_id, {})[doc_id] = score
    return qrels


def write_corpus(path: str | Path, corpus: Mapping[str, Mapping[str, str]]) -> None:
    write_jsonl(path, ({"_id": doc_id, "title": doc.get("title", ""), "text": doc["text"]}
                       for doc_id, doc in corpus.items()))


def write_queries(path: str | Path, queries: Mapping[str, str],
                  metadata: Mapping[str, Mapping[str, Any]] | None = None) -> None:
    metadata = metadata or {}
    write_jsonl(path, ({"_id": query_id, "text": text, "metadata": dict(metadata.get(query_id, {}))}
                       for query_id, text in queries.items()))


def write_qrels(path: str | Path, qrels: Mapping[str, Mapping[str, int]]) -> None:
    with atomic_write(path) as handle:
        handle.write("\t".join(QRELS_HEADER) + "\n")
        for query_id, docs in qrels.items():
            for doc_id, score in docs.items():
                handle.write(f"{query_id}\t{doc_id}\t{int(score)}\n")


# ---------------------------------------------------------------- tables: CSV and TSV


def decode_text(path: Path, raw: bytes) -> str:
    """UTF-8 text of a whole file (BOM dropped); a bad byte is reported with its line."""
    try:
        return raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise input_error(path, f"not valid UTF-8 ({exc.reason} at byte {exc.start})", line=line,
                          fix="re-encode the file as UTF-8") from None


def _csv_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    import csv
    import io

    if not path.is_file():
        raise input_error(path, "file not found", fix="check the path")
    reader = csv.reader(io.StringIO(decode_text(path, path.read_bytes()), newline=""), strict=True)
    start = 1
    try:
        for row in reader:
            if any(cell.strip() for cell in row):
                yield start, row
            start = reader.line_num + 1
    except csv.Error as exc:
        raise input_error(path, f"malformed CSV ({exc})", line=start,
                          fix="quote fields that hold commas, quotes or line breaks") from None


def iter_table(path: str | Path, delimiter: str,
               required: tuple[str, ...] = ()) -> Iterator[tuple[int, dict[str, str]]]:
    """Rows of a CSV (``delimiter=","``, quoted as spreadsheets write it) or TSV (``"\\t"``, no
    quoting) file with a header row naming at least the ``required`` columns, as
    ``(line number, {column: value})``."""
    path = Path(path)
    rows = (_csv_rows(path) if delimiter == "," else
            ((number, line.split("\t")) for number, line in iter_lines(path)))
    first = next(rows, None)
    if first is None:
        raise input_error(path, "file is empty", fix="point to a non-empty file")
    number, header = first
    header = [name.strip() for name in header]
    if len(set(header)) != len(header) or not all(header):
        raise input_error(path, f"header {header!r} has an empty or repeated column name",
                          line=number, fix="the first line must name every column once")
    missing = [name for name in required if name not in header]
    if missing:
        raise input_error(path, f"no column '{missing[0]}' in the header ({', '.join(header)})",
                          line=number, fix=f"name the columns {', '.join(required)} in the first line")
    for number, cells in rows:
        if len(cells) != len(header):
            raise input_error(path, f"expected {len(header)} fields ({', '.join(header)}), got "
                              f"{len(cells)}", line=number,
                              fix="give every row one value per header column"
                              + (" (a tab inside a value splits it)" if delimiter != "," else ""))
        yield number, dict(zip(header, cells, strict=True))


def write_table(path: str | Path, columns: list[str], rows: Iterable[Mapping[str, Any]]) -> None:
    """A TSV with a header and no quoting: tabs and line breaks inside values become spaces,
    ``None`` an empty cell."""
    def cell(value: Any) -> str:
        return "" if value is None else " ".join(str(value).replace("\t", " ").splitlines())

    with atomic_write(path) as handle:
        handle.write("\t".join(columns) + "\n")
        for row in rows:
            handle.write("\t".join(cell(row.get(c)) for c in columns) + "\n")


# ---------------------------------------------------------------- TREC runs


def write_run(path: str | Path, run: Mapping[str, Mapping[str, float]], tag: str) -> None:
    """Write a TREC run, each query's documents by descending score (ties by doc id)."""
    with atomic_write(path) as handle:
        for query_id, scores in run.items():
            ranked = sorted(scores.items(), key=lambda item: (-item[1], item[0]))
            for rank, (doc_id, score) in enumerate(ranked, start=1):
                handle.write(f"{query_id} Q0 {doc_id} {rank} {score:.6f} {tag}\n")


def read_run(path: str | Path) -> Run:
    path = Path(path)
    run: Run = {}
    for number, line in iter_lines(path):
        fields = line.split()
        if len(fields) != 6:
            raise input_error(path, f"expected 6 fields 'qid Q0 docid rank score tag', got {len(fields)}",
                              line=number, fix="write a TREC run file")
        try:
            score = float(fields[4])
        except ValueError:
            raise input_error(path, f"score {fields[4]!r} is not a number", line=number,
                              fix="write a TREC run file") from None
        if not math.isfinite(score):
            raise input_error(path, f"score {fields[4]!r} is not finite", line=number,
                              fix="write finite scores")
        run.setdefault(fields[0], {})[fields[2]] = score
    return run


# ---------------------------------------------------------------- id lists and hashes


def write_ids(path: str | Path, ids: Iterable[str]) -> None:
    with atomic_write(path) as handle:
        for item in ids:
            handle.write(f"{item}\n")


def read_ids(path: str | Path) -> list[str]:
    return [line.strip() for _, line in iter_lines(path)]


def sha256_file(path: str | Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def doc_text(doc: Mapping[str, str]) -> str:
    """The text a retriever sees for a document: title and body, as BEIR joins them."""
    title, text = doc.get("title", "").strip(), doc.get("text", "").strip()
    return f"{title} {text}" if title and text else title or text
