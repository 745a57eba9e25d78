"""Train stage: fine-tune the bi-encoder on labeled (+ weak) pairs.

Variants: ``wo-aug`` trains on the labeled pairs only (prompt-train and prompt-eval of the
split); ``inpars`` and ``sptar`` add that variant's filtered weak pairs. The loss
(``train.loss``) is MultipleNegativesRankingLoss (every other positive in the batch is a
negative; a batch never holds the same text twice), optionally with BM25-mined hard negatives
(``train.hard_negatives``); or GPL's margin-MSE: the LLM teacher (``train.teacher``, the
ql-rerank scorer) scores each row's query against its positive and its hard negatives,
``log P(query | document)``, and the student's cosine margins are fit to the teacher's (times
``train.teacher_scale``). The teacher's scores are cached (:mod:`sptar.llm.teacher`).
With ``train.dev_fraction`` > 0, that share of the labeled queries is held out as a dev set
(their positives plus BM25 candidates as its corpus) and the checkpoint with the best dev
nDCG@10 is kept.

Reads: ``data/beir/<dataset>/corpus.jsonl``, the labeled part of ``split/`` (its
``qrels/judged.tsv`` keeps every document judged relevant to a labeled query out of its hard
negatives), for ``inpars`` / ``sptar``, ``filter/<variant>/{queries.jsonl, qrels/train.tsv}``, and
for margin-MSE with the tuned teacher, ``tune/`` (the soft prompt).
The validation and test splits (their queries and qrels) are never read: nothing under
``data/beir/<dataset>/qrels/``, nor ``split/validation/``.
Writes to ``data/runs/<experiment>/train/<variant>/``: ``model/`` (a sentence-transformers
folder: ``SentenceTransformer(path)`` loads it), ``pairs.jsonl`` (every training and dev row:
query id and text, doc id, source, hard negative ids, with margin-MSE the teacher's margins),
``train_log.jsonl`` (loss per logging
step, dev scores), ``manifest.json``.

Under ``torchrun`` (or ``accelerate launch``) the trainer runs data-parallel (DDP), one process per
GPU; rank 0 alone writes the outputs and the manifest, the other ranks end without one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

from sptar.config import ENCODER_KEYS, Config
from sptar.errors import SptarError
from sptar.io.atomic import remove_stale_temporaries
from sptar.io.manifest import manifests
from sptar.io.paths import Paths
from sptar.outputs.dataset import corpus_file, load_corpus
from sptar.outputs.model import write_trained
from sptar.retrieval.trainer import fit
from sptar.retrieval.trainset import (
    DEV,
    LABELED,
    WEAK,
    TrainingData,
    add_hard_negatives,
    build_training_data,
    train_seed,
)
from sptar.run.resources import check_disk_space, folder_bytes, memory_guard
from sptar.run.runner import PARTIAL
from sptar.run.shards import barrier, group_rank, launched, resolve_shard

log = logging.getLogger(__name__)

TRAINER_DIR = ".trainer"  # the trainer's output_dir (checkpoints for model selection), removed

# ---------------------------------------------------------------- stage


def sections(variant: str) -> tuple[str, ...]:
    return ("dataset.name", *ENCODER_KEYS, "models.trust_remote_code", "train",
            "bm25", "seed", "device")


def output_dir(paths: Paths, variant: str) -> Path:
    return paths.stage("train", variant)


def upstream(cfg: Config, paths: Paths, variant: str) -> list[Path]:
    needed = manifests(paths.beir, paths.stage("split"))
    if variant != "wo-aug":
        needed += manifests(paths.stage("filter", variant))
    if cfg.train.loss == "margin_mse" and cfg.train.teacher == "tuned":
        needed += manifests(paths.stage("tune"))
    return needed


def source_digests(cfg: Config, variant: str) -> dict[str, str]:
    """With margin-MSE, what the teacher's scores depend on beyond the train section and the
    tune manifest: the LLM and the scorer's settings (``rerank``, batch size aside)."""
    if cfg.train.loss != "margin_mse":
        return {}
    teacher = {"llm": cfg.models.llm, "trust_remote_code": cfg.models.trust_remote_code,
               "max_doc_tokens": cfg.rerank.max_doc_tokens, "precision": cfg.rerank.precision}
    return {"teacher": hashlib.sha256(json.dumps(teacher, sort_keys=True).encode()).hexdigest()[:16]}


def pair_rows(data: TrainingData) -> list[dict[str, Any]]:
    rows = []
    for r in data.train + data.dev:
        row = {"query_id": r.query_id, "query": r.query, "doc_id": r.doc_id, "source": r.source,
               "negatives": r.negatives}
        if r.margins is not None:
            row["margins"] = r.margins
        rows.append(row)
    return rows


