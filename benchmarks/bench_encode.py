"""Corpus encoding: plain fp32 torch vs bf16 torch (CPU autocast) vs OpenVINO (float and int8),
docs/s, nDCG@10, and how close each encoding's document and query embeddings come to fp32 torch's.

OpenVINO runs as ``dense.backend: auto`` does on CPU (bf16 where the CPU computes bf16 natively);
``openvino int8`` as ``dense.quantize: int8``, its quantisation time (calibration on
``dense.calibration_docs`` corpus documents) counted in its seconds.
All encode the same documents with the same encoder (``models.encoder``) and settings
(``dense.batch_size``, ``dense.max_seq_length``), in interleaved blocks so that a busy machine
slows both alike; then each searches the validation queries with a flat FAISS index and is scored.
Nothing is read from or written to the embedding cache.

Usage: ``python benchmarks/bench_encode.py [--pipeline scifact-quick] [--block 512] [--docs N]``
(``--docs``: only the first N documents, a quick check whose nDCG@10 searches that subset only)
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from common import prepared, report, validation_queries

from sptar.io.formats import doc_text
from sptar.models import load_encoder
from sptar.reporting.metrics import evaluate_run
from sptar.retrieval.dense import (
    build_index,
    calibration_texts,
    encode_texts,
    quantized,
    search_index,
)

SETTINGS = {  # name: dense config overrides
    "torch fp32": {"backend": "torch", "precision": "fp32"},
    "torch bf16": {"backend": "torch", "precision": "bf16"},
    "openvino": {"backend": "openvino", "precision": "auto", "quantize": "none"},
    "openvino int8": {"backend": "openvino", "precision": "auto", "quantize": "int8"},
}
BASE = "torch fp32"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline", default="scifact-quick")
    parser.add_argument("--block", type=int, default=512, help="documents per interleaved block")
    parser.add_argument("--docs", type=int, default=None, help="only the first N documents")
    args = parser.parse_args()

    import torch

    cfg, paths, dataset = prepared(args.pipeline)
    queries, qrels = validation_queries(cfg, paths)
    doc_ids = list(dataset.corpus)[:args.docs]
    texts = [doc_text(dataset.corpus[d]) for d in doc_ids]
    model = load_encoder(cfg.models.encoder, "cpu", cfg.dense.max_seq_length)
    settings = {name: cfg.dense.model_copy(update=update) for name, update in SETTINGS.items()}
    calibration = {name: calibration_texts(dataset.corpus, setting) if quantized(model, setting) else None
                   for name, setting in settings.items()}
    parts: dict[str, list[np.ndarray]] = {name: [] for name in SETTINGS}
    seconds = dict.fromkeys(SETTINGS, 0.0)
    for start in range(0, len(texts), args.block):
        for name in SETTINGS:
            tick = time.perf_counter()
            parts[name].append(encode_texts(model, texts[start:start + args.block], settings[name],
                                            calibration=calibration[name]))
            seconds[name] += time.perf_counter() - tick
        print(f"  {start + len(parts[BASE][-1])}/{len(texts)} docs: "
              + ", ".join(f"{p} {seconds[p]:.0f} s" for p in SETTINGS), flush=True)

    query_ids = list(queries)
    rows, embeddings, query_embeddings = [], {}, {}
    for name in SETTINGS:
        docs = embeddings[name] = np.concatenate(parts[name])
        query_vectors = query_embeddings[name] = encode_texts(
            model, [queries[q] for q in query_ids], settings[name], calibration=calibration[name])
        run = search_index(build_index(docs, cfg.dense), doc_ids, query_ids, query_vectors,
                           cfg.dense.top_k)
        mean, _ = evaluate_run(qrels, run)
        rows.append({"encoding": name, "docs": len(docs),
                     "seconds": round(seconds[name], 1),
                     "docs/s": round(len(docs) / seconds[name], 2),
                     "speedup": round(seconds[BASE] / seconds[name], 2),
                     "NDCG@10": round(mean["NDCG@10"], 4), "Recall@100": round(mean["Recall@100"], 4)})
    cosines = {(what, name): (vectors[BASE] * vectors[name]).sum(axis=1)
               for what, vectors in (("docs", embeddings), ("queries", query_embeddings))
               for name in SETTINGS if name != BASE}
    report("encode", rows, {
        "dataset": f"{cfg.dataset.name} ({len(doc_ids)} docs, {len(query_ids)} queries)",
        "encoder": cfg.models.encoder, "batch_size": cfg.dense.batch_size,
        "max_seq_length": cfg.dense.max_seq_length, "threads": torch.get_num_threads(),
        **{f"{what}: cosine({BASE}, {name}) min / mean / share below 0.99":
           [round(float(c.min()), 6), round(float(c.mean()), 6), round(float((c < 0.99).mean()), 4)]
           for (what, name), c in cosines.items()},
    })


if __name__ == "__main__":
    main()
