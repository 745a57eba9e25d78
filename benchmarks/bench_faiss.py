"""Dense search: FAISS exact inner product vs BEIR's exact search, on the same embeddings."""

from __future__ import annotations

import numpy as np
from common import prepared, report, timer, validation_queries

from sptar.io.formats import sha256_file
from sptar.models import load_encoder, model_fingerprint, resolve_model
from sptar.reporting.metrics import evaluate_run
from sptar.retrieval.dense import (
    build_index,
    embedding_key,
    encode_corpus,
    encode_texts,
    search_index,
)


class Precomputed:
    """A BEIR 'model' that returns embeddings computed beforehand (so only search is timed)."""

    def __init__(self, corpus, doc_embeddings, query_embeddings):
        self.rows = {id(doc): row for row, doc in enumerate(corpus.values())}
        self.docs, self.queries = doc_embeddings, query_embeddings

    def encode_queries(self, queries, **_):
        import torch

        return torch.from_numpy(self.queries[: len(queries)])

    def encode_corpus(self, docs, **_):
        import torch

        return torch.from_numpy(self.docs[[self.rows[id(doc)] for doc in docs]])


def main() -> None:
    from beir.retrieval.search.dense.exact_search import DenseRetrievalExactSearch

    cfg, paths, dataset = prepared()
    queries, qrels = validation_queries(cfg, paths)
    model = load_encoder(cfg.models.encoder, "cpu", cfg.dense.max_seq_length)
    key = embedding_key(model_fingerprint(resolve_model(cfg.models.encoder)),
                        sha256_file(paths.beir / "corpus.jsonl")[:16], model, cfg.dense)
    docs = encode_corpus(model, dataset.corpus, cfg.dense, paths.cache / "embeddings" / key)
    query_ids = list(queries)
    query_embeddings = encode_texts(model, [queries[q] for q in query_ids], cfg.dense)

    times: dict[str, float] = {}
    with timer(times, "faiss"):
        index = build_index(docs, cfg.dense)
        ours = search_index(index, list(dataset.corpus), query_ids, query_embeddings, 1000)
    beir = DenseRetrievalExactSearch(Precomputed(dataset.corpus, docs, query_embeddings),
                                     batch_size=128, show_progress_bar=False)
    with timer(times, "beir"):
        theirs = beir.search(dataset.corpus, dict(zip(query_ids, query_ids, strict=True)), 1000,
                             "dot", return_sorted=True)

    def top10(run, qid):  # BEIR drops a document whose id equals the query id; so do we here
        ranked = sorted(((d, s) for d, s in run[qid].items() if d != qid), key=lambda x: (-x[1], x[0]))
        return [d for d, _ in ranked[:10]]

    identical = sum(top10(ours, q) == top10(theirs, q) for q in query_ids)
    same_set = sum(set(top10(ours, q)) == set(top10(theirs, q)) for q in query_ids)
    max_diff = max(abs(ours[q][d] - theirs[q][d]) for q in query_ids for d in top10(ours, q)
                   if d in theirs[q])
    rows = []
    for name, run in (("faiss-flat-ip", ours), ("beir-exact", theirs)):
        mean, _ = evaluate_run(qrels, run)
        rows.append({"search": name, "seconds": times["faiss" if name.startswith("faiss") else "beir"],
                     "NDCG@10": mean["NDCG@10"]})
    report("faiss", rows, {
        "dataset": f"{cfg.dataset.name} ({len(docs)} docs x {docs.shape[1]} dims, "
                   f"{len(query_ids)} queries, top-1000)",
        "speedup (beir / faiss)": times["beir"] / times["faiss"],
        "queries with identical top-10": f"{identical}/{len(query_ids)}",
        "queries with the same top-10 set": f"{same_set}/{len(query_ids)}",
        "max |score difference| in top-10": float(max_diff),
        "note": "embeddings precomputed once; only index build + search are timed",
    })
    assert np.isfinite(max_diff)


if __name__ == "__main__":
    main()
