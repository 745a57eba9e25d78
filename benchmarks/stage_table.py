"""The end-to-end table of two finished runs of one pipeline, e.g. before and after a speed-up.

    python benchmarks/stage_table.py BEFORE_RUN_DIR AFTER_RUN_DIR [--names before after]

Each RUN_DIR is a ``data/runs/<experiment>/`` folder. Per stage (in pipeline order): wall
seconds and CPU seconds from the manifests, and the span of the whole run (first stage start
to last stage end: the stages of a parallel ``make all`` overlap, so the span is less than the
sum). Then the main metrics of every evaluated system on the validation queries in both runs and
their difference (choices are made on validation; the test split is for the final tables only).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common import report, run_paths, setup

from sptar.io.formats import read_json
from sptar.reporting.metrics import MAIN_METRICS
from sptar.reporting.runfacts import run_span, stage_timings


def timings(run: Path) -> dict[str, dict]:
    """The run's stage timings as the report shows them (data, the shared copy, left out)."""
    found = stage_timings(run_paths(run))
    found.pop("data", None)
    return found


def main() -> None:
    setup()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs=2, type=Path)
    parser.add_argument("--names", nargs=2, default=["before", "after"])
    parser.add_argument("--out", default="stage-table")
    args = parser.parse_args()
    (a, b), (na, nb) = args.runs, args.names
    ta, tb = timings(a), timings(b)
    rows = []
    for stage in [*ta, *(s for s in tb if s not in ta)]:
        wa, wb = (t.get(stage, {}).get("wall_s") for t in (ta, tb))
        ca, cb = (t.get(stage, {}).get("cpu_s") for t in (ta, tb))
        rows.append({"stage": stage, f"{na} wall s": wa, f"{nb} wall s": wb,
                     "wall ratio": round(wa / wb, 2) if wa and wb else "-",
                     f"{na} CPU s": ca, f"{nb} CPU s": cb})
    sa, sb = run_span(ta), run_span(tb)
    rows.append({"stage": "span (first start to last end)", f"{na} wall s": sa,
                 f"{nb} wall s": sb, "wall ratio": round(sa / sb, 2),
                 f"{na} CPU s": round(sum(t["cpu_s"] or 0 for t in ta.values()), 1),
                 f"{nb} CPU s": round(sum(t["cpu_s"] or 0 for t in tb.values()), 1)})
    report(f"{args.out}-stages", rows)
    quality = []
    for system in sorted({p.parent.parent.name for run in (a, b)
                          for p in run.glob("evaluate/*/validation/metrics.json")}):
        ra, rb = (read_json(path) if (path := run / "evaluate" / system / "validation" / "metrics.json"
                                      ).is_file() else {} for run in (a, b))
        row = {"system": system}
        for metric in MAIN_METRICS:
            row[f"{metric} {na}"] = ra.get(metric)
            row[f"{metric} {nb}"] = rb.get(metric)
            if metric == "NDCG@10" and ra and rb:
                row["NDCG@10 diff"] = round(rb[metric] - ra[metric], 5)
        quality.append(row)
    report(f"{args.out}-metrics", quality)


if __name__ == "__main__":
    main()
