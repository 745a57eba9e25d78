"""An export, as ``export/<variant>/`` writes it: the training rows as a BEIR folder (``beir/``),
as JSON lines (``pairs.jsonl``), as a TSV table with a header (``pairs.tsv``) and as a Hugging Face
dataset (``hf/``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sptar.io.formats import write_jsonl, write_table

BEIR, PAIRS_JSONL, PAIRS_TSV, HF = "beir", "pairs.jsonl", "pairs.tsv", "hf"
FILES = [f"{BEIR}/", PAIRS_JSONL, PAIRS_TSV, f"{HF}/"]


def beir_dir(folder: Path) -> Path:
    return folder / BEIR


def write_rows(folder: Path, columns: Sequence[str], rows: list[dict[str, Any]]) -> None:
    """The rows in the three row formats (the BEIR folder is written by its own writer)."""
    from datasets import Dataset

    write_jsonl(folder / PAIRS_JSONL, rows)
    write_table(folder / PAIRS_TSV, list(columns), rows)
    Dataset.from_list(rows).save_to_disk(str(folder / HF))
