"""The few-shot split: seeded, no evaluation data leaks into training or the pool."""

from __future__ import annotations

import pytest

from sptar.data import load_beir
from sptar.errors import SptarError
from sptar.split import load_split, sample_split
from sptar.stages import execute, paths_for


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
    cfg = tiny_cfg("split.pool=not-in-eval", "split.max_unlabeled_docs=null")
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


def test_pairs_per_query_cap(tiny_cfg, tiny_paths):
    split = _split(tiny_cfg("split.max_pairs_per_query=1"), tiny_paths)
    assert all(len(docs) == 1 for qrels in (split.prompt_train, split.prompt_eval)
               for docs in qrels.values())
    assert len(split.pairs("labeled")) == len(split.queries) == 7
