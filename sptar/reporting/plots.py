"""Every chart sptar draws: the prompt-tuning loss curve and the report's metrics per system."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sptar.io.atomic import atomic_write
from sptar.reporting.metrics import MAIN_METRICS


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


def plot_metrics(report: dict[str, Any], path: Path) -> None:
    """A grouped bar chart per split: one group per main metric, one bar per system."""
    import numpy as np

    plt = _pyplot()
    splits = report["splits"]
    fig, axes = plt.subplots(1, len(splits), figsize=(len(splits) * (2.2 + 1.6 * len(MAIN_METRICS)), 4.2),
                             dpi=120, squeeze=False)
    for ax, (split, result) in zip(axes[0], splits.items(), strict=True):
        systems = list(result["systems"])
        x = np.arange(len(MAIN_METRICS))
        width = 0.8 / max(len(systems), 1)
        for i, system in enumerate(systems):
            values = [result["systems"][system][m] for m in MAIN_METRICS]
            bars = ax.bar(x + (i - (len(systems) - 1) / 2) * width, values, width, label=system)
            ax.bar_label(bars, fmt="%.3f", fontsize=6, rotation=90, padding=2)
        ax.set_xticks(x, MAIN_METRICS)
        ax.set_ylim(0, 1.12)
        ax.set_ylabel("score")
        ax.set_title(f"{report['experiment']}: {report['dataset']} ({split}, "
                     f"{result['queries']} queries)")
        ax.legend(fontsize=8, ncols=min(len(systems), 5), loc="upper center",
                  bbox_to_anchor=(0.5, -0.07), frameon=False)
    fig.tight_layout()
    _save(fig, path)
