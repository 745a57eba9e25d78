"""Dense retrieval: encode with a sentence-transformers model, search with FAISS.

Corpus embeddings are cached under ``data/cache/embeddings/<key>/`` where the key hashes the
model weights, the corpus file and the encoding settings, so an unchanged model never encodes
the same corpus twice. Encoding is written in chunks, so a killed run resumes where it stopped.
Sharded (several processes, see :mod:`sptar.run.shards`), each process encodes the chunks
``c % n == i``, and one merges them in corpus order: the same array as one process's.
The index is exact inner product by default (HNSW and IVF as options), moved to the GPU when
FAISS was built with GPU support and the device is CUDA (sharded across the GPUs when several).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from sptar.config import DenseConfig
from sptar.errors import SptarError
from sptar.io.atomic import atomic_write, remove_stale_temporaries
from sptar.io.formats import Corpus, Run, doc_text, read_json, write_json
from sptar.run.chunks import Chunks

log = logging.getLogger(__name__)

EMBEDDING_FORMAT = 1  # bump when the text fed to the encoder changes
LOCK = ".merge.lock"  # held while a shard checks for every chunk and merges them


def _normalize(model) -> bool:
    """Cosine models get unit vectors so that inner product is cosine similarity."""
    return getattr(model, "similarity_fn_name", "cosine") in (None, "cosine")


def _precision(model, cfg: DenseConfig) -> str:
    from sptar.models import effective_precision

    return effective_precision(str(model.device), cfg.precision)


def backend(model, cfg: DenseConfig) -> str:
    """``dense.backend`` resolved: ``auto`` is OpenVINO for a sentence-transformers model on CPU
    (when the package is installed), torch otherwise (a GPU, or any other encoder object)."""
    from sentence_transformers import SentenceTransformer

    from sptar.retrieval import openvino_encoding

    if cfg.backend == "auto":
        return ("openvino" if str(model.device) == "cpu" and isinstance(model, SentenceTransformer)
                and openvino_encoding.available() else "torch")
    if cfg.backend == "openvino" and str(model.device) != "cpu":
        raise SptarError(f"dense.backend openvino runs on CPU, but the encoder is on {model.device}"
                         " (fix: set dense.backend: auto or torch, or device: cpu)")
    return cfg.backend


def quantized(model, cfg: DenseConfig) -> bool:
    """Whether the encoder runs int8-quantised: ``dense.quantize: int8`` where OpenVINO encodes."""
    return cfg.quantize == "int8" and backend(model, cfg) == "openvino"


def calibration_texts(corpus: Corpus, cfg: DenseConfig) -> list[str]:
    """What int8 quantisation takes activation ranges from: ``dense.calibration_docs`` documents
    of the corpus, a seeded choice that depends on the documents only (not on their order)."""
    import random

    ids = sorted(corpus)
    chosen = random.Random(0).sample(ids, min(cfg.calibration_docs, len(ids)))
    return [doc_text(corpus[doc_id]) for doc_id in chosen]


def int8_recipe(cfg: DenseConfig) -> dict[str, str]:
    """For a stage's manifest: the int8 encoder's recipe when ``dense.quantize: int8``, so that
    outputs encoded by an earlier recipe are stale."""
    from sptar.retrieval import openvino_encoding

    return {"dense.quantize int8 recipe": openvino_encoding.recipe()} if cfg.quantize == "int8" else {}


def encode_texts(model, texts: list[str], cfg: DenseConfig, show_progress: bool = False,
                 calibration: list[str] | None = None) -> np.ndarray:
    """Float32 embeddings (unit length for cosine models), computed in ``cfg.precision`` by
    :func:`backend`; int8-quantised (:func:`quantized`) with activation ranges from the
    ``calibration`` texts (:func:`calibration_texts` of the corpus), which it then needs."""
    import torch

    from sptar.models import autocast

    if not texts:
        return np.zeros((0, model.get_sentence_embedding_dimension()), dtype=np.float32)
    if backend(model, cfg) == "openvino":
        from sptar.retrieval import openvino_encoding

        if quantized(model, cfg) and not calibration:
            raise SptarError("dense.quantize int8: encode_texts needs calibration texts"
                             " (sptar.retrieval.dense.calibration_texts of the corpus)")
        embeddings = openvino_encoding.encode(model, texts, cfg.batch_size, _normalize(model),
                                              _precision(model, cfg), torch.get_num_threads(),
                                              calibration if quantized(model, cfg) else None)
    else:
        with autocast(str(model.device), cfg.precision):
            embeddings = model.encode(texts, batch_size=cfg.batch_size, convert_to_numpy=True,
                                      normalize_embeddings=_normalize(model),
                                      show_progress_bar=show_progress)
    return np.ascontiguousarray(embeddings, dtype=np.float32)


def embedding_key(model_fingerprint: str, corpus_fingerprint: str, model, cfg: DenseConfig) -> str:
    from sptar.retrieval import openvino_encoding

    blob = json.dumps([EMBEDDING_FORMAT, model_fingerprint, corpus_fingerprint,
                       model.max_seq_length, _normalize(model), _precision(model, cfg),
                       backend(model, cfg)]
                      + (["int8", cfg.calibration_docs, openvino_encoding.recipe()]
                         if quantized(model, cfg) else []))
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def cache_complete(cache_dir: Path) -> bool:
    """Whether a corpus-embedding cache entry is whole (its ids are written last)."""
    return (cache_dir / "ids.json").is_file()


def _cached_embeddings(cache_dir: Path, ids: list[str]) -> np.ndarray | None:
    final, listed = cache_dir / "embeddings.npy", cache_dir / "ids.json"
    # ids.json is written after embeddings.npy: a kill may leave it out
    if final.is_file() and listed.is_file() and read_json(listed) == ids:
        log.info("corpus embeddings from cache %s", cache_dir)
        return np.load(final)
    return None


def _chunks(ids: list[str], cfg: DenseConfig, cache_dir: Path) -> Chunks:
    """The corpus in chunks of ``dense.chunk_size`` documents, in corpus order."""
    return Chunks(-(-len(ids) // cfg.chunk_size),
                  lambda number: cache_dir / f"chunk-{number:06d}-{cfg.chunk_size}.npy",
                  cache_dir / LOCK)


def encode_corpus(model, corpus: Corpus, cfg: DenseConfig, cache_dir: Path, shard: int = 0,
                  num_shards: int = 1, barrier: Callable[[], None] | None = None,
                  calibration: list[str] | None = None) -> np.ndarray | None:
    """Embeddings of every document in corpus order, from the cache or encoded (resumably);
    int8-quantised with the ``calibration`` texts (:func:`calibration_texts` of the corpus when
    not given).

    Shard ``shard`` of ``num_shards`` encodes only the chunks ``c % num_shards == shard`` and
    returns None when merging them is another process's job: with a ``barrier`` (a process
    group) every shard waits there and shard 0 merges; without, the shard that finds every
    chunk present when it finishes (the last one, or any later run) merges.
    """
    ids = list(corpus)
    embeddings = _cached_embeddings(cache_dir, ids)
    if embeddings is None:
        if calibration is None and quantized(model, cfg):
            calibration = calibration_texts(corpus, cfg)
        _encode_chunks(model, corpus, ids, cfg, cache_dir, shard, num_shards, calibration)
    if barrier is not None:
        barrier()
        if shard != 0:
            return None
    if embeddings is not None:
        return embeddings
    return _merge_chunks(ids, cfg, cache_dir)


def _encode_chunks(model, corpus: Corpus, ids: list[str], cfg: DenseConfig, cache_dir: Path,
                   shard: int, num_shards: int, calibration: list[str] | None) -> None:
    """Encode this shard's chunks that are not on disk yet, each written as it is done."""
    from tqdm.auto import tqdm

    cache_dir.mkdir(parents=True, exist_ok=True)
    # Sorting by length (for batching) happens inside each chunk in sentence-transformers;
    # chunks follow corpus order so that a resumed or sharded run finds the same boundaries.
    chunks = _chunks(ids, cfg, cache_dir)
    todo = chunks.todo(shard, num_shards)
    label = "encoding corpus" + (f" [{shard}/{num_shards}]" if num_shards > 1 else "")
    blocks = {number: ids[number * cfg.chunk_size:(number + 1) * cfg.chunk_size] for number in todo}
    with tqdm(total=sum(map(len, blocks.values())), desc=label, unit="doc") as bar:
        for number, block in blocks.items():
            chunk = encode_texts(model, [doc_text(corpus[d]) for d in block], cfg,
                                 calibration=calibration)
            with atomic_write(chunks.path(number), "wb") as handle:
                np.save(handle, chunk)
            bar.update(len(block))


