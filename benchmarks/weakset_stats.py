"""Weak-set statistics of finished runs: what each LLM prompt wrote, what the filter kept, and
what it cost.

    python benchmarks/weakset_stats.py data/runs/scifact-quick-seed1 data/runs/scifact-quick-seed2 ...

Per run and variant (inpars, sptar): documents the generator wrote for, queries generated,
queries kept after each filter step, generated queries that copy an in-context example's query
or any labeled query (normalised text), distinct generated queries, and CPU seconds per kept weak
pair (generate + filter, plus tune for sptar, from the stage manifests). A last row per variant
sums the runs. Reads only files the stages wrote (no test or validation queries).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common import report, run_paths, setup

from sptar.io.manifest import read_manifest
from sptar.outputs.fewshot import load_split
from sptar.outputs.weakset import read_weak_set
from sptar.text import normalized

VARIANTS = ("inpars", "sptar")


def stats(run: Path, variant: str) -> dict | None:
    paths = run_paths(run)
    generated_dir, kept_dir = paths.stage("generate", variant), paths.stage("filter", variant)
    generate, kept = read_manifest(generated_dir), read_manifest(kept_dir)
    if not generate or not kept:
        return None
    split = load_split(paths)
    labeled = {normalized(split.queries[qid]) for qid, _ in split.pairs("labeled")}
    example_ids = [str(pair[0]) for pair in generate["summary"]["prompt"]["examples"]]
    examples = {normalized(split.queries[qid]) for qid in example_ids if qid in split.queries}
    texts = [normalized(q) for q in read_weak_set(generated_dir).queries.values()]
    cpu = generate["cpu_time_s"] + kept["cpu_time_s"]
    if variant == "sptar":
        cpu += (read_manifest(paths.stage("tune")) or {}).get("cpu_time_s", 0.0)
    n_kept = kept["summary"]["kept"]
    steps = " → ".join(f"{step['filter']} {step['kept']}" for step in kept["summary"]["steps"])
    return {"run": run.name, "variant": variant, "documents": generate["summary"]["documents"],
            "generated": len(texts), "distinct": len(set(texts)),
            "copy example": sum(t in examples for t in texts),
            "copy labeled": sum(t in labeled for t in texts),
            "kept per step": steps, "kept": n_kept, "cpu s": round(cpu),
            "cpu s / kept": round(cpu / n_kept, 2) if n_kept else "-"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=lambda text: Path(text).resolve())
    parser.add_argument("--out", default="weakset-stats")
    args = parser.parse_args()
    setup()  # after resolving the run folders: setup works from the repository root
    rows = []
    for variant in VARIANTS:
        found = [row for run in args.runs if (row := stats(run, variant))]
        rows += found
        if len(found) > 1:
            total = {key: sum(row[key] for row in found) for key in
                     ("documents", "generated", "distinct", "copy example", "copy labeled", "kept", "cpu s")}
            total |= {"run": "all", "variant": variant, "kept per step": "-",
                      "cpu s / kept": round(total["cpu s"] / total["kept"], 2) if total["kept"] else "-"}
            rows.append(total)
    report(args.out, rows, {"runs": [str(run) for run in args.runs]})


if __name__ == "__main__":
    main()
