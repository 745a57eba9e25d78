"""One system's evaluation on one split ``evaluate/<system>/<split>/``: the TREC run, the mean
metrics and every metric per query."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sptar.io.formats import Run, read_json, read_run, write_json, write_run
from sptar.io.paths import Paths

RUN, METRICS, PER_QUERY = "run.trec", "metrics.json", "per_query.json"


def split_dir(paths: Paths, system: str, split: str) -> Path:
    return paths.stage("evaluate", system) / split


def per_query_file(paths: Paths, system: str, split: str) -> Path:
    return split_dir(paths, system, split) / PER_QUERY


def write_evaluation(paths: Paths, system: str, split: str, run: Run, mean: dict[str, float],
                     per_query: dict[str, dict[str, float]]) -> None:
    folder = split_dir(paths, system, split)
    write_run(folder / RUN, run, tag=f"sptar-{system}")
    write_json(folder / PER_QUERY, per_query)
    write_json(folder / METRICS, mean)


def read_metrics(paths: Paths, system: str, split: str) -> dict[str, float]:
    return read_json(split_dir(paths, system, split) / METRICS)


def read_per_query(paths: Paths, system: str, split: str) -> dict[str, dict[str, Any]]:
    return read_json(per_query_file(paths, system, split))


def read_system_run(paths: Paths, system: str, split: str) -> Run:
    return read_run(split_dir(paths, system, split) / RUN)
