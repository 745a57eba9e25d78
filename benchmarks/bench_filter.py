"""BM25 consistency filter: bm25s vs rank-bm25 on the same 2,000 weak queries over SciFact
(same keep/drop decisions? time ratio), and the time to rank 50,000 queries over 50,000 documents.

The 2,000 queries are the stand-in weak set of ``standin_weak.py`` (real SciFact claims plus
title/sentence copies, near-duplicates and fragments; no LLM). The 50k x 50k figure uses a
synthetic corpus: Zipf-distributed words whose most frequent ones are the English stopwords, 150
words per document, 10-word queries drawn from their source document.
"""

from __future__ import annotations

import argparse
import itertools
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from common import prepared, report, timer
from standin_weak import standin_rows, write_generated

from sptar.retrieval.bm25 import BM25Searcher, tokenize

KS = (10, 20, 30, 70, 100)


def backends(cfg, corpus, rows) -> tuple[list[dict], dict]:
    texts, docs = [r["text"] for r in rows], [r["doc_id"] for r in rows]
    out, ranks, searchers = [], {}, {}
    for backend in ("bm25s", "rank-bm25"):
        bm25 = cfg.bm25.model_copy(update={"backend": backend})
        times: dict[str, float] = {}
        with timer(times, "index"):
            searchers[backend] = BM25Searcher(corpus, bm25)
        with timer(times, "rank"):
            ranks[backend] = searchers[backend].ranks(texts, docs)
        out.append({"method": f"ranks ({backend})", "queries": len(rows), "index_s": times["index"],
                    "search_s": times["rank"], "ms_per_query": 1000 * times["rank"] / len(rows)})
    # the plain way for reference: bm25s top-100 retrieval, then look for the source document
    times = {}
    with timer(times, "search"):
        run = searchers["bm25s"].search(dict(enumerate(texts)), top_k=100)
    out.append({"method": "bm25s top-100 search", "queries": len(rows), "index_s": "-",
                "search_s": times["search"], "ms_per_query": 1000 * times["search"] / len(rows)})
    searched = np.array([_competition_rank(run[i], d) for i, d in enumerate(docs)])
    notes = _agreement(ranks["bm25s"], ranks["rank-bm25"], searched, searchers, texts, docs, cfg, run)
    return out, notes


def _competition_rank(scores: dict[str, float], doc_id: str) -> int:
    if doc_id not in scores:
        return 0
    return 1 + sum(s > scores[doc_id] for s in scores.values())


def _agreement(fast, slow, searched, searchers, texts, docs, cfg, run) -> dict:
    notes = {}
    for k in KS:
        keep_fast, keep_slow = (fast > 0) & (fast <= k), (slow > 0) & (slow <= k)
        notes[f"k={k}: kept bm25s / rank-bm25"] = f"{keep_fast.sum()} / {keep_slow.sum()}"
        notes[f"k={k}: decisions that differ"] = int((keep_fast != keep_slow).sum())
    notes["pairs whose rank differs (any depth)"] = int((fast != slow).sum())
    found = (searched > 0)
    notes["top-100 search vs ranks(): same rank where found"] = \
        f"{int((searched[found] == fast[found]).sum())}/{int(found.sum())}"
    notes["top-100 search: not found but ranks() <= 100"] = int(((~found) & (fast > 0) & (fast <= 100)).sum())
    tied = sum(list(run[i].values()).count(run[i][d]) > 1 for i, d in enumerate(docs) if d in run[i])
    notes["source docs tied with another document in the top 100"] = tied
    differ = np.flatnonzero(fast != slow)
    if len(differ):
        gaps = [_flip_gap(searchers, texts[i], docs[i], cfg) for i in differ]
        notes["differing pairs: largest relative score gap of a document that changes side"] = \
            f"{max(gaps):.1e}"
    return notes


def _flip_gap(searchers, text, doc_id, cfg) -> float:
    """Over the documents that score above the source doc in one backend and not in the other:
    the largest |score - source score| / source score (rank-bm25's float64 scores)."""
    tokens = tokenize([text], cfg.bm25)[0]
    target = searchers["bm25s"].doc_ids.index(doc_id)
    fast = np.asarray(searchers["bm25s"]._index.get_scores(tokens), dtype=np.float64)
    slow = searchers["rank-bm25"]._index.get_scores(tokens)
    flipped = (fast > fast[target]) != (slow > slow[target])
    return float(np.max(np.abs(slow[flipped] - slow[target])) / slow[target]) if flipped.any() else 0.0


def synthetic(n_docs: int, n_queries: int, seed: int = 0):
    from bm25s.stopwords import STOPWORDS_EN

    rng = np.random.default_rng(seed)
    syllables = ["ka", "ro", "mi", "te", "su", "na", "lo", "pe", "di", "vu", "zo", "ba", "ge", "fi",
                 "hu", "jo"]
    made = ["".join(parts) for n in (3, 4) for parts in itertools.product(syllables, repeat=n)]
    made = [made[i] for i in rng.permutation(len(made))[:40_000 - len(STOPWORDS_EN)]]
    vocab = np.array([*STOPWORDS_EN, *made])  # the stopwords are the most frequent words
    p = 1.0 / np.arange(1, len(vocab) + 1)
    words = rng.choice(len(vocab), size=(n_docs, 150), p=p / p.sum())
    corpus = {f"d{i}": {"title": "", "text": " ".join(vocab[words[i]])} for i in range(n_docs)}
    source = rng.integers(0, n_docs, size=n_queries)
    picks = rng.integers(0, 150, size=(n_queries, 10))
    texts = [" ".join(vocab[words[d][picks[i]]]) for i, d in enumerate(source)]
    return corpus, texts, [f"d{d}" for d in source]


