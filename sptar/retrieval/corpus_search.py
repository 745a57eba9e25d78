"""Dense retrieval with a named encoder over the experiment's corpus, through the shared
corpus-embedding cache (``data/cache/embeddings/<key>/``): what ``sptar evaluate`` and the dense
consistency filter share."""

from __future__ import annotations

from collections.abc import Mapping

from sptar.config import Config
from sptar.io.atomic import remove_stale_temporaries
from sptar.io.formats import Corpus, Run, sha256_file
from sptar.io.paths import Paths
from sptar.outputs.dataset import corpus_file


def dense_retrieve(cfg: Config, paths: Paths, encoder: str, corpus: Corpus, queries: Mapping[str, str],
                   *, fingerprint_extra: str = "", top_k: int | None = None, shard: int = 0,
                   num_shards: int = 1, flagged: bool = False, what: str = "") -> Run | None:
    """The top ``top_k`` (default ``dense.top_k``) documents per query with ``encoder`` (an alias,
    folder or Hugging Face id). ``fingerprint_extra`` tells apart encoders that share a weight
    fingerprint (a trained model: its train manifest). Sharded, None when this shard only
    encoded its chunks (``flagged``: shards from --shard flags, not a launcher's process group)."""
    from sptar.models import load_encoder, model_fingerprint, resolve_device, resolve_encoder
    from sptar.retrieval.dense import cache_complete, dense_search, embedding_key
    from sptar.run.resources import check_disk_space, embeddings_bytes, memory_guard
    from sptar.run.shards import process_group

    device = resolve_device(cfg.device)
    shape = {"pooling": cfg.models.encoder_pooling, "layers": cfg.models.encoder_layers}
    model = load_encoder(encoder, device, cfg.dense.max_seq_length, cfg.models.trust_remote_code,
                         cfg.models.download, **shape)
    fingerprint = model_fingerprint(resolve_encoder(encoder, **shape)) + fingerprint_extra
    key = embedding_key(fingerprint, sha256_file(corpus_file(paths.beir))[:16], model, cfg.dense)
    cache_dir = paths.cache / "embeddings" / key
    if not cache_complete(cache_dir):
        if num_shards == 1:  # sharded, another process may be writing a chunk right now
            remove_stale_temporaries(cache_dir)  # what a killed encoding was writing
        dim = getattr(model, "get_embedding_dimension", model.get_sentence_embedding_dimension)() or 1024
        check_disk_space(cache_dir, embeddings_bytes(len(corpus), dim), "the corpus-embedding cache")
    barrier = None if flagged or num_shards == 1 else process_group(device)
    dense = cfg.dense if top_k is None else cfg.dense.model_copy(update={"top_k": top_k})
    with memory_guard(f"{what or 'dense retrieval'}: encoding with {encoder}",
                      {"dense.batch_size": cfg.dense.batch_size}):
        return dense_search(model, corpus, queries, dense, cache_dir, device, shard, num_shards,
                            barrier)
