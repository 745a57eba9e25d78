"""Your own corpus: every input form, tiny example files, no test split, the export."""

from __future__ import annotations

import csv
import json
import os

import pytest

from sptar import demo_corpus
from sptar.config import CorpusSource, load_config
from sptar.errors import SptarError
from sptar.io.formats import doc_text, iter_table, read_jsonl, read_queries
from sptar.io.own import read_local_corpus
from sptar.io.own_readers import LabeledPair, read_corpus_folder, read_examples
from sptar.outputs.dataset import load_beir
from sptar.outputs.fewshot import load_split
from sptar.run.runner import execute, paths_for

from .conftest import ROOT
from .test_generate import tiny_llm  # noqa: F401  (its lines end: generation writes queries)

DOCS = {  # id: (title, text); the folder form decides the ids (relative paths)
    "alpha.md": ("Alpha title", "Alpha text, with a comma and \"quotes\"."),
    "notes/beta.txt": ("", "Beta text without a title."),
    "notes/deeper/gamma.md": ("Gamma", "Gamma text: the third document."),
}


def _write_forms(folder):
    """The same three documents in all five forms; returns {form: CorpusSource}."""
    for doc_id, (title, text) in DOCS.items():
        path = folder / "docs" / doc_id
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# {title}\n\n{text}\n" if title else f"\n{text}\n", encoding="utf-8")
    (folder / "docs" / ".hidden.md").write_text("# Not a document\n\nskipped\n")
    (folder / "docs" / "image.png").write_bytes(b"\x89PNG not text")
    with (folder / "corpus.jsonl").open("w") as out:
        for doc_id, (title, text) in DOCS.items():
            out.write(json.dumps({"_id": doc_id, "title": title, "text": text}) + "\n")
    with (folder / "custom.jsonl").open("w") as out:
        for doc_id, (title, text) in DOCS.items():
            out.write(json.dumps({"id": doc_id, "heading": title or None, "body": text}) + "\n")
    with (folder / "corpus.csv").open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["doc", "body", "name"])
        writer.writerows([doc_id, text, title] for doc_id, (title, text) in DOCS.items())
    with (folder / "corpus.tsv").open("w") as out:
        out.write("_id\ttext\n")  # no title column: every title empty
        out.writelines(f"{doc_id}\t{text}\n" for doc_id, (_, text) in DOCS.items())
    rel = os.path.relpath(folder, ROOT)
    return {
        "folder": CorpusSource(path=f"{rel}/docs"),
        "beir": CorpusSource(path=f"{rel}/corpus.jsonl"),
        "jsonl": CorpusSource(path=f"{rel}/custom.jsonl", id_field="id", title_field="heading",
                              text_field="body"),
        "csv": CorpusSource(path=f"{rel}/corpus.csv", id_field="doc", title_field="name",
                            text_field="body"),
        "tsv": CorpusSource(path=f"{rel}/corpus.tsv", format="tsv"),
    }


def test_every_corpus_form_parses_to_the_same_documents(tmp_path):
    expected = {doc_id: {"title": title, "text": text} for doc_id, (title, text) in DOCS.items()}
    forms = _write_forms(tmp_path)
    for form, source in forms.items():
        corpus = read_local_corpus(source)
        if form == "tsv":  # the TSV has no title column
            assert corpus == {d: {"title": "", "text": doc["text"]} for d, doc in expected.items()}
        else:
            assert corpus == expected, form
            assert list(corpus) == list(expected)


def _error(call) -> str:
    with pytest.raises(SptarError) as err:
        call()
    text = str(err.value)
    assert "\n" not in text and "(fix: " in text
    return text


def _read_corpus(path):
    return read_local_corpus(CorpusSource(path=os.path.relpath(path, ROOT), id_field="id",
                                          text_field="body"))


