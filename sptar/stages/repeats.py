"""Repeats: one report over several runs of a pipeline that differ only in the seed.

``make all SEEDS='1 2 3'`` runs the whole pipeline once per seed, each in its own experiment
folder ``data/runs/<experiment>-seed<N>/`` (the seed drives the split, the tuning, the choice of
examples, sampling and training; the dataset copy, and the zero-shot corpus embeddings through
``data/cache/``, are shared). ``sptar repeats --config X --seeds 1 2 3`` (run by ``make all``
after the seeds) reads each run's evaluation and writes ``data/runs/<experiment>-seeds-1-2-3/``:

- ``report.json`` / ``report.md``: per split and system, every main metric's mean over the seeds
  with a 95% interval (Student's t with seeds − 1 degrees of freedom); the reference system
  against each other one on per-query scores averaged over the seeds (for validation, over the
  seeds in which the query was a validation query), paired t-test and randomization test, the
  primary comparisons Holm-corrected; the per-seed figures, training steps and weak-set counts.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sptar.config import Config, load_config
from sptar.errors import SptarError
from sptar.io.formats import read_json
from sptar.io.manifest import read_manifest
from sptar.io.paths import Paths
from sptar.outputs.evaluation import per_query_file
from sptar.outputs.report import write_report
from sptar.reporting.metrics import MAIN_METRICS
from sptar.reporting.significance import interval
from sptar.reporting.tables import metric_table, significance_note, significance_table
from sptar.systems import TRAINED, WEAK_VARIANTS

TESTED_METRICS = ("NDCG@10", "Recall@100")
PerQuery = dict[str, dict[str, float]]  # query id -> {metric: value}


def seed_experiment(experiment: str, seed: int) -> str:
    """The experiment folder of one seed's run."""
    return f"{experiment}-seed{seed}"


def seed_overrides(base: Config, seed: int) -> list[str]:
    """``--set`` items that make ``base`` one seed's run, in its own experiment folder."""
    return [f"seed={seed}", f"experiment={seed_experiment(base.experiment, seed)}"]


def seed_configs(name: str, overrides: Sequence[str], seeds: Sequence[int]) -> tuple[Config, list[Config]]:
    """The pipeline's config, and the same once per seed, each with its own experiment name."""
    base = load_config(name, list(overrides))
    return base, [load_config(name, [*overrides, *seed_overrides(base, seed)]) for seed in seeds]


def averaged_per_query(runs: Sequence[PerQuery]) -> PerQuery:
    """Each query's mean score over the runs that scored it."""
    sums: dict[str, dict[str, list[float]]] = {}
    for run in runs:
        for qid, scores in run.items():
            slot = sums.setdefault(qid, {})
            for metric, value in scores.items():
                slot.setdefault(metric, []).append(value)
    return {qid: {metric: statistics.fmean(values) for metric, values in scores.items()}
            for qid, scores in sorted(sums.items())}


def summarize(per_seed: Mapping[int, Mapping[str, PerQuery]], reference: str, primary: Sequence[str],
              resamples: int, seed: int) -> dict[str, Any]:
    """One split over the seeds. ``per_seed``: ``{seed: {system: per-query scores}}`` (every
    system of a seed scored on the same queries)."""
    from sptar.reporting.significance import against_reference

    systems = list(next(iter(per_seed.values())))
    means: dict[str, dict[str, Any]] = {}
    for system in systems:
        means[system] = {}
        for metric in MAIN_METRICS:
            values = [statistics.fmean(v[metric] for v in runs[system].values())
                      for runs in per_seed.values()]
            mean, half = interval(values)
            means[system][metric] = {"mean": mean, "half_width": half, "per_seed": values}
    averaged = {system: averaged_per_query([runs[system] for runs in per_seed.values()])
                for system in systems}
    sig: dict[str, Any] = {"reference": reference, "primary": list(primary),
                           "metrics": list(TESTED_METRICS), "resamples": resamples, "seed": seed,
                           "tests": {}}
    if reference in systems:
        sig["tests"] = against_reference(averaged, reference, TESTED_METRICS, primary, resamples, seed)
    else:
        sig["skipped"] = f"reference system {reference!r} is not among report.systems"
    queries = {len(next(iter(runs.values()))) for runs in per_seed.values()}
    return {"queries_per_seed": sorted(queries), "queries": len(next(iter(averaged.values()))),
            "systems": means, "significance": sig}


def _read_seed(cfg: Config, paths: Paths, split: str) -> dict[str, PerQuery]:
    out = {}
    for system in cfg.report.systems:
        path = per_query_file(paths, system, split)
        if not path.is_file():
            raise SptarError(f"{path}: not found: the seed {cfg.seed} run has not scored {system} on"
                             f" {split} (fix: make all PIPELINE=... SEEDS=..., or run its evaluate stage)")
        out[system] = read_json(path)
    queries = {system: set(scores) for system, scores in out.items()}
    if len({frozenset(q) for q in queries.values()}) > 1:
        raise SptarError(f"{paths.stage('evaluate')}: the systems of seed {cfg.seed} were scored on"
                         f" different {split} queries (fix: re-run its evaluate stages)")
    return out


