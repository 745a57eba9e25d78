"""A trained retriever ``train/<variant>/``: the sentence-transformers model, every row it trained
on (``pairs.jsonl``) and its training log."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sptar.io.atomic import atomic_dir
from sptar.io.formats import write_jsonl
from sptar.io.paths import Paths

MODEL, PAIRS, TRAIN_LOG = "model", "pairs.jsonl", "train_log.jsonl"


def model_dir(paths: Paths, variant: str) -> Path:
    """The folder ``SentenceTransformer(path)`` loads."""
    return paths.stage("train", variant) / MODEL


def write_trained(folder: Path, model, pairs: list[dict[str, Any]], log_rows: list[dict[str, Any]]) -> None:
    write_jsonl(folder / PAIRS, pairs)
    with atomic_dir(folder / MODEL) as tmp:
        model.save_pretrained(str(tmp), create_model_card=False)
    write_jsonl(folder / TRAIN_LOG, log_rows)
