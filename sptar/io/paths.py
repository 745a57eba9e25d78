"""Where everything lives: ``data/beir/<dataset>/``, ``data/runs/<experiment>/<stage>/``, caches.

The data root is ``./data`` (relative to the working directory) unless ``SPTAR_DATA_DIR`` says
otherwise; converted model weights go to ``<data>/models`` unless ``SPTAR_MODEL_CACHE`` says
otherwise, so several checkouts can share one conversion.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

DATA_DIR_ENV = "SPTAR_DATA_DIR"
MODEL_CACHE_ENV = "SPTAR_MODEL_CACHE"

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def check_name(value: str, what: str) -> str:
    """A dataset/experiment/variant name: letters, digits, '.', '_' and '-', never a path."""
    if not _SAFE_NAME.fullmatch(value) or ".." in value:
        raise ValueError(f"{what} {value!r} must be a plain name (letters, digits, '.', '_', '-'), "
                         "not a path")
    return value


def data_root() -> Path:
    return Path(os.environ.get(DATA_DIR_ENV, "data"))


def model_cache_root() -> Path:
    return Path(os.environ.get(MODEL_CACHE_ENV, data_root() / "models"))


@dataclass(frozen=True)
class Paths:
    """All locations of one experiment on one dataset."""

    root: Path
    experiment: str
    dataset: str

    @classmethod
    def for_experiment(cls, experiment: str, dataset: str, root: str | Path | None = None) -> Paths:
        return cls(Path(root) if root is not None else data_root(),
                   check_name(experiment, "experiment"), check_name(dataset, "dataset"))

    @property
    def beir(self) -> Path:
        """The validated copy of the dataset (written by the data stage)."""
        return self.root / "beir" / self.dataset

    @property
    def runs(self) -> Path:
        return self.root / "runs" / self.experiment

    @property
    def cache(self) -> Path:
        """Shared caches (corpus embeddings, BM25 indexes), keyed by content hashes."""
        return self.root / "cache"

    def stage(self, name: str, variant: str | None = None) -> Path:
        folder = self.runs / name
        return folder / check_name(variant, "variant") if variant else folder
