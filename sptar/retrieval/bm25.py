"""BM25 over the whole corpus (title + text): ``bm25s`` by default, ``rank-bm25`` as a second.

Both backends see the same tokens (bm25s' tokenizer: lower-case, English stopwords, Snowball
stemmer) and score with Lucene's BM25 (idf = ln(1 + (N - n + 0.5) / (n + 0.5))), so they rank
alike; rank-bm25's scores are (k1 + 1) times bm25s' (a constant factor). Documents that share
no term with the query are not returned.

:meth:`BM25Searcher.ranks` answers "where does BM25 rank this one document for this query" for
many (query, document) pairs at once, from each query's full score vector (no top-k cut, so the
answer does not depend on how ties are broken).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence

import numpy as np

from sptar.config import BM25Config
from sptar.io.formats import Corpus, Run, doc_text

log = logging.getLogger(__name__)


def _bm25s():
    """bm25s, imported; it sets its own logger to DEBUG on import, which we turn back down."""
    import bm25s

    logging.getLogger("bm25s").setLevel(logging.WARNING)
    return bm25s


def tokenize(texts: list[str], cfg: BM25Config) -> list[list[str]]:
    import Stemmer

    bm25s = _bm25s()

    stemmer = Stemmer.Stemmer(cfg.stemmer) if cfg.stemmer != "none" else None
    stopwords = cfg.stopwords if cfg.stopwords != "none" else None
    return bm25s.tokenize(texts, stopwords=stopwords, stemmer=stemmer, return_ids=False,
                          show_progress=False)


def _lucene_okapi():
    from rank_bm25 import BM25Okapi

    class LuceneBM25Okapi(BM25Okapi):
        """rank-bm25's Okapi BM25 with Lucene's non-negative idf (as bm25s' 'lucene' method)."""

        def _calc_idf(self, nd):
            n_docs = self.corpus_size
            self.idf = {word: math.log(1.0 + (n_docs - freq + 0.5) / (freq + 0.5))
                        for word, freq in nd.items()}

    return LuceneBM25Okapi


class BM25Searcher:
    """An index over a corpus that answers many queries at once."""

    def __init__(self, corpus: Corpus, cfg: BM25Config):
        self.cfg = cfg
        self.doc_ids = list(corpus)
        tokens = tokenize([doc_text(corpus[d]) for d in self.doc_ids], cfg)
        if cfg.backend == "bm25s":
            self._index = _bm25s().BM25(k1=cfg.k1, b=cfg.b, method="lucene")
            self._index.index(tokens, show_progress=False)
        else:
            self._index = _lucene_okapi()(tokens, k1=cfg.k1, b=cfg.b)

    def search(self, queries: Mapping[str, str], top_k: int | None = None) -> Run:
        """Top-k documents per query with positive scores, as ``{qid: {docid: score}}``."""
        top_k = min(top_k or self.cfg.top_k, len(self.doc_ids))
        query_ids = list(queries)
        tokens = tokenize([queries[q] for q in query_ids], self.cfg)
        if self.cfg.backend == "bm25s":
            indices, scores = self._search_bm25s(tokens, top_k)
        else:
            indices, scores = self._search_rank_bm25(tokens, top_k)
        run: Run = {}
        for row, query_id in enumerate(query_ids):
            keep = scores[row] > 0
            run[query_id] = {self.doc_ids[i]: float(s)
                             for i, s in zip(indices[row][keep], scores[row][keep], strict=True)}
        return run

    def ranks(self, queries: Sequence[str], doc_ids: Sequence[str]) -> np.ndarray:
        """The rank of ``doc_ids[i]`` among all documents for ``queries[i]``, for every i.

        The rank is 1 + the number of documents that score strictly higher (tied documents share
        the best rank of their group), or 0 when the document scores 0 (shares no term with the
        query), i.e. when BM25 would not return it at any depth.
        """
        from tqdm.auto import tqdm

        if len(queries) != len(doc_ids):
            raise ValueError(f"{len(queries)} queries but {len(doc_ids)} document ids")
        position = {doc_id: i for i, doc_id in enumerate(self.doc_ids)}
        targets = np.array([position[d] for d in doc_ids], dtype=np.int64)
        tokens = tokenize(list(queries), self.cfg)
        ranks = np.zeros(len(tokens), dtype=np.int64)
        for row, query in enumerate(tqdm(tokens, desc="BM25 ranks", unit="query",
                                         disable=len(tokens) < 5000)):
            if not query:
                continue
            scores = self._index.get_scores(query)  # same method name in bm25s and rank-bm25
            own = scores[targets[row]]
            if own > 0:
                ranks[row] = 1 + int(np.count_nonzero(scores > own))
        return ranks

    def _search_bm25s(self, tokens: list[list[str]], top_k: int):
        indices = np.zeros((len(tokens), top_k), dtype=np.int64)
        scores = np.zeros((len(tokens), top_k), dtype=np.float32)
        known = [i for i, t in enumerate(tokens) if t]  # bm25s cannot take an empty query
        if known:
            found, found_scores = self._index.retrieve([tokens[i] for i in known], k=top_k,
                                                       show_progress=False, n_threads=0)
            indices[known], scores[known] = found, found_scores
        return indices, scores

    def _search_rank_bm25(self, tokens: list[list[str]], top_k: int):
        indices = np.zeros((len(tokens), top_k), dtype=np.int64)
        scores = np.zeros((len(tokens), top_k), dtype=np.float64)
        for row, query in enumerate(tokens):
            all_scores = self._index.get_scores(query)
            top = np.argpartition(-all_scores, top_k - 1)[:top_k]
            top = top[np.argsort(-all_scores[top], kind="stable")]
            indices[row], scores[row] = top, all_scores[top]
        return indices, scores


# ---------------------------------------------------------------- recorded ranks

RANK_DEPTH = 100  # ``bm25_rank`` is recorded up to max(100, the largest k of the BM25 filter)


def search_depth(cfg) -> int:
    """How deep ``bm25_rank`` is recorded for a pipeline ``cfg`` (its ``filter.steps``)."""
    ks = [step.params.k for step in cfg.filter.steps if step.name == "bm25_consistency"]
    return max([RANK_DEPTH, *ks])


def recorded_rank(rank: int, depth: int) -> int | None:
    """The rank as ``bm25_rank`` records it: null when not retrieved within ``depth``."""
    return rank if 0 < rank <= depth else None
