"""Corpus encoding: plain fp32 torch vs ``dense.precision: bf16`` (CPU autocast), docs/s and nDCG@10.

Both encode the same documents with the same encoder (``models.encoder``) and settings
(``dense.batch_size``, ``dense.max_seq_length``), in interleaved blocks so that a busy machine
slows both alike; then each searches the evaluation split with a flat FAISS index and is scored.
Nothing is read from or written to the embedding cache.

Usage: ``python benchmarks/bench_encode.py [--pipeline scifact-quick] [--block 512]``
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from common import prepared, report

from sptar.dense import build_index, encode_texts, search_index
from sptar.formats import doc_text
from sptar.metrics import evaluate_run
from sptar.models import load_encoder

PRECISIONS = ("fp32", "bf16")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline", default="scifact-quick")
    parser.add_argument("--block", type=int, default=512, help="documents per interleaved block")
    args = parser.parse_args()

    import torch

    cfg, paths, dataset = prepared(args.pipeline)
    qrels = dataset.qrels[cfg.evaluate.split]
    queries = {qid: dataset.queries[qid] for qid in qrels}
    doc_ids = list(dataset.corpus)
    texts = [doc_text(dataset.corpus[d]) for d in doc_ids]
    model = load_encoder(cfg.models.encoder, "cpu", cfg.dense.max_seq_length)
    settings = {p: cfg.dense.model_copy(update={"precision": p}) for p in PRECISIONS}
    parts: dict[str, list[np.ndarray]] = {p: [] for p in PRECISIONS}
    seconds = dict.fromkeys(PRECISIONS, 0.0)
    for start in range(0, len(texts), args.block):
        for precision in PRECISIONS:
            tick = time.perf_counter()
            parts[precision].append(encode_texts(model, texts[start:start + args.block],
                                                 settings[precision]))
            seconds[precision] += time.perf_counter() - tick
        print(f"  {start + len(parts['fp32'][-1])}/{len(texts)} docs: "
              + ", ".join(f"{p} {seconds[p]:.0f} s" for p in PRECISIONS), flush=True)

    query_ids = list(queries)
    rows, embeddings = [], {}
    for precision in PRECISIONS:
        docs = embeddings[precision] = np.concatenate(parts[precision])
        query_vectors = encode_texts(model, [queries[q] for q in query_ids], settings[precision])
        run = search_index(build_index(docs, cfg.dense), doc_ids, query_ids, query_vectors,
                           cfg.dense.top_k)
        mean, _ = evaluate_run(qrels, run)
        rows.append({"precision": precision, "docs": len(docs),
                     "seconds": round(seconds[precision], 1),
                     "docs/s": round(len(docs) / seconds[precision], 2),
                     "speedup": round(seconds["fp32"] / seconds[precision], 2),
                     "NDCG@10": round(mean["NDCG@10"], 4), "Recall@100": round(mean["Recall@100"], 4)})
    cosine = (embeddings["fp32"] * embeddings["bf16"]).sum(axis=1)
    report("encode", rows, {
        "dataset": f"{cfg.dataset.name} ({len(doc_ids)} docs, {len(query_ids)} queries)",
        "encoder": cfg.models.encoder, "batch_size": cfg.dense.batch_size,
        "max_seq_length": cfg.dense.max_seq_length, "threads": torch.get_num_threads(),
        "cosine(fp32, bf16) min / mean": [round(float(cosine.min()), 6),
                                          round(float(cosine.mean()), 6)],
    })


if __name__ == "__main__":
    main()
