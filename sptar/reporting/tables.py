"""Markdown tables of a comparison of systems: metric tables and paired-test tables.

Shared by the report of one run (:mod:`sptar.stages.report`) and the report over seeds
(:mod:`sptar.stages.repeats`). A metric cell is a number, or ``(mean, half-width)`` of an interval.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

Cell = float | tuple[float, float | None]


def p_value(value: float) -> str:
    return "<0.0001" if value < 1e-4 else f"{value:.4f}"


def _mean(cell: Cell) -> float:
    return cell[0] if isinstance(cell, tuple) else cell


def _cell(cell: Cell, bold: bool) -> str:
    if isinstance(cell, tuple):
        mean, half = cell
        text = f"{mean:.4f}" if half is None else f"{mean:.4f} ± {half:.4f}"
    else:
        text = f"{cell:.4f}"
    return f"**{text}**" if bold else text


def metric_table(rows: Mapping[str, Mapping[str, Cell]], columns: Sequence[tuple[str, str]]) -> list[str]:
    """``rows``: ``{system: {key: cell}}``; ``columns``: ``(key, heading)``. Bold: best mean of a
    column (when more than one system)."""
    lines = ["| system | " + " | ".join(heading for _, heading in columns) + " |",
             "|---|" + "---:|" * len(columns)]
    best = {key: max(_mean(row[key]) for row in rows.values()) for key, _ in columns}
    for system, row in rows.items():
        cells = [_cell(row[key], len(rows) > 1 and _mean(row[key]) == best[key]) for key, _ in columns]
        lines.append(f"| {system} | " + " | ".join(cells) + " |")
    return lines


def significance_table(sig: Mapping[str, Any]) -> list[str]:
    """Δ, raw p-values and (for the primary comparisons) Holm-corrected ones, per metric."""
    header, rule = "| system |", "|---|"
    for metric in sig["metrics"]:
        header += f" Δ{metric} | p t-test | p randomization | Holm p t | Holm p rand. |"
        rule += "---:|---:|---:|---:|---:|"
    lines = [header, rule]
    for other, tests in sig["tests"].items():
        cells = []
        for metric in sig["metrics"]:
            test = tests[metric]
            holm = ([p_value(test["p_t_holm"]), p_value(test["p_randomization_holm"])]
                    if "p_t_holm" in test else ["–", "–"])
            cells += [f"{test['mean_diff']:+.4f}", p_value(test["p_t"]),
                      p_value(test["p_randomization"]), *holm]
        lines.append(f"| {other} | " + " | ".join(cells) + " |")
    return lines


def significance_note(sig: Mapping[str, Any], averaged_seeds: int | None = None) -> str:
    """What the paired tests of ``significance_table`` are, and what they account for."""
    reference, primary = sig["reference"], [p for p in sig["primary"] if p in sig["tests"]]
    family = (f"Holm-corrected over the primary comparisons ({', '.join(f'{reference} vs {p}' for p in primary)}),"
              f" per metric and test; the other p-values are per comparison."
              if primary else "No primary comparison among the systems: p-values are per comparison.")
    tests = (f"Δ = {reference} − system (mean over queries). Paired two-sided t-test and paired "
             "two-sided randomization test of the mean difference (sign flips: every assignment "
             f"when the queries that differ allow at most {sig['resamples']}, else "
             f"{sig['resamples']} random ones, seed {sig['seed']}). {family}")
    if averaged_seeds is None:
        scope = (" The tests account for the sampling of queries only: this table rests on one run"
                 f" (seed {sig['seed']}: one split, one tuning, one generation, one training), whose"
                 " own randomness they do not measure; `make all SEEDS='1 2 3'` repeats the run.")
    else:
        scope = (f" Each query's score is its mean over the {averaged_seeds} seeds (the seeds in"
                 " which it was a validation query, for validation), so the tests account for the"
                 " sampling of queries and average over, but do not test, the randomness of each"
                 " run (split, tuning, generation, training).")
    return tests + scope