@pytest.mark.parametrize("name, content, line, message", [
    ("c.jsonl", '{"id": "a", "body": "x"}\n{"id": "b"}\n', 2, "missing field 'body'"),
    ("c.jsonl", '{"id": "a", "body": "x"}\n\n{"id": "a", "body": "y"}\n', 3, "duplicate document id 'a'"),
    ("c.csv", 'id,body\na,"one, two"\nb,x,y\n', 3, "expected 2 fields (id, body), got 3"),
    ("c.csv", 'id,body\na,"multi\nline"\nb,"unclosed\n', 4, "malformed CSV"),
    ("c.csv", 'id,text\na,x\n', 1, "no column 'body' in the header"),
    ("c.tsv", 'id\tbody\na\tx\nb\tx\ty\n', 3, "expected 2 fields"),
    ("c.tsv", 'id\tbody\na\tx\nb\t  \n', 3, "document 'b' has empty title and text"),
    ("c.tsv", 'id\tid\n', 1, "repeated column name"),
    ("e.tsv", "query\tdoc_id\nq one\td1\nq two\n", 3, "expected 2 fields"),
    ("e.tsv", "question\tdoc_id\nq\td1\n", 1, "no column 'query'"),
    ("e.tsv", "query\tdoc_id\tdoc_text\nq\td1\tsome text\n", 2, "exactly one of doc_id and doc_text"),
    ("e.jsonl", '{"query": "q", "doc_id": "d1"}\n{"query": " ", "doc_id": "d1"}\n', 2, "empty query"),
    ("e.jsonl", '{"query": "q", "doc": "d1"}\n', 1, "unknown field 'doc'"),
    ("e.csv", "query,doc_text\nq,\n", 2, "exactly one of doc_id and doc_text"),
])
def test_bad_lines_name_file_and_line(tmp_path, name, content, line, message):
    """Corpus files (c.*, read with id/body columns) and examples files (e.*)."""
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    text = _error(lambda: (_read_corpus if name.startswith("c.") else read_examples)(path))
    assert text.startswith(f"{os.path.relpath(path, ROOT) if name.startswith('c.') else path}:"
                           f"{line}: ") and message in text


def test_bad_folder_files_are_named(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "ok.txt").write_text("fine\n")
    (docs / "bad.md").write_bytes(b"# Title\n\ncaf\xe9\n")
    assert _error(lambda: read_corpus_folder(docs)).startswith(f"{docs / 'bad.md'}:3: not valid UTF-8")
    (docs / "bad.md").unlink()
    (docs / "my notes.txt").write_text("text\n")
    assert "contains whitespace" in _error(lambda: read_corpus_folder(docs))
    (docs / "my notes.txt").unlink()
    (docs / "empty.txt").write_text("  \n")
    assert _error(lambda: read_corpus_folder(docs)).startswith(f"{docs / 'empty.txt'}: document")
    assert "no .md files in the folder" in _error(lambda: read_corpus_folder(docs, [".md"]))
    assert "corpus not found" in _error(lambda: read_local_corpus(CorpusSource(path="no/such/dir")))
    assert "use a .tsv, .csv or .jsonl" in _error(lambda: read_examples(tmp_path / "e.txt"))


def test_examples_in_every_form_read_alike(tmp_path):
    (tmp_path / "e.tsv").write_text("query\tdoc_id\n\na question \td1\n")
    (tmp_path / "e.csv").write_text('doc_text,query\n"Some, text",another one\n')
    (tmp_path / "e.jsonl").write_text('{"query": "a question", "doc_id": 7}\n')
    assert read_examples(tmp_path / "e.tsv") == [LabeledPair(3, "a question", "d1", None)]
    assert read_examples(tmp_path / "e.csv") == [LabeledPair(2, "another one", None, "Some, text")]
    assert read_examples(tmp_path / "e.jsonl") == [LabeledPair(1, "a question", "7", None)]


def test_demo_corpus_is_deterministic_and_parses(tmp_path):
    for name in ("a", "b"):
        assert demo_corpus.write(tmp_path / name) == (120, 10)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) == 121
    for file in files:
        assert (tmp_path / "a" / file).read_bytes() == (tmp_path / "b" / file).read_bytes()
    corpus = read_corpus_folder(tmp_path / "a" / "docs")
    assert len(corpus) == 120
    assert sum(bool(doc["title"]) for doc in corpus.values()) == 60  # the .md half
    pairs = read_examples(tmp_path / "a" / "examples.tsv")
    assert len(pairs) == 10 and all(pair.doc_id in corpus for pair in pairs)
    assert len({pair.query for pair in pairs}) == 10


# ---------------------------------------------------------------- a whole pipeline, 5 pairs


