"""Every BEIR reader rejects bad input with a one-line error naming the file and line."""

from __future__ import annotations

import json

import pytest

from sptar.errors import SptarError
from sptar.io.formats import (
    doc_text,
    read_corpus,
    read_qrels,
    read_queries,
    read_run,
    write_corpus,
    write_qrels,
    write_queries,
    write_run,
)


def _write(path, text, mode="w"):
    if mode == "wb":
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def _corpus(tmp_path, *lines):
    return _write(tmp_path / "corpus.jsonl", "\n".join(lines) + "\n")


GOOD_DOC = json.dumps({"_id": "d1", "title": "T", "text": "some text"})


@pytest.mark.parametrize("bad_line, message", [
    ('{"_id": "d2", "text": "x"', "malformed JSON"),
    ('{"title": "t", "text": "x"}', "missing field '_id'"),
    ('{"_id": "d2", "title": "t"}', "missing field 'text'"),
    ('{"_id": "d2", "title": "", "text": "  "}', "empty title and text"),
    ('{"_id": "d1", "text": "again"}', "duplicate document id 'd1'"),
    ('["not", "an", "object"]', "expected a JSON object"),
    ('{"_id": ["d2"], "text": "x"}', "'_id' must be a string"),
    ('{"_id": "d2", "text": 5}', "'text' must be a string"),
])
def test_corpus_errors_name_file_and_line(tmp_path, bad_line, message):
    path = _corpus(tmp_path, GOOD_DOC, bad_line)
    with pytest.raises(SptarError) as err:
        read_corpus(path)
    text = str(err.value)
    assert text.startswith(f"{path}:2: ")
    assert message in text
    assert "fix:" in text and "\n" not in text


def test_non_utf8_is_named_with_its_line(tmp_path):
    path = _write(tmp_path / "corpus.jsonl", GOOD_DOC.encode() + b"\n" +
                  b'{"_id": "d2", "text": "caf\xe9"}\n', mode="wb")
    with pytest.raises(SptarError, match=r"corpus.jsonl:2: not valid UTF-8"):
        read_corpus(path)


def test_empty_and_missing_files(tmp_path):
    with pytest.raises(SptarError, match="file is empty"):
        read_corpus(_write(tmp_path / "corpus.jsonl", "\n\n"))
    with pytest.raises(SptarError, match="file not found"):
        read_corpus(tmp_path / "nope.jsonl")


def test_crlf_and_bom_are_fine(tmp_path):
    path = _write(tmp_path / "corpus.jsonl", "\ufeff" + GOOD_DOC + "\r\n" +
                  json.dumps({"_id": "d2", "text": "b"}) + "\r\n")
    assert read_corpus(path) == {"d1": {"title": "T", "text": "some text"},
                                 "d2": {"title": "", "text": "b"}}
    qrels = _write(tmp_path / "q.tsv", "query-id\tcorpus-id\tscore\r\nq1\td1\t1\r\n")
    assert read_qrels(qrels) == {"q1": {"d1": 1}}


def test_queries_errors(tmp_path):
    path = _write(tmp_path / "queries.jsonl", '{"_id": "q1", "text": "a"}\n{"_id": "q2", "text": ""}\n')
    with pytest.raises(SptarError, match=r"queries.jsonl:2: query 'q2' has empty text"):
        read_queries(path)
    path = _write(tmp_path / "queries.jsonl", '{"_id": "q1", "text": "a"}\n{"_id": "q1", "text": "b"}\n')
    with pytest.raises(SptarError, match=r"queries.jsonl:2: duplicate query id 'q1'"):
        read_queries(path)


@pytest.mark.parametrize("body, message, line", [
    ("q1\td1\t1\n", "wrong header", 1),
    ("query-id\tcorpus-id\tscore\nq1\td1\n", "expected 3 tab-separated fields", 2),
    ("query-id\tcorpus-id\tscore\nq1\td1\tyes\n", "is not an integer", 2),
    ("query-id\tcorpus-id\tscore\nq9\td1\t1\n", "unknown query id 'q9'", 2),
    ("query-id\tcorpus-id\tscore\nq1\td9\t1\n", "unknown document id 'd9'", 2),
    ("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td1\t2\n", "duplicate judgement", 3),
])
def test_qrels_errors(tmp_path, body, message, line):
    path = _write(tmp_path / "test.tsv", body)
    with pytest.raises(SptarError) as err:
        read_qrels(path, queries={"q1": "x"}, corpus={"d1": {}})
    assert str(err.value).startswith(f"{path}:{line}: ")
    assert message in str(err.value)


def test_round_trips(tmp_path):
    corpus = {"d1": {"title": "A", "text": "x"}, "d2": {"title": "", "text": "y"}}
    write_corpus(tmp_path / "c.jsonl", corpus)
    assert read_corpus(tmp_path / "c.jsonl") == corpus
    write_queries(tmp_path / "q.jsonl", {"q1": "hello"}, {"q1": {"logprob": -1.5}})
    assert read_queries(tmp_path / "q.jsonl", with_metadata=True) == ({"q1": "hello"},
                                                                      {"q1": {"logprob": -1.5}})
    write_qrels(tmp_path / "r.tsv", {"q1": {"d1": 1, "d2": 2}})
    assert read_qrels(tmp_path / "r.tsv") == {"q1": {"d1": 1, "d2": 2}}
    write_run(tmp_path / "run.trec", {"q1": {"d2": 0.5, "d1": 0.9, "d3": 0.5}}, tag="t")
    lines = (tmp_path / "run.trec").read_text().splitlines()
    assert [line.split()[2] for line in lines] == ["d1", "d2", "d3"]  # by score, ties by id
    assert read_run(tmp_path / "run.trec") == {"q1": {"d1": 0.9, "d2": 0.5, "d3": 0.5}}


def test_doc_text_joins_title_and_text():
    assert doc_text({"title": "T", "text": "body"}) == "T body"
    assert doc_text({"title": "", "text": "body"}) == "body"
    assert doc_text({"title": "T", "text": ""}) == "T"


def test_atomic_outputs_get_the_usual_permissions(tmp_path):
    """mkstemp/mkdtemp create 0600/0700; written outputs get 0666/0777 minus the umask."""
    import stat

    from sptar.io.atomic import _UMASK, atomic_dir, atomic_write

    with atomic_write(tmp_path / "a.txt") as handle:
        handle.write("x")
    with atomic_dir(tmp_path / "folder") as folder:
        (folder / "b.txt").write_text("y")
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o666 & ~_UMASK
    assert stat.S_IMODE((tmp_path / "folder").stat().st_mode) == 0o777 & ~_UMASK