def label_margins(cfg: Config, paths: Paths, data: TrainingData, corpus) -> dict[str, Any]:
    """Give every training row the teacher's margins (its positive's score minus each hard
    negative's, times ``train.teacher_scale``); return the teacher's counts."""
    from sptar.io.formats import doc_text
    from sptar.llm.teacher import teacher_scores

    tc = cfg.train
    pairs = {(row.query, did) for row in data.train for did in [row.doc_id, *row.negatives]}
    documents = {did: doc_text(corpus[did]) for _, did in pairs}
    scores, counts = teacher_scores(cfg, paths, pairs, documents, tc.teacher == "tuned")
    margins = []
    for row in data.train:
        positive = scores[(row.query, row.doc_id)]
        row.margins = [tc.teacher_scale * (positive - scores[(row.query, did)])
                       for did in row.negatives]
        margins += row.margins
    mean = sum(margins) / len(margins)
    counts["margin_mean"] = round(mean, 4)
    counts["margin_std"] = round((sum((m - mean) ** 2 for m in margins) / len(margins)) ** 0.5, 4)
    counts["margin_positive_share"] = round(sum(m > 0 for m in margins) / len(margins), 4)
    log.info("teacher margins over %d (row, negative): mean %.3f, std %.3f, positive %.1f %%",
             len(margins), mean, counts["margin_std"], 100 * counts["margin_positive_share"])
    return counts


def _save_bytes(cfg: Config, with_dev: bool) -> int:
    """The final model, plus the best and the latest checkpoint when a dev set selects one."""
    from sptar.models import resolve_encoder

    weights = folder_bytes(resolve_encoder(cfg.models.encoder, cfg.models.encoder_pooling,
                                           cfg.models.encoder_layers))
    return weights * (3 if with_dev else 1)


def _rank_after_training(launcher_rank: int) -> int:
    """This process's rank (0 alone), once every process of a launcher's group has trained."""
    rank = group_rank()
    if rank is None:
        return launcher_rank
    barrier()  # rank 0 may only remove the trainer's folder once every rank is done with it
    return rank


def run(cfg: Config, paths: Paths, variant: str) -> dict:
    from sptar.models import resolve_device
    from sptar.retrieval.bm25 import BM25Searcher

    tc = cfg.train
    device = resolve_device(cfg.device)  # under torchrun: cuda:$LOCAL_RANK
    folder = output_dir(paths, variant)
    work_dir = folder / TRAINER_DIR
    launcher_rank, world_size = resolve_shard(None, None)  # RANK / WORLD_SIZE under torchrun
    if launcher_rank == 0:  # under torchrun, rank 0 alone writes in folder
        shutil.rmtree(work_dir, ignore_errors=True)  # leftovers of a killed run
        remove_stale_temporaries(folder)

    corpus = load_corpus(paths)
    data = build_training_data(cfg, paths, variant, corpus)
    searcher = BM25Searcher(corpus, cfg.bm25) if tc.hard_negatives or data.dev else None
    add_hard_negatives(cfg, data, corpus, searcher)
    teacher = label_margins(cfg, paths, data, corpus) if tc.loss == "margin_mse" else None
    log.info("train %s: %d labeled + %d weak pairs (%d dev pairs), %d hard negatives per pair, "
             "on %s", variant, data.count(LABELED), data.count(WEAK), data.count(DEV),
             tc.hard_negatives, device)

    processes = world_size if launched() else 1
    if processes > 1 and len(data.train) < tc.batch_size * processes:  # DDP drops partial batches
        raise SptarError(f"train.batch_size {tc.batch_size} x {processes} processes needs at least "
                         f"{tc.batch_size * processes} training pairs, there are {len(data.train)}"
                         " (fix: lower train.batch_size, or start fewer processes)")
    check_disk_space(folder, _save_bytes(cfg, bool(data.dev)), "the trained model (and checkpoints)")
    with memory_guard(f"train {variant}", {"train.batch_size": tc.batch_size,
                                           "train.max_seq_length": tc.max_seq_length}):
        model, metrics, log_rows = fit(cfg, data, corpus, searcher, work_dir, device)
    rank = _rank_after_training(launcher_rank)
    if rank != 0:
        return {PARTIAL: f"rank {rank} trained its share of each batch; rank 0 writes the model"}
    write_trained(folder, model, pair_rows(data), log_rows)
    shutil.rmtree(work_dir, ignore_errors=True)

    steps = metrics["global_step"]
    seconds = metrics.get("train_runtime", 0.0)
    return {
        "variant": variant,
        "base_model": cfg.models.encoder,
        "labeled_queries": len({r.query_id for r in data.train if r.source == LABELED}),
        "labeled_pairs": data.count(LABELED),
        "weak_pairs": data.count(WEAK),
        "dev_queries": len({r.query_id for r in data.dev}),
        "dev_pairs": data.count(DEV),
        "hard_negatives": tc.hard_negatives,
        "loss": tc.loss,
        **({"teacher": teacher} if teacher else {}),
        "train_rows": len(data.train),
        "epochs": metrics["epochs"],
        "steps": steps,
        "weak_steps": metrics.get("weak_steps", 0),
        "labeled_repeat": tc.labeled_repeat,
        "warmup_steps": metrics["warmup_steps"],
        "train_seconds": round(seconds, 2),
        "seconds_per_step": round(seconds / steps, 3) if steps else None,
        "train_loss": round(metrics["training_loss"], 5),
        "best_dev_ndcg@10": metrics["best_metric"],
        "best_step": metrics["best_step"],
        "device": device,
        "seed": train_seed(cfg),
        "files_read": [str(corpus_file(paths.beir)), *data.files],
    }
