"""Report stage: one table comparing every configured system on the evaluation split.

Reads: ``evaluate/<system>/metrics.json`` for each system in ``report.systems``, the split
summary, and every stage manifest of the experiment (for wall times).
Writes to ``data/runs/<experiment>/report/``: ``report.md`` and ``report.json``
(``{"dataset", "experiment", "split", "systems": {system: {metric: value}}, "timings": {...}}``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sptar.atomic import atomic_write
from sptar.config import Config
from sptar.formats import read_json, write_json
from sptar.manifest import read_manifest
from sptar.metrics import MAIN_METRICS, METRICS
from sptar.paths import Paths

TABLE_METRICS = ("NDCG@10", "MAP@100", "Recall@100", "MRR@10", "NDCG@100", "Recall@1000", "P@10")


def sections() -> tuple[str, ...]:
    return ("dataset.name", "report", "evaluate", "models")


def output_dir(paths: Paths) -> Path:
    return paths.stage("report")


def upstream(cfg: Config, paths: Paths) -> list[Path]:
    return [paths.stage("evaluate", s) / "manifest.json" for s in cfg.report.systems]


def stage_timings(paths: Paths) -> dict[str, float]:
    """Wall seconds of every finished stage of the experiment, keyed ``stage[/option]``."""
    timings: dict[str, float] = {}
    data = read_manifest(paths.beir)
    if data:
        timings["data"] = data["wall_time_s"]
    for manifest_path in sorted(paths.runs.glob("**/manifest.json")):
        folder = manifest_path.parent
        if folder == output_dir(paths):
            continue
        manifest = read_manifest(folder)
        if manifest:
            timings[str(folder.relative_to(paths.runs))] = manifest["wall_time_s"]
    return timings


def build_report(cfg: Config, paths: Paths) -> dict[str, Any]:
    systems = {s: read_json(paths.stage("evaluate", s) / "metrics.json") for s in cfg.report.systems}
    evaluate = read_manifest(paths.stage("evaluate", cfg.report.systems[0])) or {}
    split = read_manifest(paths.stage("split"))
    return {
        "dataset": cfg.dataset.name,
        "experiment": cfg.experiment,
        "split": cfg.evaluate.split,
        "queries": evaluate.get("summary", {}).get("queries"),
        "split_sizes": split["summary"] if split else None,
        "models": {"llm": cfg.models.llm, "encoder": cfg.models.encoder},
        "systems": systems,
        "timings": stage_timings(paths),
    }


def render_markdown(report: dict[str, Any]) -> str:
    metrics = [m for m in TABLE_METRICS if m in METRICS]
    lines = [
        f"# {report['experiment']}: {report['dataset']} ({report['split']} split, "
        f"{report['queries']} queries)",
        "",
        f"Models: encoder `{report['models']['encoder']}`, LLM `{report['models']['llm']}`.",
        "",
        "| system | " + " | ".join(metrics) + " |",
        "|---|" + "---:|" * len(metrics),
    ]
    best = {m: max(s[m] for s in report["systems"].values()) for m in metrics}
    for name, values in report["systems"].items():
        cells = [f"**{values[m]:.4f}**" if values[m] == best[m] and len(report["systems"]) > 1
                 else f"{values[m]:.4f}" for m in metrics]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if report.get("split_sizes"):
        sizes = report["split_sizes"]
        lines += ["", "## Few-shot split", "",
                  f"- prompt-train: {sizes['prompt_train_queries']} queries, "
                  f"{sizes['prompt_train_pairs']} pairs",
                  f"- prompt-eval: {sizes['prompt_eval_queries']} queries, "
                  f"{sizes['prompt_eval_pairs']} pairs",
                  f"- unlabeled pool: {sizes['unlabeled_docs']} documents"]
    lines += ["", "## Wall time per stage (s)", "", "| stage | seconds |", "|---|---:|"]
    lines += [f"| {stage} | {seconds:.1f} |" for stage, seconds in report["timings"].items()]
    lines += ["", f"Main metrics: {', '.join(MAIN_METRICS)}. Bold: best per column.", ""]
    return "\n".join(lines)


def run(cfg: Config, paths: Paths) -> dict:
    report = build_report(cfg, paths)
    folder = output_dir(paths)
    write_json(folder / "report.json", report)
    with atomic_write(folder / "report.md") as handle:
        handle.write(render_markdown(report))
    return {"systems": {s: v["NDCG@10"] for s, v in report["systems"].items()}}