def large(cfg, n: int, baseline_sample: int) -> tuple[list[dict], dict]:
    corpus, texts, docs = synthetic(n, n)
    out, times = [], {}
    with timer(times, "index"):
        searcher = BM25Searcher(corpus, cfg.bm25)
    with timer(times, "rank"):
        ranks = searcher.ranks(texts, docs)
    out.append({"method": "ranks (bm25s)", "queries": n, "index_s": times["index"],
                "search_s": times["rank"], "ms_per_query": 1000 * times["rank"] / n})
    sample = slice(0, baseline_sample)
    with timer(times, "search"):
        searcher.search(dict(enumerate(texts[sample])), top_k=100)
    out.append({"method": f"bm25s top-100 search ({baseline_sample} queries)", "queries": baseline_sample,
                "index_s": "-", "search_s": times["search"],
                "ms_per_query": 1000 * times["search"] / baseline_sample})
    slow = cfg.bm25.model_copy(update={"backend": "rank-bm25"})
    with timer(times, "index_slow"):
        slow_searcher = BM25Searcher(corpus, slow)
    with timer(times, "rank_slow"):
        slow_ranks = slow_searcher.ranks(texts[sample], docs[sample])
    out.append({"method": f"ranks (rank-bm25, {baseline_sample} queries)", "queries": baseline_sample,
                "index_s": times["index_slow"], "search_s": times["rank_slow"],
                "ms_per_query": 1000 * times["rank_slow"] / baseline_sample})
    with timer(times, "stage"):
        summary = stage_end_to_end(corpus, texts, docs)
    out.append({"method": "sptar filter stage, 4 steps (end to end)", "queries": n, "index_s": "-",
                "search_s": times["stage"], "ms_per_query": 1000 * times["stage"] / n})
    notes = {
        f"{n}x{n}: filter stage kept": f"{summary['kept']} ({summary['kept_share']:.1%})",
        f"{n}x{n}: bm25s ranks, seconds for all queries": round(times["rank"], 1),
        f"{n}x{n}: rank-bm25, extrapolated seconds for all queries": round(times["rank_slow"] * n / baseline_sample),
        f"{n}x{n}: source doc ranked 1": f"{(ranks == 1).mean():.1%}",
        f"{n}x{n}: rank-bm25 agrees on the sample": f"{int((slow_ranks == ranks[sample]).sum())}/{baseline_sample}",
    }
    return out, notes


def stage_end_to_end(corpus, texts, docs) -> dict:
    """Run ``sptar filter`` (index, ranks, every step, writing) on the synthetic set."""
    from sptar.config import load_config
    from sptar.io.formats import write_corpus, write_qrels, write_queries
    from sptar.run.runner import execute, paths_for

    with tempfile.TemporaryDirectory() as tmp:
        mirror = Path(tmp) / "mirror" / "synthetic"
        write_corpus(mirror / "corpus.jsonl", corpus)
        write_queries(mirror / "queries.jsonl", {"t": texts[0]})
        write_qrels(mirror / "qrels" / "test.tsv", {"t": {docs[0]: 1}})
        steps = "[{bm25_consistency: {k: 30}}, dedup, {length: {min_words: 3}}, {logprob_topn: {fraction: 0.8}}]"
        cfg = load_config("scifact-quick", ["dataset.name=synthetic", "dataset.download=false",
                                            f"filter.steps={steps}"])
        os.environ["SPTAR_DATA_MIRROR"] = str(mirror.parent)
        paths = paths_for(cfg, Path(tmp) / "data")
        execute("data", cfg, paths)
        rng = np.random.default_rng(1)
        rows = [{"query_id": f"gen-{d}-{i}", "doc_id": d, "text": t, "logprob": float(rng.normal(-2, 0.5)),
                 "kind": "synthetic"} for i, (t, d) in enumerate(zip(texts, docs, strict=True))]
        write_generated(paths.stage("generate", "sptar"), rows, "sptar")
        start = time.perf_counter()
        summary = execute("filter", cfg, paths, variant="sptar")["summary"]
        summary["seconds"] = time.perf_counter() - start
        return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--large", type=int, default=50_000, help="documents = queries (0: skip)")
    parser.add_argument("--baseline-sample", type=int, default=200)
    args = parser.parse_args()
    cfg, _, _ = prepared()
    from sptar.outputs.dataset import load_beir
    from sptar.run.runner import paths_for

    dataset = load_beir(paths_for(cfg).beir)
    rows = standin_rows(dataset, args.queries)
    out, notes = backends(cfg, dataset.corpus, rows)
    notes = {"dataset": f"{cfg.dataset.name} ({len(dataset.corpus)} docs), {len(rows)} stand-in weak queries",
             "time ratio ranks rank-bm25 / bm25s": out[1]["search_s"] / out[0]["search_s"], **notes}
    if args.large:
        more, large_notes = large(cfg, args.large, args.baseline_sample)
        out += more
        notes.update(large_notes)
    report("filter", out, notes)


if __name__ == "__main__":
    main()