def _merge_chunks(ids: list[str], cfg: DenseConfig, cache_dir: Path) -> np.ndarray | None:
    """Concatenate every chunk (corpus order) into ``embeddings.npy``; None if one is missing."""
    chunks = _chunks(ids, cfg, cache_dir)
    with chunks.merging() as complete:
        if not complete:
            merged = _cached_embeddings(cache_dir, ids)  # a run beside this one merged them first
            if merged is not None:
                return merged
            log.info("%s: %d of %d chunk(s) still missing: the shard that finishes last merges",
                     cache_dir, chunks.missing(), chunks.count)
            return None
        parts = [chunks.path(number) for number in range(chunks.count)]
        embeddings = (np.concatenate([np.load(part) for part in parts]) if parts
                      else np.zeros((0, 0), np.float32))
        with atomic_write(cache_dir / "embeddings.npy", "wb") as handle:
            np.save(handle, embeddings)
        write_json(cache_dir / "ids.json", ids)
        for part in cache_dir.glob("chunk-*.npy"):
            part.unlink()
        remove_stale_temporaries(cache_dir)  # what a killed shard was writing: every chunk is here
    return embeddings


def build_index(embeddings: np.ndarray, cfg: DenseConfig, device: str = "cpu"):
    import faiss

    dim = embeddings.shape[1]
    if cfg.index == "hnsw":
        index = faiss.IndexHNSWFlat(dim, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = cfg.hnsw_ef_search
    elif cfg.index == "ivf":
        nlist = max(1, min(cfg.ivf_nlist, len(embeddings) // 39))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(embeddings)
        index.nprobe = min(cfg.ivf_nprobe, nlist)
    else:
        index = faiss.IndexFlatIP(dim)
    if device.startswith("cuda") and cfg.index != "hnsw" and hasattr(faiss, "StandardGpuResources"):
        index = _on_gpus(faiss, index, device)  # CPU-only FAISS builds have no GPU classes
    index.add(embeddings)
    return index


def _on_gpus(faiss, index, device: str):
    """The index cloned to the GPU, or sharded across every GPU when there are several."""
    gpus = faiss.get_num_gpus()
    if gpus > 1:
        log.info("FAISS index sharded across %d GPUs", gpus)
        options = faiss.GpuMultipleClonerOptions()
        options.shard = True
        return faiss.index_cpu_to_all_gpus(index, co=options)
    if gpus == 1:
        log.info("FAISS index on GPU")
        resources = faiss.StandardGpuResources()
        gpu_index = faiss.index_cpu_to_gpu(resources, 0, index)
        gpu_index.referenced_objects = [resources]  # the index must not outlive its resources
        return gpu_index
    return index


def search_index(index, doc_ids: list[str], query_ids: list[str], query_embeddings: np.ndarray,
                 top_k: int) -> Run:
    top_k = min(top_k, len(doc_ids))
    scores, indices = index.search(query_embeddings, top_k)
    run: Run = {}
    for row, query_id in enumerate(query_ids):
        run[query_id] = {doc_ids[i]: float(s) for i, s in zip(indices[row], scores[row], strict=True)
                         if i >= 0}
    return run


def dense_search(model, corpus: Corpus, queries: Mapping[str, str], cfg: DenseConfig,
                 cache_dir: Path, device: str = "cpu", shard: int = 0, num_shards: int = 1,
                 barrier: Callable[[], None] | None = None) -> Run | None:
    """Encode (or load) the corpus, encode the queries, search top-k with FAISS.

    Sharded, None when this shard only encoded its chunks (see :func:`encode_corpus`).
    """
    calibration = calibration_texts(corpus, cfg) if quantized(model, cfg) else None
    embeddings = encode_corpus(model, corpus, cfg, cache_dir, shard, num_shards, barrier, calibration)
    if embeddings is None:
        return None
    index = build_index(embeddings, cfg, device)
    query_ids = list(queries)
    if cfg.quantize == "int8" and calibration is None:
        log.info("dense.quantize int8 applies to OpenVINO (CPU) encoding only: the encoder on %s"
                 " computed in %s", model.device, _precision(model, cfg))
    query_embeddings = encode_texts(model, [queries[q] for q in query_ids], cfg, calibration=calibration)
    return search_index(index, list(corpus), query_ids, query_embeddings, cfg.top_k)
