"""Metrics against hand-computed values and against BEIR's own evaluator."""

from __future__ import annotations

import math

import pytest

from sptar.reporting.metrics import evaluate_run

QRELS = {"q1": {"a": 1, "c": 1}, "q2": {"x": 2, "y": 1}, "q3": {"z": 1}}
RUN = {
    "q1": {"a": 0.9, "b": 0.8, "c": 0.7, "d": 0.1},  # relevant at ranks 1 and 3
    "q2": {"y": 0.9, "x": 0.5},  # graded: the less relevant first
    # q3 has no results at all: it must count as 0, not vanish from the mean
}


def test_hand_computed_values():
    mean, per_query = evaluate_run(QRELS, RUN)
    # q1: DCG = 1 + 1/log2(4) = 1.5; IDCG = 1 + 1/log2(3)
    ndcg_q1 = 1.5 / (1 + 1 / math.log2(3))
    assert per_query["q1"]["NDCG@10"] == pytest.approx(ndcg_q1, abs=1e-6)
    # q2: DCG = (2^1-1)/1 + (2^2-1)/log2(3) ; IDCG = 3 + 1/log2(3) (trec_eval uses gain = rel)
    dcg = 1 + 2 / math.log2(3)
    idcg = 2 + 1 / math.log2(3)
    assert per_query["q2"]["NDCG@10"] == pytest.approx(dcg / idcg, abs=1e-6)
    assert per_query["q3"]["NDCG@10"] == 0.0
    assert per_query["q1"]["MRR@10"] == 1.0 and per_query["q2"]["MRR@10"] == 1.0
    assert per_query["q1"]["MAP@100"] == pytest.approx((1 + 2 / 3) / 2)
    assert per_query["q1"]["P@10"] == pytest.approx(0.2)
    assert per_query["q1"]["Recall@10"] == 1.0
    assert mean["NDCG@10"] == pytest.approx(round((ndcg_q1 + dcg / idcg + 0) / 3, 5))
    assert mean["Recall@100"] == pytest.approx(round(2 / 3, 5))


def test_mrr_is_cut_at_10():
    run = {"q": {f"d{i:02d}": 1 - i / 100 for i in range(20)}}
    _, late = evaluate_run({"q": {"d11": 1}}, run)
    _, early = evaluate_run({"q": {"d09": 1}}, run)
    assert late["q"]["MRR@10"] == 0.0 and early["q"]["MRR@10"] == pytest.approx(0.1)


def test_agrees_with_beir_evaluator():
    from beir.retrieval.evaluation import EvaluateRetrieval

    qrels = {"q1": {"a": 1, "c": 1}, "q2": {"x": 2, "y": 1}}
    run = {"q1": RUN["q1"], "q2": RUN["q2"]}
    ndcg, _map, recall, precision = EvaluateRetrieval.evaluate(qrels, run, [1, 3, 5, 10, 100],
                                                               ignore_identical_ids=False)
    mean, _ = evaluate_run(qrels, run)
    for k in (1, 3, 5, 10, 100):
        assert mean[f"NDCG@{k}"] == pytest.approx(ndcg[f"NDCG@{k}"], abs=1e-4)
    assert mean["MAP@100"] == pytest.approx(_map["MAP@100"], abs=1e-4)
    assert mean["Recall@100"] == pytest.approx(recall["Recall@100"], abs=1e-4)
    assert mean["P@10"] == pytest.approx(precision["P@10"], abs=1e-4)
