"""Retrieval metrics with pytrec_eval, named as BEIR names them (``NDCG@10``, ``Recall@100``…).

Every query of the qrels counts: a query the run has no results for scores 0 (pytrec_eval
would silently leave it out of the mean).
"""

from __future__ import annotations

from collections.abc import Mapping

# BEIR name -> (pytrec_eval measure, its result key, cut-off applied to the run first)
METRICS: dict[str, tuple[str, str, int | None]] = {}
for _k in (1, 3, 5, 10, 100):
    METRICS[f"NDCG@{_k}"] = (f"ndcg_cut.{_k}", f"ndcg_cut_{_k}", None)
for _k in (10, 100):
    METRICS[f"MAP@{_k}"] = (f"map_cut.{_k}", f"map_cut_{_k}", None)
for _k in (10, 100, 1000):
    METRICS[f"Recall@{_k}"] = (f"recall.{_k}", f"recall_{_k}", None)
METRICS["P@10"] = ("P.10", "P_10", None)
METRICS["MRR@10"] = ("recip_rank", "recip_rank", 10)
MAIN_METRICS = ("NDCG@10", "MAP@100", "Recall@100", "MRR@10")


def _top(run: Mapping[str, Mapping[str, float]], k: int) -> dict[str, dict[str, float]]:
    return {qid: dict(sorted(docs.items(), key=lambda item: (-item[1], item[0]))[:k])
            for qid, docs in run.items()}


def evaluate_run(qrels: Mapping[str, Mapping[str, int]], run: Mapping[str, Mapping[str, float]],
                 metrics: tuple[str, ...] = tuple(METRICS)):
    """Return ``(mean per metric, {query id: {metric: value}})`` over every query in ``qrels``."""
    import pytrec_eval

    qrels = {qid: {did: int(rel) for did, rel in docs.items()} for qid, docs in qrels.items()}
    per_query: dict[str, dict[str, float]] = {qid: {} for qid in qrels}
    by_cut: dict[int | None, list[str]] = {}
    for name in metrics:
        by_cut.setdefault(METRICS[name][2], []).append(name)
    for cut, names in by_cut.items():
        scored = _top(run, cut) if cut else run
        scored = {qid: {did: float(s) for did, s in docs.items()} for qid, docs in scored.items()
                  if qid in qrels and docs}
        evaluator = pytrec_eval.RelevanceEvaluator(qrels, {METRICS[n][0] for n in names})
        results = evaluator.evaluate(scored)
        for qid in qrels:
            for name in names:
                per_query[qid][name] = float(results.get(qid, {}).get(METRICS[name][1], 0.0))
    count = max(len(per_query), 1)
    mean = {name: round(sum(v[name] for v in per_query.values()) / count, 5) for name in metrics}
    return mean, per_query
