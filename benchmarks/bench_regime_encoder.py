"""Encoding speed of SPTAR's regime encoder: SmolLM2-135M as a mean-pooled sentence-transformers
bi-encoder (``models.encoder: smollm2-135m``), all 30 layers and the lowest 8
(``models.encoder_layers: 8``), next to all-MiniLM-L6-v2, in documents per second.

All three run fp32 torch on CPU (``dense.backend: torch``, ``dense.precision: fp32``) on one thread
(set OMP_NUM_THREADS=1 too), over the same SciFact documents cut to ``--max-seq-length`` tokens,
in interleaved blocks so that a busy machine slows each alike; each encoder first encodes a few
documents untimed (warm-up). The encoder folders are built under the model cache on first use.

Usage: ``OMP_NUM_THREADS=1 python benchmarks/bench_regime_encoder.py [--docs 128]
[--max-seq-length 256] [--batch-size 32] [--block 32] [--corpus PATH]`` (``--corpus``: a BEIR
corpus.jsonl; default ``$SPTAR_DATA_MIRROR/scifact/corpus.jsonl``, the mirror defaulting to
``../shared/datasets``)
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from common import ROOT, report, setup

ENCODERS = {  # name: (alias, layers)
    "all-minilm-l6-v2": ("all-minilm-l6-v2", None),
    "smollm2-135m 30 layers": ("smollm2-135m", None),
    "smollm2-135m 8 layers": ("smollm2-135m", 8),
}
BASE = "all-minilm-l6-v2"
WARMUP_DOCS = 4


def corpus_texts(path: Path, count: int) -> list[str]:
    """The first ``count`` documents of a BEIR corpus as the encoder sees them."""
    from sptar.io.formats import doc_text

    texts = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            texts.append(doc_text(json.loads(line)))
            if len(texts) == count:
                break
    return texts


def encoders(max_seq_length: int) -> dict:
    from sptar.models import load_encoder

    return {name: load_encoder(alias, "cpu", max_seq_length, layers=layers)
            for name, (alias, layers) in ENCODERS.items()}


def timed_blocks(models: dict, texts: list[str], dense, block: int) -> dict[str, float]:
    """Seconds each encoder takes for all ``texts``, encoded block by block in turn."""
    from sptar.retrieval.dense import encode_texts

    seconds = dict.fromkeys(models, 0.0)
    for model in models.values():
        encode_texts(model, texts[:WARMUP_DOCS], dense)
    for start in range(0, len(texts), block):
        for name, model in models.items():
            began = time.perf_counter()
            encode_texts(model, texts[start:start + block], dense)
            seconds[name] += time.perf_counter() - began
    return seconds


def rows_for(models: dict, seconds: dict[str, float], docs: int) -> list[dict]:
    base = docs / seconds[BASE]
    rows = []
    for name, model in models.items():
        rate = docs / seconds[name]
        rows.append({"encoder": name, "layers": model[0].auto_model.config.num_hidden_layers,
                     "params_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
                     "docs": docs, "seconds": round(seconds[name], 2),
                     "docs_per_s": round(rate, 2), "vs_minilm": round(rate / base, 3)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=128)
    parser.add_argument("--max-seq-length", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--block", type=int, default=32, help="documents per interleaved block")
    parser.add_argument("--corpus", type=Path, default=None)
    args = parser.parse_args()
    mirror = Path(os.environ.get("SPTAR_DATA_MIRROR", ROOT.parent / "shared" / "datasets"))
    corpus = args.corpus or mirror / "scifact" / "corpus.jsonl"
    setup()
    import torch

    from sptar.config import DenseConfig

    threads = int(os.environ.get("OMP_NUM_THREADS", "1"))
    torch.set_num_threads(threads)
    texts = corpus_texts(corpus, args.docs)
    dense = DenseConfig(backend="torch", precision="fp32", batch_size=args.batch_size,
                        max_seq_length=args.max_seq_length)
    models = encoders(args.max_seq_length)
    seconds = timed_blocks(models, texts, dense, args.block)
    report("regime_encoder", rows_for(models, seconds, len(texts)),
           {"corpus": str(corpus), "max_seq_length": args.max_seq_length, "pooling": "mean",
            "batch_size": args.batch_size, "block": args.block, "threads": threads,
            "backend": "torch fp32", "torch": torch.__version__})


if __name__ == "__main__":
    main()