def _seed_facts(paths: Paths) -> dict[str, Any]:
    """Counts of one seed's run: split sizes, weak pairs kept, training steps, its span."""
    from sptar.reporting.runfacts import (
        run_span,
        stage_timings,
        training_summaries,
        weak_pair_counts,
    )

    split = read_manifest(paths.stage("split")) or {}
    return {"split": split.get("summary"), "weak_pairs": weak_pair_counts(paths),
            "training": training_summaries(paths), "span_s": run_span(stage_timings(paths))}


def build(base: Config, configs: Sequence[Config], root: str | Path | None = None) -> dict[str, Any]:
    from sptar.run.runner import paths_for

    splits: dict[str, Any] = {}
    for split in base.evaluate.splits:
        per_seed = {cfg.seed: _read_seed(cfg, paths_for(cfg, root), split) for cfg in configs}
        splits[split] = summarize(per_seed, base.report.reference, base.report.primary,
                                  base.report.resamples, base.seed)
    return {"dataset": base.dataset.name, "experiment": base.experiment,
            "seeds": [cfg.seed for cfg in configs], "pool": base.split.pool,
            "models": {"llm": base.models.llm, "encoder": base.models.encoder},
            "splits": splits,
            "runs": {cfg.seed: _seed_facts(paths_for(cfg, root)) for cfg in configs}}


def render(report: dict[str, Any]) -> str:
    from sptar.reporting.runfacts import unequal_steps_warning

    seeds, splits = report["seeds"], report["splits"]
    n = len(seeds)
    lines = [f"# {report['experiment']}: {report['dataset']} over {n} seeds "
             f"({', '.join(map(str, seeds))})", "",
             f"Models: encoder `{report['models']['encoder']}`, LLM `{report['models']['llm']}`. "
             f"Each seed is one whole run of the pipeline (split, tuning, generation, training); the "
             f"unlabeled pool follows `split.pool: {report['pool']}`. Cells: mean ± half-width of the "
             f"95% interval over the {n} seeds (t distribution, {n - 1} degrees of freedom).", ""]
    for seed, run in report["runs"].items():
        warning = unequal_steps_warning(run["training"])
        lines += [f"Seed {seed}: {warning}", ""] if warning else []
    systems = list(next(iter(splits.values()))["systems"])
    rows = {s: {f"{split}|{m}": _pair(splits[split]["systems"][s][m]) for split in splits
                for m in TESTED_METRICS} for s in systems}
    lines += metric_table(rows, [(f"{split}|{m}", f"{split} {m}") for split in splits
                                 for m in TESTED_METRICS])
    for split, result in splits.items():
        counts = "/".join(map(str, result["queries_per_seed"]))
        lines += ["", f"## {split} ({counts} queries per seed, {result['queries']} in all)", ""]
        lines += metric_table({s: {m: _pair(v[m]) for m in MAIN_METRICS}
                               for s, v in result["systems"].items()}, [(m, m) for m in MAIN_METRICS])
        lines += ["", "nDCG@10 per seed:", "",
                  "| system | " + " | ".join(f"seed {s}" for s in seeds) + " |",
                  "|---|" + "---:|" * n]
        lines += [f"| {s} | " + " | ".join(f"{v:.4f}" for v in values["NDCG@10"]["per_seed"]) + " |"
                  for s, values in result["systems"].items()]
        sig = result["significance"]
        lines += ["", f"### {split}: paired tests on per-query scores averaged over the seeds, "
                  f"{sig['reference']} vs each system", ""]
        lines += ([f"Skipped: {sig['skipped']}."] if sig.get("skipped") else
                  significance_table(sig) + ["", significance_note(sig, averaged_seeds=n)])
    lines += ["", "## Each run", "", "| seed | weak pairs kept (inpars / sptar) | training steps "
              "(wo-aug / inpars / sptar) | span of the run s |", "|---:|---|---|---:|"]
    for seed, run in report["runs"].items():
        kept = " / ".join(_kept(run["weak_pairs"].get(v)) for v in WEAK_VARIANTS)
        steps = " / ".join(str(run["training"].get(v, {}).get("steps", "–"))
                           for v in TRAINED)
        span = "–" if run["span_s"] is None else f"{run['span_s']:.0f}"
        lines.append(f"| {seed} | {kept} | {steps} | {span} |")
    return "\n".join(lines + [""])


def _pair(cell: Mapping[str, Any]) -> tuple[float, float | None]:
    return cell["mean"], cell["half_width"]


def _kept(row: Mapping[str, Any] | None) -> str:
    filtered = (row or {}).get("filtered")
    return "–" if not filtered else str(filtered["pairs"])


def output_dir(base: Config, seeds: Sequence[int], root: str | Path | None = None) -> Path:
    from sptar.run.runner import paths_for

    return paths_for(base, root).runs.parent / f"{base.experiment}-seeds-{'-'.join(map(str, seeds))}"


def run(name: str, overrides: Sequence[str], seeds: Sequence[int],
        root: str | Path | None = None) -> Path:
    """Write the report over ``seeds``; return its folder."""
    if len(set(seeds)) != len(seeds) or not seeds:
        raise SptarError(f"--seeds {' '.join(map(str, seeds))}: give distinct seeds (fix: e.g. --seeds 1 2 3)")
    base, configs = seed_configs(name, overrides, seeds)
    report = build(base, configs, root)
    folder = output_dir(base, seeds, root)
    write_report(folder, report, render(report))
    return folder
