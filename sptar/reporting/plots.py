"""Every chart sptar draws: the prompt-tuning loss curve and the report's systems with their
intervals and paired differences."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sptar.io.atomic import atomic_write


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    with atomic_write(path, "wb") as handle:
        fig.savefig(handle, format="png")
    _pyplot().close(fig)


def write_loss_curve(path: Path, log_rows: Sequence[dict[str, Any]], untuned: float,
                     title: str) -> None:
    """Training and eval loss of prompt tuning against the step, with the untuned baseline."""
    plt = _pyplot()
    steps = [r for r in log_rows if r["type"] == "step"]
    evals = [r for r in log_rows if r["type"] == "eval"]
    window = max(1, len(steps) // 5)
    smooth = [sum(r["loss"] for r in steps[max(0, i + 1 - window):i + 1]) / min(window, i + 1)
              for i in range(len(steps))]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    ax.plot([r["step"] for r in steps], [r["loss"] for r in steps], lw=0.6, alpha=0.35, color="C0",
            label="training loss")
    ax.plot([r["step"] for r in steps], smooth, lw=1.2, color="C0",
            label=f"training loss, mean of last {window} steps")
    ax.plot([r["step"] for r in evals], [r["eval_loss"] for r in evals], "o-", lw=1.5, color="C1",
            label="eval loss (prompt-eval pairs)")
    ax.axhline(untuned, ls="--", lw=1, color="C2", label="untuned LLM, InPars prompt (eval)")
    best = [r for r in evals if r["best"]]
    if best:
        ax.scatter([best[-1]["step"]], [best[-1]["eval_loss"]], s=120, facecolors="none",
                   edgecolors="red", zorder=3, label="kept prompt")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("mean NLL per query token")
    ax.set_title(title, fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)


CHART_METRIC = "NDCG@10"


def _p_label(test: dict[str, Any]) -> str:
    """The randomization p of a comparison, Holm-corrected where it belongs to the family."""
    if "p_randomization_holm" in test:
        return f"p {test['p_randomization_holm']:.3g} (Holm)"
    return f"p {test['p_randomization']:.3g}"


def plot_metrics(report: dict[str, Any], path: Path) -> None:
    """Per split, two panels on scales fitted to the data (differences of 0.01 stay visible):
    each system's nDCG@10 with its 95% interval over the queries, and the reference system's
    paired difference to every other system with its 95% interval and p-value."""
    plt = _pyplot()
    splits = report["splits"]
    fig, axes = plt.subplots(len(splits), 2, figsize=(11, 0.6 + 2.4 * len(splits)), dpi=120,
                             squeeze=False)
    for row, (split, result) in zip(axes, splits.items(), strict=True):
        systems = list(result["systems"])
        values = [result["systems"][s][CHART_METRIC] for s in systems]
        halves = [(result.get("intervals", {}).get(s, {}).get(CHART_METRIC) or 0.0) for s in systems]
        y = list(range(len(systems)))[::-1]
        ax = row[0]
        ax.errorbar(values, y, xerr=halves, fmt="o", capsize=3, color="C0")
        for value, half, level in zip(values, halves, y, strict=True):
            ax.annotate(f"{value:.3f}", (value + half, level), xytext=(4, 0),
                        textcoords="offset points", va="center", fontsize=7)
        ax.set_yticks(y, systems)
        low = min(v - h for v, h in zip(values, halves, strict=True))
        high = max(v + h for v, h in zip(values, halves, strict=True))
        pad = max(0.01, 0.15 * (high - low))
        ax.set_xlim(low - pad, high + 2 * pad)
        ax.set_xlabel(f"{CHART_METRIC} (95% interval over queries)")
        ax.set_title(f"{report['dataset']} {split}, {result['queries']} queries", fontsize=9)
        ax.grid(axis="x", alpha=0.3)

        ax = row[1]
        sig = result.get("significance", {})
        tests = {other: metrics[CHART_METRIC] for other, metrics in sig.get("tests", {}).items()
                 if CHART_METRIC in metrics}
        reference = sig.get("reference", "")
        if not tests:
            ax.text(0.5, 0.5, sig.get("skipped", "no paired tests"), ha="center", va="center",
                    fontsize=8, transform=ax.transAxes)
            ax.set_axis_off()
            continue
        others = list(tests)
        diffs = [tests[o]["mean_diff"] for o in others]
        widths = [tests[o].get("half_width") or 0.0 for o in others]
        y = list(range(len(others)))[::-1]
        colors = ["C2" if d - w > 0 else "C3" if d + w < 0 else "C7"
                  for d, w in zip(diffs, widths, strict=True)]
        for d, w, level, color in zip(diffs, widths, y, colors, strict=True):
            ax.errorbar([d], [level], xerr=[w], fmt="o", capsize=3, color=color)
        for other, d, w, level in zip(others, diffs, widths, y, strict=True):
            ax.annotate(f"{d:+.3f}, {_p_label(tests[other])}", (d + w, level), xytext=(4, 0),
                        textcoords="offset points", va="center", fontsize=7)
        ax.axvline(0.0, color="black", lw=0.8)
        ax.set_yticks(y, [f"{reference} − {o}" for o in others])
        reach = max(abs(d) + w for d, w in zip(diffs, widths, strict=True)) or 0.01
        ax.set_xlim(-1.15 * reach, 1.9 * reach)
        ax.set_xlabel(f"paired difference in {CHART_METRIC} (95% interval)")
        ax.set_title(f"{reference} against each system ({split})", fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(report["experiment"], fontsize=10)
    fig.tight_layout()
    _save(fig, path)