def _five_pairs(folder) -> list[dict[str, str]]:
    """Five labeled pairs over a 24-document demo corpus: 3 by id, one by the text of a corpus
    document (whitespace differs), one by a text that is in no document (added)."""
    demo_corpus.write(folder, n_plants=4)
    corpus = read_corpus_folder(folder / "docs")
    chosen = [pair for pair in read_examples(folder / "examples.tsv")][:4]
    rows = [{"query": pair.query, "doc_id": pair.doc_id} for pair in chosen[:3]]
    text = corpus[chosen[3].doc_id]["text"]
    rows.append({"query": chosen[3].query, "doc_text": "  " + text.replace(" ", "\n  ", 3)})
    rows.append({"query": "does english ivy climb brick walls",
                 "doc_text": "English ivy climbs brick walls with aerial rootlets."})
    with (folder / "examples.jsonl").open("w") as out:
        out.writelines(json.dumps(row) + "\n" for row in rows)
    return rows


@pytest.fixture(scope="module")
def own_chain(tmp_path_factory, tiny_llm, tiny_encoder):  # noqa: F811
    """data -> split -> tune -> generate -> filter -> export -> train -> evaluate -> report on a
    local folder corpus with 5 labeled pairs and no test split, with the tiny models."""
    folder = tmp_path_factory.mktemp("own")
    rows = _five_pairs(folder)
    rel = os.path.relpath(folder, ROOT)
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: threads only add waiting on a busy machine
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(ROOT)
        cfg = load_config("tiny", [
            "dataset.name=own-test", "dataset.mirror=null", f"dataset.corpus={{path: {rel}/docs}}",
            f"dataset.examples={rel}/examples.jsonl", "split.shrink_to_fit=true",
            f"models.llm={tiny_llm}", f"models.encoder={tiny_encoder}",
            "filter.steps=[{length: {min_words: 1, max_words: 64}}]",
            "report.systems=[bm25, zero-shot, sptar]", "train.hard_negatives=1"])
        paths = paths_for(cfg, folder / "data")
        manifests = {}
        for stage, options in [("data", {}), ("split", {}), ("tune", {}),
                               ("generate", {"variant": "sptar"}), ("filter", {"variant": "sptar"}),
                               ("export", {"variant": "sptar"}), ("train", {"variant": "sptar"}),
                               ("evaluate", {"system": "bm25"}), ("evaluate", {"system": "zero-shot"}),
                               ("evaluate", {"system": "sptar"}), ("report", {})]:
            key = "/".join([stage, *options.values()])
            manifests[key] = execute(stage, cfg, paths, **options)
    torch.set_num_threads(threads)
    return cfg, paths, manifests, rows


def test_five_pairs_become_a_beir_dataset_and_a_split(own_chain):
    cfg, paths, manifests, rows = own_chain
    summary = manifests["data"]["summary"]
    assert summary["documents"] == 25 and summary["documents_read"] == 24
    assert summary["example_pairs"] == {"doc_id": 3, "doc_text_matched": 1, "doc_text_added": 1}
    assert summary["splits"] == {"train": {"queries": 5, "judgements": 5}}
    dataset = load_beir(paths.beir)
    assert set(dataset.qrels) == {"train"}
    assert sorted(dataset.queries.values()) == sorted(row["query"] for row in rows)
    added = [d for d in dataset.corpus if d.startswith("example-")]
    assert len(added) == 1 and dataset.corpus[added[0]]["text"] == rows[4]["doc_text"]
    split = load_split(paths)
    assert (len(split.prompt_train), len(split.prompt_eval)) == (4, 1)  # shrink_to_fit: 5 // 3 = 1
    judged = {d for docs in dataset.qrels["train"].values() for d in docs}
    assert len(split.unlabeled) == cfg.split.max_unlabeled_docs and not judged & set(split.unlabeled)


def test_no_test_split_ends_cleanly_after_export_and_says_so(own_chain):
    cfg, paths, manifests, _ = own_chain
    for system in ("bm25", "zero-shot", "sptar"):
        assert manifests[f"evaluate/{system}"]["summary"]["skipped"] == {
            "validation": "no validation queries (split.validation is none, or none were left)",
            "test": "no test split: nothing to evaluate"}
        assert not list(paths.stage("evaluate", system).glob("**/metrics.json"))
    report = json.loads((paths.stage("report") / "report.json").read_text())
    assert report["evaluated"] is False and report["systems"] == {}
    export = manifests["export/sptar"]["summary"]
    assert report["exports"]["sptar"]["gold_pairs"] == export["gold_pairs"] == 5
    assert report["training"]["sptar"]["weak_pairs"] == export["weak_pairs"] > 0
    markdown = (paths.stage("report") / "report.md").read_text()
    assert "**No validation queries (split.validation is none, or none were left); no test split: nothing to evaluate.**" in markdown
    assert f"{export['gold_pairs']} gold + {export['weak_pairs']} weak pairs" in markdown


