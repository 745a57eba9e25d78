"""Resources: a clear error instead of an out-of-memory crash, free disk space checked first,
and generation batches sized to the GPU's memory.

- :func:`memory_guard` wraps the batched work of a stage (encoding, generation, prompt tuning,
  training). An out-of-memory error inside (``torch.cuda.OutOfMemoryError``, a ``RuntimeError``
  saying "out of memory" / "can't allocate memory", or ``MemoryError``) becomes a one-line
  :class:`~sptar.errors.SptarError` naming the config key(s) to lower and their current values.
  The largest batches come first where the order is free (generation sorts documents longest
  first; sentence-transformers encodes longest first), so a batch that does not fit fails early.
  On CPU, Linux may kill a process that runs out of memory (SIGKILL) before any allocation
  fails; no program can catch that, but the stages resume or restart cleanly after it.
- :func:`check_disk_space` runs before a stage writes a large output (the corpus-embedding
  cache, generated queries, a trained model and its checkpoints, the converted LLM) and fails
  with the folder, the bytes needed and the bytes free, before any work is spent on it.
- :func:`decoding_rows` resolves ``generate.batch_size: auto``: on CUDA, the rows whose
  key/value caches fill half the free GPU memory.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path

from sptar.errors import SptarError

log = logging.getLogger(__name__)

_OOM_MARKERS = ("out of memory", "can't allocate memory", "cannot allocate memory",
                "not enough memory")


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` says that memory (GPU or CPU) ran out."""
    if isinstance(exc, MemoryError):
        return True
    if not isinstance(exc, RuntimeError):  # torch.cuda.OutOfMemoryError is a RuntimeError
        return False
    if type(exc).__name__ == "OutOfMemoryError":
        return True
    text = str(exc).lower()
    return any(marker in text for marker in _OOM_MARKERS)


def _release_cached_memory() -> None:
    with contextlib.suppress(Exception):
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()


@contextlib.contextmanager
def memory_guard(what: str, keys: Mapping[str, object]) -> Iterator[None]:
    """Turn an out-of-memory error inside into a SptarError that says which keys to lower.

    ``keys`` maps each dotted config key that sets the memory use to its current value, e.g.
    ``{"generate.batch_size": 16}``.
    """
    try:
        yield
    except (RuntimeError, MemoryError) as exc:
        if not is_out_of_memory(exc):
            raise
        _release_cached_memory()
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        settings = ", ".join(f"{key}={value}" for key, value in keys.items())
        hints = " or ".join(f"--set {key}={_smaller(value)}" for key, value in keys.items())
        raise SptarError(f"{what}: out of memory with {settings} ({type(exc).__name__}: {first})"
                         f" (fix: lower it, e.g. {hints})") from exc


def _smaller(value: object) -> object:
    return max(1, value // 2) if isinstance(value, int) and not isinstance(value, bool) else value


# ---------------------------------------------------------------- batch sizes

CPU_DECODING_ROWS = 16  # generate.batch_size auto on CPU (32 was no faster on 2 cores)
GPU_MEMORY_SHARE = 0.5  # of the free GPU memory, for the decoding cache (the rest: activations)
MAX_DECODING_ROWS = 512


def kv_bytes_per_token(config, itemsize: int) -> int:
    """Bytes of key/value cache that one token takes in every layer of a decoder."""
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    return 2 * config.num_hidden_layers * kv_heads * head_dim * itemsize


def decoding_rows(configured: int | str, model, device: str, tokens_per_row: int) -> int:
    """``generate.batch_size`` resolved: a number as it is; ``auto`` is CPU_DECODING_ROWS on CPU
    and, on CUDA, as many rows as GPU_MEMORY_SHARE of the free memory (after the model is loaded)
    holds caches of ``tokens_per_row`` for, between 1 and MAX_DECODING_ROWS."""
    if configured != "auto":
        return int(configured)
    if not device.startswith("cuda"):
        return CPU_DECODING_ROWS
    import torch

    free, _ = torch.cuda.mem_get_info(torch.device(device))
    itemsize = model.get_input_embeddings().weight.element_size()
    per_row = kv_bytes_per_token(model.config, itemsize) * tokens_per_row
    rows = max(1, min(MAX_DECODING_ROWS, int(free * GPU_MEMORY_SHARE // per_row)))
    log.info("generate.batch_size auto: %d rows (%s free on %s, %s of cache per row)", rows,
             human_bytes(free), device, human_bytes(per_row))
    return rows


# ---------------------------------------------------------------- disk space


def _existing(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists (where the output will be created)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def human_bytes(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(count) < 1000 or unit == "TB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} TB"  # pragma: no cover


def check_disk_space(folder: str | Path, needed: int, what: str) -> None:
    """Fail before writing ``what`` (about ``needed`` bytes) into ``folder`` if it cannot fit."""
    folder = Path(folder)
    free = shutil.disk_usage(_existing(folder)).free
    log.debug("%s: needs about %s in %s, %s free", what, human_bytes(needed), folder,
              human_bytes(free))
    if needed > free:
        raise SptarError(f"{folder}: {what} needs about {human_bytes(needed)} ({needed} bytes), "
                         f"but only {human_bytes(free)} is free (fix: free disk space, or move "
                         "the data folder with SPTAR_DATA_DIR)")


def embeddings_bytes(n_docs: int, dim: int) -> int:
    """The embedding cache while it is written: the float32 chunks plus the joined array."""
    return 2 * n_docs * dim * 4 + 64 * 1024


def generated_bytes(n_docs: int, queries_per_doc: int, max_new_tokens: int) -> int:
    """Chunk records plus final files for the generated queries (a generous ~8 bytes a token)."""
    per_query = 400 + 8 * max_new_tokens
    return 2 * n_docs * queries_per_doc * per_query + 64 * 1024


def folder_bytes(path: str | Path) -> int:
    """Total size of the files under ``path`` (0 for a name that is not a local folder)."""
    path = Path(path)
    if not path.is_dir():
        return 0
    return sum(file.stat().st_size for file in path.rglob("*") if file.is_file())
