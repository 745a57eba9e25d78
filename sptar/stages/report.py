"""Report stage: the systems compared on the validation and the test queries, side by side.

Reads: ``evaluate/<system>/<split>/{metrics.json, per_query.json}`` for each system in
``report.systems`` and each split the evaluate stage scored, the split summary, the weak sets of
``generate/<variant>/`` and ``filter/<variant>/`` when present, the train manifests, and every
stage manifest of the experiment (for wall times).
Writes to ``data/runs/<experiment>/report/``: ``report.md``, ``metrics.png`` (per split: each
system's nDCG@10 with its 95% interval over the queries, and the reference system's paired
difference to every other system with its interval and p-value, on scales that show the spread)
and ``report.json`` (``{"dataset", "experiment", "seed", "splits": {split: {"queries",
"systems": {system: {metric: value}}, "intervals": {system: {metric: half-width}},
"significance"}},
"skipped", "split_sizes", "weak_pairs", "training", "exports", "timings"}``). Without any scored
split (a local corpus without test examples) the report says so (``"evaluated": false``) and
lists what the pipeline made.

Significance, per split: the reference system (``report.reference``, default ``sptar``) against
every other configured system on per-query nDCG@10 and Recall@100, with a paired t-test and a
paired randomization test (``report.resamples`` sign flips, fixed seed); the comparisons with
``report.primary`` (wo-aug, inpars) are Holm-corrected together. Without the reference among the
systems the tests are skipped. One run is one seed: ``sptar.stages.repeats`` reports over several.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sptar.config import Config
from sptar.errors import SptarError
from sptar.io.manifest import manifests, read_manifest
from sptar.io.paths import Paths
from sptar.outputs.evaluation import per_query_file, read_metrics, read_per_query
from sptar.outputs.report import CHART, write_report
from sptar.reporting.metrics import MAIN_METRICS, METRICS
from sptar.reporting.plots import plot_metrics
from sptar.reporting.runfacts import (
    exports,
    run_span,
    stage_timings,
    training_summaries,
    unequal_steps_warning,
    weak_pair_counts,
)
from sptar.reporting.tables import metric_table, significance_note, significance_table

TABLE_METRICS = ("NDCG@10", "MAP@100", "Recall@100", "MRR@10", "NDCG@100", "Recall@1000", "P@10")
TESTED_METRICS = ("NDCG@10", "Recall@100")


def sections() -> tuple[str, ...]:
    return ("dataset.name", "report", "evaluate", "models", "seed")


def output_dir(paths: Paths) -> Path:
    return paths.stage("report")


def upstream(cfg: Config, paths: Paths) -> list[Path]:
    return manifests(*(paths.stage("evaluate", s) for s in cfg.report.systems))


def _number(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def evaluated_splits(cfg: Config, paths: Paths) -> tuple[list[str], dict[str, str]]:
    """The splits every system was scored on (in ``evaluate.splits`` order), and why the others
    were skipped."""
    scored: list[set[str]] = []
    skipped: dict[str, str] = {}
    for system in cfg.report.systems:
        summary = (read_manifest(paths.stage("evaluate", system)) or {}).get("summary", {})
        scored.append(set(summary.get("splits", {})))
        skipped.update(summary.get("skipped") or {})
    common = set.intersection(*scored) if scored else set()
    for name in set.union(*scored) - common if scored else ():
        raise SptarError(f"{paths.stage('evaluate')}: some systems were scored on the {name} split"
                         " and others not (fix: re-run sptar evaluate for every system with the same"
                         " evaluate.splits)")
    return [name for name in cfg.evaluate.splits if name in common], skipped


def significance(cfg: Config, paths: Paths, split: str) -> dict[str, Any]:
    """Paired tests of the reference system against every other configured system on one split."""
    from sptar.reporting.significance import against_reference

    reference, systems = cfg.report.reference, cfg.report.systems
    out: dict[str, Any] = {"reference": reference, "primary": list(cfg.report.primary),
                           "metrics": list(TESTED_METRICS), "resamples": cfg.report.resamples,
                           "seed": cfg.seed, "tests": {}}
    if reference not in systems:
        out["skipped"] = f"reference system {reference!r} is not among report.systems"
        return out
    per_query = {s: read_per_query(paths, s, split) for s in systems}
    try:
        out["tests"] = against_reference(per_query, reference, TESTED_METRICS, cfg.report.primary,
                                         cfg.report.resamples, cfg.seed)
    except ValueError as exc:
        other, _, why = str(exc).partition(": ")
        raise SptarError(f"{per_query_file(paths, other, split)}: cannot pair "
                         f"it with {reference}'s: {why} (fix: re-run sptar evaluate for both "
                         "systems)") from None
    return out


def query_intervals(paths: Paths, systems: list[str], split: str) -> dict[str, dict[str, float | None]]:
    """Each system's 95% t-interval half-width over the split's queries, per tested metric."""
    from sptar.reporting.significance import interval

    out = {}
    for system in systems:
        per_query = read_per_query(paths, system, split)
        out[system] = {metric: interval([scores[metric] for scores in per_query.values()])[1]
                       for metric in TESTED_METRICS}
    return out


def build_report(cfg: Config, paths: Paths, splits: list[str], skipped: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for split in splits:
        systems = {s: read_metrics(paths, s, split)
                   for s in cfg.report.systems}
        evaluate = read_manifest(paths.stage("evaluate", cfg.report.systems[0])) or {}
        out[split] = {"queries": evaluate["summary"]["splits"][split]["queries"], "systems": systems,
                      "intervals": query_intervals(paths, cfg.report.systems, split),
                      "significance": significance(cfg, paths, split)}
    split = read_manifest(paths.stage("split"))
    return {
        "dataset": cfg.dataset.name,
        "experiment": cfg.experiment,
        "seed": cfg.seed,
        "splits": out,
        "skipped": skipped,
        "split_sizes": split["summary"] if split else None,
        "pool": cfg.split.pool,
        "models": {"llm": cfg.models.llm, "encoder": cfg.models.encoder},
        "weak_pairs": weak_pair_counts(paths),
        "training": training_summaries(paths),
        "exports": exports(paths),
        "timings": stage_timings(paths),
    }


def render_significance(split: str, sig: dict[str, Any]) -> list[str]:
    lines = ["", f"### {split}: paired tests, {sig['reference']} vs each system", ""]
    if sig.get("skipped"):
        return lines + [f"Skipped: {sig['skipped']}."]
    return lines + significance_table(sig) + ["", significance_note(sig)]


def render_weak_pairs(report: dict[str, Any]) -> list[str]:
    lines = []
    if report.get("weak_pairs"):
        def fmt(count):
            return "–" if count is None else f"{count['pairs']} ({count['queries']} queries)"

        lines += ["", "## Weak pairs", "", "| variant | generated | kept by the filter | trained on |",
                  "|---|---:|---:|---:|"]
        for variant, row in report["weak_pairs"].items():
            trained = "–" if row["trained"] is None else str(row["trained"])
            lines.append(f"| {variant} | {fmt(row['generated'])} | {fmt(row['filtered'])} "
                         f"| {trained} |")
    if report.get("training"):
        lines += ["", "## Retriever training", "",
                  "| system | labeled pairs | weak pairs | dev pairs | hard negatives | epochs | steps "
                  "| warmup steps | s/step | train s | device |", "|---|" + "---:|" * 9 + "---|"]
        for system, t in report["training"].items():
            per_step = "–" if t["seconds_per_step"] is None else f"{t['seconds_per_step']:.2f}"
            lines.append(f"| {system} | {t['labeled_pairs']} | {t['weak_pairs']} | {t['dev_pairs']} "
                         f"| {t['hard_negatives']} | {t['epochs']} | {t['steps']} "
                         f"| {_number(t.get('warmup_steps'), 0)} | {per_step} "
                         f"| {t['train_seconds']:.1f} | {t['device']} |")
    return lines


def render_markdown(report: dict[str, Any]) -> str:
    splits = report["splits"]
    lines = [f"# {report['experiment']}: {report['dataset']} (seed {report['seed']})", "",
             f"Models: encoder `{report['models']['encoder']}`, LLM `{report['models']['llm']}`. "
             + protocol_line(report), "", *warning_lines(report)]
    side = [(f"{split}|{metric}", f"{split} {metric}") for split in splits for metric in TESTED_METRICS]
    rows = {system: {f"{split}|{metric}": splits[split]["systems"][system][metric]
                     for split in splits for metric in TESTED_METRICS}
            for system in next(iter(splits.values()))["systems"]}
    lines += metric_table(rows, side)
    for split, reason in report.get("skipped", {}).items():
        lines += ["", f"Not scored: {split} ({reason})."]
    lines += ["", f"![main metrics per system]({CHART})"]
    metrics = [m for m in TABLE_METRICS if m in METRICS]
    for split, result in splits.items():
        lines += ["", f"## {split} ({result['queries']} queries)", ""]
        lines += metric_table(result["systems"], [(m, m) for m in metrics])
        lines += render_significance(split, result["significance"])
    lines += render_pipeline(report)
    lines += ["", f"Main metrics: {', '.join(MAIN_METRICS)}. Bold: best per column.", ""]
    return "\n".join(lines)


def protocol_line(report: dict[str, Any]) -> str:
    """Where the labeled, validation and unlabeled data came from (and the pool protocol)."""
    sizes = report.get("split_sizes") or {}
    if not sizes:
        return ""
    return (f"Labeled: {sizes['prompt_train_queries']} prompt-train + {sizes['prompt_eval_queries']}"
            f" prompt-eval queries; validation: {sizes.get('validation_queries', 0)} queries"
            f" ({sizes.get('validation_source', 'none')}); unlabeled pool: {sizes['unlabeled_docs']}"
            f" documents (`split.pool: {report.get('pool')}`).")


def render_pipeline(report: dict[str, Any]) -> list[str]:
    """The split sizes, weak pairs, training and wall times: everything but the metrics."""
    lines = []
    if report.get("split_sizes"):
        sizes = report["split_sizes"]
        lines += ["", "## Few-shot split", "",
                  f"- prompt-train: {sizes['prompt_train_queries']} queries, "
                  f"{sizes['prompt_train_pairs']} pairs",
                  f"- prompt-eval: {sizes['prompt_eval_queries']} queries, "
                  f"{sizes['prompt_eval_pairs']} pairs",
                  f"- validation: {sizes.get('validation_queries', 0)} queries, "
                  f"{sizes.get('validation_pairs', 0)} judgements "
                  f"({sizes.get('validation_source', 'none')})",
                  f"- unlabeled pool: {sizes['unlabeled_docs']} documents"]
        for reason, count in (sizes.get("set_aside") or {}).items():
            lines.append(f"- leak guard: {count} set aside ({reason})")
    lines += render_weak_pairs(report)
    for variant, export in (report.get("exports") or {}).items():
        lines += ["", f"Exported training set ({variant}): `{export['folder']}` — "
                  f"{export['gold_pairs']} gold + {export['weak_pairs']} weak pairs."]
    lines += ["", "## Time per stage", "",
              "CPU seconds count every thread of the stage's process; a wall time well above the "
              "CPU time divided by the threads, or a load average above the core count, means the "
              "stage shared a busy machine.", "",
              "| stage | wall s | CPU s | load (1 min) |", "|---|---:|---:|---:|"]
    timings = report["timings"]
    lines += [f"| {stage} | {t['wall_s']:.1f} | {_number(t['cpu_s'])} | {_number(t['load'], 2)} |"
              for stage, t in timings.items()]
    cpu = [t["cpu_s"] for t in timings.values()]
    lines.append(f"| **sum of the stages** | {sum(t['wall_s'] for t in timings.values()):.1f} | "
                 f"{_number(sum(cpu) if None not in cpu else None)} | |")
    lines.append(f"| **span of the run** (first start to last end, without data; stages run side "
                 f"by side count once) | {_number(run_span(timings), 0)} | | |")
    return lines


def build_unevaluated(cfg: Config, paths: Paths, reason: str) -> dict[str, Any]:
    """The report of a dataset without the evaluation split: what was made, no metrics."""
    split = read_manifest(paths.stage("split"))
    return {"dataset": cfg.dataset.name, "experiment": cfg.experiment, "seed": cfg.seed,
            "evaluated": False, "reason": reason, "systems": {},
            "split_sizes": split["summary"] if split else None,
            "weak_pairs": weak_pair_counts(paths), "training": training_summaries(paths),
            "exports": exports(paths), "timings": stage_timings(paths)}


def warning_lines(report: dict[str, Any]) -> list[str]:
    warning = unequal_steps_warning(report.get("training") or {})
    return [warning, ""] if warning else []


def render_unevaluated(report: dict[str, Any]) -> str:
    lines = [f"# {report['experiment']}: {report['dataset']}", "", *warning_lines(report),
             f"**{report['reason'][0].upper()}{report['reason'][1:]}.** The pipeline made training "
             "data (and retrievers, where `sptar train` ran); add `dataset.test_examples` to the "
             "pipeline to evaluate them."]
    return "\n".join(lines + render_pipeline(report) + [""])


def run(cfg: Config, paths: Paths) -> dict:
    splits, skipped = evaluated_splits(cfg, paths)
    folder = output_dir(paths)
    if not splits:
        reason = "; ".join(skipped.values()) or "no split was scored"
        report = build_unevaluated(cfg, paths, reason)
        write_report(folder, report, render_unevaluated(report))
        return {"skipped": reason, "systems": {}}
    report = build_report(cfg, paths, splits, skipped)
    plot_metrics(report, folder / CHART)
    write_report(folder, report, render_markdown(report))
    return {"splits": {split: {s: v["NDCG@10"] for s, v in result["systems"].items()}
                       for split, result in report["splits"].items()},
            "reference": cfg.report.reference,
            "tested": sorted(next(iter(report["splits"].values()))["significance"]["tests"])}
