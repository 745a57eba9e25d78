"""The two BM25 backends rank alike; BM25 finds the obvious document."""

from __future__ import annotations

import numpy as np

from sptar.config import BM25Config
from sptar.outputs.dataset import load_beir
from sptar.retrieval.bm25 import BM25Searcher

from .conftest import FIXTURES


def _tiny():
    return load_beir(FIXTURES / "beir" / "tiny")


def _compare(corpus, queries, k=10):
    cfg = BM25Config()
    fast = BM25Searcher(corpus, cfg).search(queries, top_k=k)
    slow = BM25Searcher(corpus, cfg.model_copy(update={"backend": "rank-bm25"})).search(queries, top_k=k)
    for qid in queries:
        a, b = fast[qid], slow[qid]
        assert len(a) == len(b)
        # the same documents, except among those tied with the last one of a full top-k
        last = min(a.values(), default=0.0)
        assert {d for d in a if a[d] > last + 1e-6} <= set(b)
        assert {d for d in b if b[d] / (cfg.k1 + 1) > last + 1e-6} <= set(a)
        if len(a) < k:
            assert set(a) == set(b)
        shared = sorted(set(a) & set(b))
        # rank-bm25 scores are (k1 + 1) times bm25s' Lucene scores
        np.testing.assert_allclose([b[d] / (cfg.k1 + 1) for d in shared], [a[d] for d in shared],
                                   rtol=1e-4)
        ranked_a = sorted(a, key=lambda d: (-round(a[d], 4), d))
        ranked_b = sorted(b, key=lambda d: (-round(b[d] / (cfg.k1 + 1), 4), d))
        assert ranked_a[: len(shared)] == ranked_b[: len(shared)]
    return fast


def test_backends_agree_on_tiny():
    data = _tiny()
    run = _compare(data.corpus, data.queries, k=36)
    assert next(iter(sorted(run["q07"].items(), key=lambda x: -x[1])))[0] == "d08"
    assert all(scores for scores in run.values())


def test_backends_agree_on_a_real_slice(scifact_slice):
    data = load_beir(scifact_slice / "scifact-slice")
    queries = dict(list(data.queries.items())[:40])
    _compare(data.corpus, queries, k=50)


def test_query_without_known_terms_returns_nothing():
    data = _tiny()
    run = BM25Searcher(data.corpus, BM25Config()).search({"q": "the of and", "r": "zebra"})
    assert run == {"q": {}, "r": {}}
