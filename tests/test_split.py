"""The few-shot split: seeded, no evaluation data leaks into training or the pool."""

from __future__ import annotations

import pytest

from sptar.errors import SptarError
from sptar.io.formats import read_json
from sptar.outputs.dataset import load_beir
from sptar.outputs.fewshot import load_split, load_validation
from sptar.run.runner import execute, paths_for
from sptar.stages.split import sample_split


def _split(cfg, paths):
    execute("data", cfg, paths)
    execute("split", cfg, paths)
    return load_split(paths)


def test_pool_has_no_judged_document_and_queries_come_from_train(tiny_cfg, tiny_paths):
    cfg = tiny_cfg()
    split = _split(cfg, tiny_paths)
    dataset = load_beir(tiny_paths.beir)
    judged = {d for qrels in dataset.qrels.values() for docs in qrels.values() for d in docs}
    assert split.unlabeled and not judged & set(split.unlabeled)
    assert len(split.unlabeled) == cfg.split.max_unlabeled_docs
    assert set(split.prompt_train) | set(split.prompt_eval) <= set(dataset.qrels["train"])
    assert not set(split.prompt_train) & set(split.prompt_eval)
    assert not (set(split.prompt_train) | set(split.prompt_eval)) & set(dataset.qrels["test"])
    assert (len(split.prompt_train), len(split.prompt_eval)) == (4, 3)
    order = list(dataset.corpus)
    assert split.unlabeled == sorted(split.unlabeled, key=order.index)


def test_same_seed_same_split_other_seed_differs(tiny_cfg, tmp_path):
    cfg = tiny_cfg()
    first = _split(cfg, paths_for(cfg, tmp_path / "a"))
    second = _split(cfg, paths_for(cfg, tmp_path / "b"))
    assert first == second
    a = (tmp_path / "a/runs/tiny/split/unlabeled_ids.txt").read_bytes()
    assert a == (tmp_path / "b/runs/tiny/split/unlabeled_ids.txt").read_bytes()
    other = tiny_cfg("seed=14")
    third = _split(other, paths_for(other, tmp_path / "c"))
    assert (third.prompt_train, third.unlabeled) != (first.prompt_train, first.unlabeled)


def test_queries_judged_in_test_are_never_sampled(tiny_cfg, tiny_paths):
    cfg = tiny_cfg("split.n_prompt_train=5", "split.n_prompt_eval=4")
    execute("data", cfg, tiny_paths)
    dataset = load_beir(tiny_paths.beir)
    dataset.qrels["test"]["q01"] = {"d01": 1}  # q01 also judged in test: must be held out
    with pytest.raises(SptarError, match="has only 8 usable labeled queries"):
        sample_split(cfg, dataset)


def test_too_many_requested_and_test_as_source(tiny_cfg, tiny_paths):
    execute("data", tiny_cfg(), tiny_paths)
    dataset = load_beir(tiny_paths.beir)
    with pytest.raises(SptarError, match="= 20, but the 'train' split has only 9"):
        sample_split(tiny_cfg("split.n_prompt_train=10", "split.n_prompt_eval=10"), dataset)
    with pytest.raises(SptarError, match="never from test"):
        sample_split(tiny_cfg("split.source_split=test"), dataset)


def test_not_in_eval_pool_excludes_eval_and_labeled_documents(tiny_cfg, tiny_paths):
    cfg = tiny_cfg("split.pool=not-in-eval", "split.max_unlabeled_docs=null", "split.validation=none")
    split = _split(cfg, tiny_paths)
    dataset = load_beir(tiny_paths.beir)
    test_docs = {d for docs in dataset.qrels["test"].values() for d in docs}
    labeled_docs = {d for qrels in (split.prompt_train, split.prompt_eval)
                    for docs in qrels.values() for d in docs}
    unsampled_train = {d for q, docs in dataset.qrels["train"].items()
                       if q not in split.queries for d in docs}
    assert not (test_docs | labeled_docs) & set(split.unlabeled)
    assert unsampled_train <= set(split.unlabeled)  # judged only by unsampled train queries
    assert len(split.unlabeled) == 36 - len(test_docs | labeled_docs)
    assert load_validation(tiny_paths) is None


def test_validation_is_the_rest_of_train_and_its_documents_leave_the_pool(tiny_cfg, tiny_paths):
    cfg = tiny_cfg("split.pool=not-in-eval", "split.max_unlabeled_docs=null")
    split = _split(cfg, tiny_paths)
    validation = load_validation(tiny_paths)
    dataset = load_beir(tiny_paths.beir)
    assert set(validation.queries) == set(dataset.qrels["train"]) - set(split.queries)
    assert validation.qrels == {q: dataset.qrels["train"][q] for q in validation.queries}
    validation_docs = {d for docs in validation.qrels.values() for d in docs}
    assert validation_docs and not validation_docs & set(split.unlabeled)
    summary = read_json(tiny_paths.stage("split") / "manifest.json")["summary"]
    assert summary["validation_source"] == "rest of train"
    assert summary["validation_queries"] == len(validation.queries) == 2
    labeled_files = {p.name for p in tiny_paths.stage("split").rglob("*") if p.is_file()}
    assert "judged.tsv" in labeled_files and not (tiny_paths.stage("split") / "queries.jsonl").read_text(
    ).count(next(iter(validation.queries)))


def test_pairs_per_query_cap(tiny_cfg, tiny_paths):
    split = _split(tiny_cfg("split.max_pairs_per_query=1"), tiny_paths)
    assert all(len(docs) == 1 for qrels in (split.prompt_train, split.prompt_eval)
               for docs in qrels.values())
    assert len(split.pairs("labeled")) == len(split.queries) == 7


