"""Evaluate stage: retrieve for the evaluation split's queries with one system and score it.

Systems: ``bm25`` (the configured BM25 backend), ``zero-shot`` (the base encoder untouched), and
the trained retrievers ``wo-aug`` / ``inpars`` / ``sptar`` (``train/<system>/model``).
Reads: ``data/beir/<dataset>/`` (and the trained model for trained systems).
Writes to ``data/runs/<experiment>/evaluate/<system>/``: ``run.trec`` (top-k TREC run),
``metrics.json`` (means, BEIR names), ``per_query.json`` (every metric per query). A dataset
without the evaluation split (a local corpus without test examples) gets only a manifest whose
summary says ``skipped: no test split: nothing to evaluate``.

Sharding (dense systems): ``--shard I --num-shards N``, or one process per GPU under
``torchrun``/``accelerate launch``, splits the corpus encoding (:func:`sptar.dense.encode_corpus`);
one process merges the chunks, searches and writes the output and the manifest: rank 0 after a
barrier under a launcher, else the shard that finishes last. BM25 runs in shard 0 alone.
"""

from __future__ import annotations

import logging
from pathlib import Path

from sptar.atomic import remove_stale_temporaries
from sptar.config import Config
from sptar.data import load_beir
from sptar.formats import sha256_file, write_json, write_run
from sptar.metrics import evaluate_run
from sptar.paths import Paths
from sptar.stages import PARTIAL

log = logging.getLogger(__name__)

TRAINED_SYSTEMS = ("wo-aug", "inpars", "sptar")


def sections(system: str) -> tuple[str, ...]:
    common = ("dataset.name", "evaluate", "seed")
    if system == "bm25":
        return (*common, "bm25")
    return (*common, "dense", "models.encoder", "models.trust_remote_code", "device")


def output_dir(paths: Paths, system: str) -> Path:
    return paths.stage("evaluate", system)


def upstream(cfg: Config, paths: Paths, system: str) -> list[Path]:
    needed = [paths.beir / "manifest.json"]
    if system in TRAINED_SYSTEMS:
        needed.append(paths.stage("train", system) / "manifest.json")
    return needed


def encoder_for(cfg: Config, paths: Paths, system: str) -> str:
    """The model a dense system retrieves with."""
    return cfg.models.encoder if system == "zero-shot" else str(paths.stage("train", system) / "model")


def retrieve(cfg: Config, paths: Paths, system: str, corpus, queries, shard: int = 0,
             num_shards: int = 1, flagged: bool = False):
    """The run of ``system``, or None when this shard only encoded its share of the corpus.

    ``flagged``: the shards came from --shard/--num-shards (independent processes), not from a
    launcher whose processes join one process group.
    """
    if system == "bm25":
        from sptar.bm25 import BM25Searcher

        return BM25Searcher(corpus, cfg.bm25).search(queries)
    from sptar.dense import dense_search, embedding_key
    from sptar.models import load_encoder, model_fingerprint, resolve_device, resolve_model
    from sptar.resources import check_disk_space, embeddings_bytes, memory_guard
    from sptar.shards import process_group

    name = encoder_for(cfg, paths, system)
    device = resolve_device(cfg.device)
    model = load_encoder(name, device, cfg.dense.max_seq_length, cfg.models.trust_remote_code,
                         cfg.models.download)
    fingerprint = model_fingerprint(resolve_model(name))
    if system in TRAINED_SYSTEMS:
        # model_fingerprint hashes weight files above 512 MiB by size only, which training
        # does not change: the train manifest (new on every training run) tells runs apart.
        fingerprint += sha256_file(paths.stage("train", system) / "manifest.json")[:16]
    key = embedding_key(fingerprint, sha256_file(paths.beir / "corpus.jsonl")[:16], model, cfg.dense)
    cache_dir = paths.cache / "embeddings" / key
    if not (cache_dir / "ids.json").is_file():  # written last: the cache is not complete
        if num_shards == 1:  # sharded, another process may be writing a chunk right now
            remove_stale_temporaries(cache_dir)  # what a killed encoding was writing
        dim = getattr(model, "get_embedding_dimension", model.get_sentence_embedding_dimension)() or 1024
        check_disk_space(cache_dir, embeddings_bytes(len(corpus), dim), "the corpus-embedding cache")
    barrier = None if flagged or num_shards == 1 else process_group(device)
    with memory_guard(f"evaluate {system}: encoding with {name}",
                      {"dense.batch_size": cfg.dense.batch_size}):
        return dense_search(model, corpus, queries, cfg.dense, cache_dir, device, shard, num_shards,
                            barrier)


def no_test_split(cfg: Config, paths: Paths) -> str | None:
    """Why there is nothing to evaluate (a local corpus without test examples), or None."""
    if (paths.beir / "qrels" / f"{cfg.evaluate.split}.tsv").is_file():
        return None
    return f"no {cfg.evaluate.split} split: nothing to evaluate"


def run(cfg: Config, paths: Paths, system: str, shard: int | None = None,
        num_shards: int | None = None) -> dict:
    from sptar.shards import resolve_shard

    flagged = shard is not None or num_shards is not None
    shard, num_shards = resolve_shard(shard, num_shards)
    reason = no_test_split(cfg, paths)
    if shard != 0 and (reason or system == "bm25"):
        return {PARTIAL: f"shard {shard}/{num_shards}: nothing to share ({reason or 'BM25'}); "
                         "shard 0 does it all"}
    if reason:
        log.warning("%s: %s (give dataset.test_examples to evaluate)", system, reason)
        return {"system": system, "split": cfg.evaluate.split, "skipped": reason}
    dataset = load_beir(paths.beir, splits=[cfg.evaluate.split])
    qrels = dataset.qrels[cfg.evaluate.split]
    queries = {qid: dataset.queries[qid] for qid in qrels}
    results = retrieve(cfg, paths, system, dataset.corpus, queries, shard, num_shards, flagged)
    if results is None:
        from sptar.shards import group_rank

        merger = "the last shard to finish (or any later run)" if group_rank() is None else "rank 0"
        return {PARTIAL: f"shard {shard}/{num_shards} encoded its chunks of the corpus; {merger} "
                         "merges them, searches and writes the output"}
    mean, per_query = evaluate_run(qrels, results)
    folder = output_dir(paths, system)
    remove_stale_temporaries(folder)  # sharded runs skip the clean-up in execute(): done here
    write_run(folder / "run.trec", results, tag=f"sptar-{system}")
    write_json(folder / "per_query.json", per_query)
    write_json(folder / "metrics.json", mean)
    log.info("%s on %s/%s: %s", system, cfg.dataset.name, cfg.evaluate.split,
             ", ".join(f"{k} {mean[k]:.4f}" for k in ("NDCG@10", "Recall@100")))
    summary = {"system": system, "split": cfg.evaluate.split, "queries": len(queries), "metrics": mean}
    if num_shards > 1:
        summary["shards"] = num_shards
    return summary
