"""Dense retrieval: encode with a sentence-transformers model, search with FAISS.

Corpus embeddings are cached under ``data/cache/embeddings/<key>/`` where the key hashes the
model weights, the corpus file and the encoding settings, so an unchanged model never encodes
the same corpus twice. Encoding is written in chunks, so a killed run resumes where it stopped.
The index is exact inner product by default (HNSW and IVF as options), moved to the GPU when
FAISS was built with GPU support and the device is CUDA.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from sptar.atomic import atomic_write
from sptar.config import DenseConfig
from sptar.formats import Corpus, Run, doc_text, read_json, write_json

log = logging.getLogger(__name__)

EMBEDDING_FORMAT = 1  # bump when the text fed to the encoder changes


def _normalize(model) -> bool:
    """Cosine models get unit vectors so that inner product is cosine similarity."""
    return getattr(model, "similarity_fn_name", "cosine") in (None, "cosine")


def _precision(model, cfg: DenseConfig) -> str:
    from sptar.models import effective_precision

    return effective_precision(str(model.device), cfg.precision)


def encode_texts(model, texts: list[str], cfg: DenseConfig, show_progress: bool = False) -> np.ndarray:
    """Float32 embeddings (unit length for cosine models), computed in ``cfg.precision``."""
    from sptar.models import autocast

    if not texts:
        return np.zeros((0, model.get_sentence_embedding_dimension()), dtype=np.float32)
    with autocast(str(model.device), cfg.precision):
        embeddings = model.encode(texts, batch_size=cfg.batch_size, convert_to_numpy=True,
                                  normalize_embeddings=_normalize(model),
                                  show_progress_bar=show_progress)
    return np.ascontiguousarray(embeddings, dtype=np.float32)


def embedding_key(model_fingerprint: str, corpus_fingerprint: str, model, cfg: DenseConfig) -> str:
    blob = json.dumps([EMBEDDING_FORMAT, model_fingerprint, corpus_fingerprint,
                       model.max_seq_length, _normalize(model), _precision(model, cfg)])
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def encode_corpus(model, corpus: Corpus, cfg: DenseConfig, cache_dir: Path) -> np.ndarray:
    """Embeddings of every document in corpus order, from the cache or encoded (resumably)."""
    from tqdm.auto import tqdm

    final = cache_dir / "embeddings.npy"
    ids = list(corpus)
    listed = cache_dir / "ids.json"  # written after embeddings.npy: a kill may leave it out
    if final.is_file() and listed.is_file() and read_json(listed) == ids:
        log.info("corpus embeddings from cache %s", cache_dir)
        return np.load(final)
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Encode longest first within each chunk is done by sentence-transformers; chunks follow
    # corpus order so that a resumed run finds the same chunk boundaries.
    chunks = []
    starts = range(0, len(ids), cfg.chunk_size)
    with tqdm(total=len(ids), desc="encoding corpus", unit="doc") as bar:
        for number, start in enumerate(starts):
            part = cache_dir / f"chunk-{number:06d}-{cfg.chunk_size}.npy"
            block = ids[start:start + cfg.chunk_size]
            if part.is_file():
                chunk = np.load(part)
            else:
                chunk = encode_texts(model, [doc_text(corpus[d]) for d in block], cfg)
                with atomic_write(part, "wb") as handle:
                    np.save(handle, chunk)
            chunks.append(chunk)
            bar.update(len(block))
    embeddings = np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)
    with atomic_write(final, "wb") as handle:
        np.save(handle, embeddings)
    write_json(cache_dir / "ids.json", ids)
    for part in cache_dir.glob("chunk-*.npy"):
        part.unlink()
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
        log.info("FAISS index on GPU")
        index = faiss.index_cpu_to_all_gpus(index)
    index.add(embeddings)
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
                 cache_dir: Path, device: str = "cpu") -> Run:
    """Encode (or load) the corpus, encode the queries, search top-k with FAISS."""
    embeddings = encode_corpus(model, corpus, cfg, cache_dir)
    index = build_index(embeddings, cfg, device)
    query_ids = list(queries)
    query_embeddings = encode_texts(model, [queries[q] for q in query_ids], cfg)
    return search_index(index, list(corpus), query_ids, query_embeddings, cfg.top_k)
