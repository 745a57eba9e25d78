"""The teacher's gate (issue 30): does the LLM's query likelihood rank better than the encoder
it would teach? On a seeded sample of one seed's validation queries, BM25's top ``--depth`` is
reordered by ``ql-rerank-untuned`` (the plain LLM, no example) and ``ql-rerank`` (the tuned soft
prompt and its chosen examples), exactly as ``sptar evaluate`` does it; both are compared, on
the same queries, with bm25 and zero-shot (their per-query scores from the seed's evaluate
stage, run here on validation if missing). The test split plays no part.

Prints and writes ``benchmarks/results/ql-gate-<pipeline>-seed<N>.json``: nDCG@10 / Recall@100
per system, paired differences with t-test and randomization p, and the teacher's cost (pairs
scored, CPU seconds per pair).

    python benchmarks/ql_gate.py scifact-cpu --seed 1 --queries 150 --depth 20
"""

from __future__ import annotations

import argparse
import random
import resource
import time

from common import report, setup


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    setup()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pipeline")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--queries", type=int, default=150, help="validation queries sampled")
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--set", action="append", default=[], dest="common")
    args = parser.parse_args()

    from sptar.config import load_config
    from sptar.io.formats import read_json, read_run
    from sptar.outputs.dataset import load_corpus
    from sptar.outputs.evaluation import split_dir
    from sptar.outputs.fewshot import load_validation
    from sptar.reporting.metrics import evaluate_run
    from sptar.reporting.significance import compare_per_query
    from sptar.run.runner import execute, paths_for
    from sptar.stages.evaluate import rerank_by_likelihood
    from sptar.stages.repeats import seed_overrides

    base = load_config(args.pipeline, args.common)
    cfg = load_config(args.pipeline, [*args.common, *seed_overrides(base, args.seed),
                                      "evaluate.splits=[validation]", f"rerank.depth={args.depth}"])
    paths = paths_for(cfg)
    for stage, options in [("data", {}), ("split", {}), ("tune", {}),
                           ("evaluate", {"system": "bm25"}), ("evaluate", {"system": "zero-shot"})]:
        execute(stage, cfg, paths, **options)
    validation = load_validation(paths)
    sample = sorted(random.Random(f"ql-gate-{args.seed}").sample(
        sorted(validation.queries), min(args.queries, len(validation.queries))))
    queries = {q: validation.queries[q] for q in sample}
    qrels = {q: validation.qrels[q] for q in sample}
    per_query = {s: {q: v for q, v in read_json(split_dir(paths, s, "validation") /
                                                 "per_query.json").items() if q in queries}
                 for s in ("bm25", "zero-shot")}
    bm25_run = read_run(split_dir(paths, "bm25", "validation") / "run.trec")
    first = {q: bm25_run[q] for q in sample}
    corpus = load_corpus(paths)
    costs = {}
    for system in ("ql-rerank-untuned", "ql-rerank"):
        started, cpu = time.perf_counter(), cpu_seconds()
        run, counts = rerank_by_likelihood(cfg, paths, system, corpus, queries, first)
        counts |= {"wall_s": round(time.perf_counter() - started, 1),
                   "cpu_s_per_pair": round((cpu_seconds() - cpu) / counts["pairs_scored"], 4)}
        costs[system] = counts
        per_query[system] = evaluate_run(qrels, run)[1]
    rows = []
    for system, scores in per_query.items():
        row = {"system": system, "queries": len(scores)}
        for metric in ("NDCG@10", "Recall@100"):
            row[metric] = round(sum(v[metric] for v in scores.values()) / len(scores), 4)
        for other in ("bm25", "zero-shot"):
            if other == system:
                row |= {f"Δ vs {other}": "-", f"p t vs {other}": "-", f"p rand. vs {other}": "-"}
                continue
            test = compare_per_query(scores, per_query[other], "NDCG@10", seed=0)
            row |= {f"Δ vs {other}": round(test.mean_diff, 4), f"p t vs {other}": round(test.p_t, 4),
                    f"p rand. vs {other}": round(test.p_randomization, 4)}
        rows.append(row)
    report(f"ql-gate-{args.pipeline}-seed{args.seed}", rows,
           {"split": "validation", "sample": len(sample), "depth": args.depth, "cost": costs,
            "precision": cfg.rerank.precision})


if __name__ == "__main__":
    main()