def test_too_few_labeled_queries_is_a_clear_error(own_chain, tmp_path):
    cfg, paths, _, _ = own_chain
    from sptar.stages.split import sample_split

    dataset = load_beir(paths.beir)
    dataset.qrels["train"] = dict(list(dataset.qrels["train"].items())[:1])
    with pytest.raises(SptarError, match="has 1 usable labeled query; the few-shot split needs at least 2"):
        sample_split(cfg, dataset)
    strict = cfg.model_copy(update={"split": cfg.split.model_copy(update={"shrink_to_fit": False})})
    with pytest.raises(SptarError, match="only 1 usable labeled queries .*shrink_to_fit: true"):
        sample_split(strict, dataset)


def test_export_round_trips(own_chain):
    from datasets import load_from_disk

    cfg, paths, _, _ = own_chain
    folder = paths.stage("export", "sptar")
    rows = read_jsonl(folder / "pairs.jsonl")
    assert load_from_disk(str(folder / "hf")).to_list() == rows
    table = [row for _, row in iter_table(folder / "pairs.tsv", "\t")]
    assert table == [{k: "" if v is None else str(v) for k, v in row.items()} for row in rows]
    # provenance: the split's labeled pairs first (gold), then what the filter kept (weak)
    split = load_split(paths)
    kept, meta = read_queries(paths.stage("filter", "sptar") / "queries.jsonl", with_metadata=True)
    assert [(r["query_id"], r["doc_id"]) for r in rows if r["source"] == "gold"] == split.pairs("labeled")
    weak = [r for r in rows if r["source"] == "weak"]
    assert [r["query_id"] for r in weak] == list(kept) and len(rows) == 5 + len(kept)
    for row in weak:
        assert row["anchor"] == kept[row["query_id"]] and row["variant"] == "sptar"
        assert (row["doc_id"], row["logprob"], row["bm25_rank"]) == (
            meta[row["query_id"]]["doc_id"], meta[row["query_id"]]["logprob"],
            meta[row["query_id"]]["bm25_rank"])
    # texts and hard negatives
    beir = load_beir(folder / "beir")
    corpus = load_beir(paths.beir).corpus
    assert beir.corpus == corpus
    for row in rows:
        assert row["positive"] == doc_text(corpus[row["doc_id"]])
        assert row["negative_1"] == doc_text(corpus[row["negative_1_id"]])
        assert row["negative_1_id"] not in beir.qrels["train"][row["query_id"]]
        assert beir.queries[row["query_id"]] == row["anchor"]
        assert row["doc_id"] in beir.qrels["train"][row["query_id"]]
    gold = [r for r in rows if r["source"] == "gold"]
    assert all(r["variant"] is None and r["logprob"] is None for r in gold)
    assert all(r["bm25_rank"] is None or r["bm25_rank"] >= 1 for r in gold)
    assert sum(len(docs) for docs in beir.qrels["train"].values()) == len(rows)
    _, beir_meta = read_queries(folder / "beir" / "queries.jsonl", with_metadata=True)
    assert {m["source"] for m in beir_meta.values()} == {"gold", "weak"}


def test_an_edited_examples_file_reruns_the_data_stage(own_chain, tmp_path):
    cfg, paths, manifests, _ = own_chain
    other = paths_for(cfg, tmp_path / "data")
    first = execute("data", cfg, other)
    assert execute("data", cfg, other)["finished_at"] == first["finished_at"]  # unchanged: skipped
    examples = ROOT / cfg.dataset.examples
    original = examples.read_text()
    try:
        examples.write_text(original + '{"query": "one more", "doc_text": "A new text."}\n')
        assert execute("data", cfg, other)["summary"]["documents"] == 26
    finally:
        examples.write_text(original)


def test_shipped_example_pipeline_loads():
    cfg = load_config("own-example")
    assert cfg.dataset.corpus.path == "data/own-example/docs" and cfg.split.shrink_to_fit
    assert cfg.dataset.test_examples is None
