"""Retriever training steps/s: plain fp32 vs ``train.precision: bf16`` (CPU autocast) vs bf16
with ``train.attention_dropout: 0`` (fused CPU attention), one run.

All train the base encoder from scratch on the same first ``--pairs`` training rows of the
pipeline's sptar variant (labeled + filtered weak pairs, as ``sptar train`` builds them, after
``make filter``; the labeled pairs alone before), with the pipeline's hard negatives, MNRL at its
batch size and sequence length, one epoch. Reported: seconds per step, steps/s, the ratio, and
the final training loss.
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import replace
from pathlib import Path

import torch
from common import prepared, report

from sptar.models import resolve_device
from sptar.outputs.dataset import load_corpus
from sptar.retrieval.bm25 import BM25Searcher
from sptar.retrieval.trainer import fit
from sptar.retrieval.trainset import add_hard_negatives, build_training_data

SETTINGS = {  # name: train config overrides; the first is the plain way
    "fp32": {"precision": "fp32", "attention_dropout": None},
    "bf16": {"precision": "bf16", "attention_dropout": None},
    "bf16, attention dropout 0": {"precision": "bf16", "attention_dropout": 0.0},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline", default="scifact-quick")
    parser.add_argument("--pairs", type=int, default=256, help="training rows (steps = rows/batch)")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg, paths, _ = prepared(args.pipeline)
    corpus = load_corpus(paths)
    variant = "sptar" if (paths.stage("filter", "sptar") / "manifest.json").is_file() else "wo-aug"
    data = build_training_data(cfg, paths, variant, corpus)
    data = replace(data, train=data.train[:args.pairs], dev=[])
    tc = cfg.train
    add_hard_negatives(cfg, data, corpus, BM25Searcher(corpus, cfg.bm25))
    device = resolve_device(cfg.device)
    rows = []
    for name, update in SETTINGS.items():
        run_cfg = cfg.model_copy(update={"train": tc.model_copy(
            update={**update, "epochs": 1, "dev_fraction": 0.0})})
        with tempfile.TemporaryDirectory() as work:
            _, metrics, _ = fit(run_cfg, data, corpus, None, Path(work), device)
        steps, seconds = metrics["global_step"], metrics["train_runtime"]
        rows.append({"setting": name, "rows": len(data.train), "steps": steps,
                     "seconds": round(seconds, 1), "s/step": round(seconds / steps, 3),
                     "steps/s": round(steps / seconds, 4), "train_loss": round(metrics["training_loss"], 4)})
    for row in rows:
        row["speedup"] = round(rows[0]["s/step"] / row["s/step"], 2)
    report("train", rows, {"pipeline": args.pipeline, "variant": variant, "device": device,
                           "threads": torch.get_num_threads(),
                           "batch_size": tc.batch_size, "hard_negatives": tc.hard_negatives,
                           "max_seq_length": tc.max_seq_length})


if __name__ == "__main__":
    main()
