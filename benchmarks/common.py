"""Shared by the benchmarks: load a pipeline's dataset, time things, print and save a table."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def setup() -> None:
    """What every benchmark's ``main`` does first: work from the repository root (pipelines/ and
    data/ are relative to it), stay offline, log warnings only."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    os.chdir(ROOT)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("bm25s").setLevel(logging.WARNING)


def run_paths(run: Path):
    """The ``Paths`` of a finished run folder ``data/runs/<experiment>/`` (its dataset from the
    split manifest)."""
    from sptar.io.formats import read_json
    from sptar.io.paths import Paths

    dataset = read_json(run / "split" / "manifest.json")["config"]["dataset.name"]
    return Paths(run.parent.parent, run.name, dataset)


def prepared(pipeline: str = "scifact-quick"):
    """The pipeline's config, paths and dataset (runs the data stage if needed)."""
    setup()
    from sptar.config import load_config
    from sptar.outputs.dataset import load_beir
    from sptar.run.runner import execute, paths_for

    cfg = load_config(pipeline)
    paths = paths_for(cfg)
    execute("data", cfg, paths)
    dataset = load_beir(paths.beir, splits=[cfg.evaluate.test_split])
    return cfg, paths, dataset


def validation_queries(cfg, paths):
    """``(queries, qrels)`` of the pipeline's validation split (runs the split stage if needed):
    what a benchmark that measures quality scores, never the test split."""
    from sptar.outputs.fewshot import load_validation
    from sptar.run.runner import execute

    execute("split", cfg, paths)
    validation = load_validation(paths)
    if validation is None:
        raise SystemExit(f"{cfg.experiment}: no validation queries (split.validation: none)")
    return validation.queries, validation.qrels


@contextmanager
def timer(into: dict, key: str):
    start = time.perf_counter()
    yield
    into[key] = time.perf_counter() - start


def report(name: str, rows: list[dict], notes: dict | None = None) -> None:
    """Print rows as a table and write them (with notes) to benchmarks/results/<name>.json."""
    columns = list(rows[0])
    widths = [max(len(str(c)), *(len(_fmt(r[c])) for r in rows)) for c in columns]
    print(" | ".join(str(c).ljust(w) for c, w in zip(columns, widths, strict=True)))
    print("-+-".join("-" * w for w in widths))
    for row in rows:
        print(" | ".join(_fmt(row[c]).ljust(w) for c, w in zip(columns, widths, strict=True)))
    for key, value in (notes or {}).items():
        print(f"{key}: {_fmt(value)}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps({"rows": rows, "notes": notes or {}}, indent=2))
    print(f"-> {RESULTS / f'{name}.json'}")


def _fmt(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)