def _write_beir(folder, queries: dict[str, str], qrels: dict[str, dict[str, str]], n_docs: int = 40):
    """A BEIR folder: documents d00..; ``qrels``: {split: {query id: doc id}}."""
    import json

    (folder / "qrels").mkdir(parents=True)
    with (folder / "corpus.jsonl").open("w") as out:
        for i in range(n_docs):
            out.write(json.dumps({"_id": f"d{i:02d}", "title": "", "text": f"document {i}"}) + "\n")
    with (folder / "queries.jsonl").open("w") as out:
        for qid, text in queries.items():
            out.write(json.dumps({"_id": qid, "text": text}) + "\n")
    for split, rows in qrels.items():
        with (folder / "qrels" / f"{split}.tsv").open("w") as out:
            out.write("query-id\tcorpus-id\tscore\n")
            out.writelines(f"{qid}\t{did}\t1\n" for qid, did in rows.items())


def test_leak_guard_keeps_repeated_texts_out_of_labeled_and_validation(tiny_cfg, tmp_path, monkeypatch):
    """Train queries that repeat a test or dev query's text (case, spacing and punctuation
    aside) are never labeled or validation queries, whatever the seed; the manifest counts them."""
    queries = {"t1": "Salt raises blood pressure", "t2": "Coffee and the liver",
               "v1": "sleep improves memory", "v2": "SALT raises blood-pressure."}  # v2 repeats t1
    qrels = {"test": {"t1": "d00", "t2": "d01"}, "dev": {"v1": "d02", "v2": "d03"}, "train": {}}
    for i in range(12):
        queries[f"q{i}"] = f"train question number {i}"
        qrels["train"][f"q{i}"] = f"d{10 + i:02d}"
    queries |= {"x1": "salt  raises blood pressure!", "x2": "Sleep improves memory",
                "x3": "coffee and the liver"}  # x1, x3 repeat test queries, x2 a dev query
    qrels["train"] |= {"x1": "d30", "x2": "d31", "x3": "d32"}
    _write_beir(tmp_path / "mirror" / "crafted", queries, qrels)
    monkeypatch.setenv("SPTAR_DATA_MIRROR", str(tmp_path / "mirror"))
    for validation, seeds in (("auto", range(6)), ("rest", range(6))):
        for seed in seeds:
            cfg = tiny_cfg("dataset.name=crafted", "dataset.mirror=null",
                           f"seed={seed}", f"split.validation={validation}",
                           "split.n_prompt_train=4", "split.n_prompt_eval=3")
            paths = paths_for(cfg, tmp_path / f"data-{validation}-{seed}")
            split = _split(cfg, paths)
            held = load_validation(paths)
            used = set(split.queries) | set(held.queries)
            summary = read_json(paths.stage("split") / "manifest.json")["summary"]
            assert not {"x1", "x3", "t1", "t2"} & used  # the test queries and their twins
            if validation == "auto":  # dev is the validation split: v2 (text of t1) leaves it
                assert set(held.queries) == {"v1"} and summary["validation_source"] == "dev"
                assert "x2" not in used  # the twin of a validation query is never labeled
                assert summary["set_aside"] == {"labeled: text of a test query": 2,
                                                "labeled: text of a validation query": 1,
                                                "validation: text of a test query": 1}
            else:  # the rest of train (x2 included): the dev split plays no part
                assert set(held.queries) == ({f"q{i}" for i in range(12)} | {"x2"}) - set(split.queries)
                assert summary["set_aside"] == {"labeled: text of a test query": 2}


def test_leak_guard_rest_drops_a_validation_query_that_repeats_a_labeled_one(tiny_cfg, tmp_path,
                                                                              monkeypatch):
    queries = {"t1": "a test query"}
    qrels = {"test": {"t1": "d00"}, "train": {}}
    for i in range(8):
        queries[f"q{i}"] = f"question {i}"
        queries[f"r{i}"] = f"Question {i}?"  # the same text as q{i}
        qrels["train"] |= {f"q{i}": f"d{10 + i:02d}", f"r{i}": f"d{20 + i:02d}"}
    _write_beir(tmp_path / "mirror" / "twins", queries, qrels)
    monkeypatch.setenv("SPTAR_DATA_MIRROR", str(tmp_path / "mirror"))
    cfg = tiny_cfg("dataset.name=twins", "dataset.mirror=null",
                   "split.n_prompt_train=3", "split.n_prompt_eval=2")
    paths = paths_for(cfg, tmp_path / "data")
    split = _split(cfg, paths)
    held = load_validation(paths)
    labeled_texts = {queries[q].lower().rstrip("?") for q in split.queries}
    assert not labeled_texts & {queries[q].lower().rstrip("?") for q in held.queries}
    summary = read_json(paths.stage("split") / "manifest.json")["summary"]
    twins_of_labeled = sum({"q": "r", "r": "q"}[q[0]] + q[1:] not in split.queries
                           for q in split.queries)
    assert summary["set_aside"] == {"validation: text of a labeled query": twins_of_labeled}
    assert len(held.queries) == 16 - 5 - twins_of_labeled


def test_corpus_pool_is_every_document_but_the_labeled_ones(tiny_cfg, tiny_paths):
    cfg = tiny_cfg("split.pool=corpus", "split.max_unlabeled_docs=null")
    split = _split(cfg, tiny_paths)
    dataset = load_beir(tiny_paths.beir)
    labeled_docs = {d for docs in (*split.prompt_train.values(), *split.prompt_eval.values()) for d in docs}
    assert set(split.unlabeled) == set(dataset.corpus) - labeled_docs
    test_docs = {d for docs in dataset.qrels["test"].values() for d in docs}
    assert test_docs <= set(split.unlabeled)  # no labels are used to choose the pool
