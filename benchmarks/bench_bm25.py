"""BM25: bm25s vs rank-bm25 on SciFact's validation queries — index + search time, nDCG@10, agreement."""

from __future__ import annotations

from common import prepared, report, timer, validation_queries

from sptar.reporting.metrics import evaluate_run
from sptar.retrieval.bm25 import BM25Searcher


def main() -> None:
    cfg, paths, dataset = prepared()
    queries, qrels = validation_queries(cfg, paths)
    rows, runs = [], {}
    for backend in ("bm25s", "rank-bm25"):
        times: dict[str, float] = {}
        bm25 = cfg.bm25.model_copy(update={"backend": backend})
        with timer(times, "index"):
            searcher = BM25Searcher(dataset.corpus, bm25)
        with timer(times, "search"):
            runs[backend] = searcher.search(queries, top_k=100)
        mean, _ = evaluate_run(qrels, runs[backend])
        rows.append({"backend": backend, "index_s": times["index"], "search_s": times["search"],
                     "total_s": times["index"] + times["search"], "NDCG@10": mean["NDCG@10"],
                     "Recall@100": mean["Recall@100"]})
    top10 = {b: {q: sorted(r, key=lambda d, r=r: (-r[d], d))[:10] for q, r in run.items()}
             for b, run in runs.items()}
    same = sum(top10["bm25s"][q] == top10["rank-bm25"][q] for q in queries)
    same_set = sum(set(top10["bm25s"][q]) == set(top10["rank-bm25"][q]) for q in queries)
    report("bm25", rows, {
        "dataset": f"{cfg.dataset.name} ({len(dataset.corpus)} docs, {len(queries)} validation queries)",
        "speedup_total (rank-bm25 / bm25s)": rows[1]["total_s"] / rows[0]["total_s"],
        "speedup_search (rank-bm25 / bm25s)": rows[1]["search_s"] / rows[0]["search_s"],
        "queries with identical top-10 order": f"{same}/{len(queries)}",
        "queries with identical top-10 set": f"{same_set}/{len(queries)}",
    })


if __name__ == "__main__":
    main()
