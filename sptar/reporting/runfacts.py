"""What a finished run's manifests say: stage times and the span of the run, weak pairs
generated / kept / trained on, training summaries, exports. Read by the report of one run, the
report over seeds and the benchmarks that compare runs."""

from __future__ import annotations

import calendar
import time
from typing import Any

from sptar.io.manifest import read_manifest
from sptar.io.paths import Paths
from sptar.outputs.weakset import count_pairs
from sptar.systems import TRAINED, WEAK_VARIANTS


def stage_timings(paths: Paths) -> dict[str, dict[str, float | None]]:
    """Wall and CPU seconds of every finished stage of the experiment, keyed ``stage[/option]``,
    in pipeline order (CPU seconds are None in manifests written before they were recorded)."""
    from sptar.run.runner import STAGES

    report = paths.stage("report")
    order = {name: index for index, name in enumerate(STAGES)}
    folders = [paths.beir]
    folders += [p.parent for p in sorted(
        paths.runs.glob("**/manifest.json"),
        key=lambda p: (order.get(p.relative_to(paths.runs).parts[0], len(order)), p))]
    timings: dict[str, dict[str, float | None]] = {}
    for folder in folders:
        manifest = read_manifest(folder)
        if manifest and folder != report:
            name = "data" if folder == paths.beir else str(folder.relative_to(paths.runs))
            timings[name] = {"wall_s": manifest["wall_time_s"],
                             "cpu_s": manifest.get("cpu_time_s"),
                             "load": (manifest.get("load_average") or [None])[0],
                             "started_at": manifest.get("started_at"),
                             "finished_at": manifest.get("finished_at")}
    return timings


def run_span(timings: dict[str, dict[str, Any]]) -> float | None:
    """Seconds from the first stage's start to the last one's end, the data copy left out (it is
    shared by every experiment on the dataset): the run's wall time, with stages that ran side by
    side (``make all`` with ``JOBS`` > 1) counted once."""
    def epoch(stamp: str) -> float:
        return calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ"))

    stages = [t for name, t in timings.items() if name != "data" and t.get("started_at")]
    if not stages:
        return None
    return max(epoch(t["finished_at"]) for t in stages) - min(epoch(t["started_at"]) for t in stages)


def weak_pair_counts(paths: Paths) -> dict[str, dict[str, Any]]:
    """Weak pairs per variant: generated, kept by the filter, used in training."""
    counts = {}
    for variant in WEAK_VARIANTS:
        train = read_manifest(paths.stage("train", variant)) or {}
        row = {"generated": count_pairs(paths.stage("generate", variant)),
               "filtered": count_pairs(paths.stage("filter", variant)),
               "trained": train.get("summary", {}).get("weak_pairs")}
        if any(value is not None for value in row.values()):
            counts[variant] = row
    return counts


def training_summaries(paths: Paths) -> dict[str, dict[str, Any]]:
    keys = ("labeled_pairs", "weak_pairs", "dev_pairs", "hard_negatives", "epochs", "steps",
            "weak_steps", "warmup_steps", "train_seconds", "seconds_per_step", "train_loss", "device")
    out = {}
    for variant in TRAINED:
        manifest = read_manifest(paths.stage("train", variant))
        if manifest:
            out[variant] = {k: manifest["summary"].get(k) for k in keys}
    return out


def unequal_steps_warning(training: dict[str, dict[str, Any]]) -> str | None:
    """One line for the top of a report when the trained systems took different numbers of
    optimizer steps (weak-only steps of two-stage training counted): their differences then mix
    the training data with the training budget."""
    steps = {system: (t.get("steps") or 0) + (t.get("weak_steps") or 0)
             for system, t in training.items()}
    if len(set(steps.values())) < 2:
        return None
    counts = ", ".join(f"{system} {n}" for system, n in steps.items())
    return (f"**Warning: the trained systems took different numbers of optimizer steps ({counts}),"
            " so their differences mix the training data with the training budget (fix: set"
            " `train.steps` in the pipeline, the same steps for every system).**")


def exports(paths: Paths) -> dict[str, dict[str, Any]]:
    """The finished ``sptar export`` runs of the experiment: folder and pair counts."""
    out = {}
    for variant in WEAK_VARIANTS:
        manifest = read_manifest(paths.stage("export", variant))
        if manifest:
            summary = manifest["summary"]
            out[variant] = {"folder": str(paths.stage("export", variant)),
                            "gold_pairs": summary.get("gold_pairs"),
                            "weak_pairs": summary.get("weak_pairs")}
    return out
