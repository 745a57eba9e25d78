"""The lever table: settings of a pipeline compared on the validation queries, over seeds.

Each ``--setting 'NAME=key=value;key=value'`` (``NAME=`` alone: the pipeline as it is) runs, for
every seed, in its own experiment folder ``data/runs/<pipeline>-lever-<NAME>-seed<N>/``: the
finished stages of that seed's run (``data/runs/<pipeline>-seed<N>/``, from
``make all SEEDS='...'``) are hard-linked in first, so a stage whose config the setting does not
change is skipped (and a trained model's corpus embeddings come from the cache); the rest runs.
Systems are evaluated on ``validation`` only: the test split plays no part in any choice.

The table gives, per setting and system, validation nDCG@10 (mean ± 95% interval over the seeds),
the difference from the first setting's same system on per-query scores averaged over the seeds
with its paired randomization and t-test p-values, and the weak pairs kept.
``benchmarks/results/levers-<pipeline>-<out>.json`` keeps it.

    python benchmarks/levers.py scifact-quick --seeds 1 2 3 --jobs 2 \\
        --setting base= --setting int8off=dense.quantize=none --systems zero-shot wo-aug sptar
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from common import report, setup

LINKED = ("split", "tune", "generate", "filter", "train")  # stages that a setting may reuse
TRAINED = ("wo-aug", "inpars", "sptar")


def parse_setting(text: str) -> tuple[str, list[str]]:
    name, _, sets = text.partition("=")
    return name, [item for item in sets.split(";") if item]


def lever_config(pipeline: str, name: str, sets: list[str], seed: int):
    """The setting's config for one seed, in its own experiment folder."""
    from sptar.config import load_config
    from sptar.stages.repeats import seed_overrides

    base = load_config(pipeline, [*sets, f"experiment={pipeline}-lever-{name}"])
    return load_config(pipeline, [*sets, f"experiment={pipeline}-lever-{name}",
                                  *seed_overrides(base, seed), "evaluate.splits=[validation]"])


def stages_for(systems: list[str]) -> list[tuple[str, dict[str, str]]]:
    """What the systems need, in pipeline order."""
    weak = [v for v in ("inpars", "sptar") if v in systems]
    stages = [("split", {})] + ([("tune", {})] if "sptar" in systems else [])
    stages += [(stage, {"variant": v}) for v in weak for stage in ("generate", "filter")]
    stages += [("train", {"variant": v}) for v in TRAINED if v in systems]
    return stages + [("evaluate", {"system": s}) for s in systems]


def link_base(base_runs: Path, runs: Path) -> None:
    """Hard-link the finished stages of the seed's own run (outputs are replaced, never edited
    in place, so the base run keeps its files)."""
    for stage in LINKED:
        source, target = base_runs / stage, runs / stage
        if source.is_dir() and not target.exists():
            shutil.copytree(source, target, copy_function=os.link)


def run_job(pipeline: str, name: str, sets: list[str], seed: int, systems: list[str]) -> str:
    """One setting and seed: every stage its systems need (fresh ones are skipped)."""
    from sptar.config import load_config
    from sptar.run.runner import execute, paths_for
    from sptar.stages.repeats import seed_experiment

    cfg = lever_config(pipeline, name, sets, seed)
    paths = paths_for(cfg)
    base = paths_for(load_config(pipeline))
    link_base(base.runs.parent / seed_experiment(base.experiment, seed), paths.runs)
    paths.runs.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(paths.runs / "levers.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)
    for stage, options in stages_for(systems):
        execute(stage, cfg, paths, **options)
    return cfg.experiment


def table(pipeline: str, settings: list[tuple[str, list[str]]], seeds: list[int],
          systems: list[str]) -> list[dict]:
    from sptar.io.formats import read_json
    from sptar.io.manifest import read_manifest
    from sptar.reporting.significance import compare_per_query, interval
    from sptar.run.runner import paths_for
    from sptar.stages.repeats import averaged_per_query

    scores: dict[tuple[str, str], dict] = {}
    rows = []
    for name, sets in settings:
        for system in systems:
            runs, means, kept, steps = [], [], [], []
            for seed in seeds:
                cfg = lever_config(pipeline, name, sets, seed)
                paths = paths_for(cfg)
                per_query = read_json(paths.stage("evaluate", system) / "validation" / "per_query.json")
                runs.append(per_query)
                means.append(sum(v["NDCG@10"] for v in per_query.values()) / len(per_query))
                if system in TRAINED:
                    summary = (read_manifest(paths.stage("train", system)) or {}).get("summary", {})
                    kept.append(summary.get("weak_pairs"))
                    steps.append(summary.get("steps"))
            scores[name, system] = averaged_per_query(runs)
            mean, half = interval(means)
            row = {"setting": name, "system": system, "nDCG@10": round(mean, 4),
                   "±95%": round(half, 4) if half is not None else "-",
                   "per seed": " ".join(f"{m:.4f}" for m in means)}
            first = settings[0][0]
            if name != first:
                test = compare_per_query(scores[name, system], scores[first, system], "NDCG@10",
                                         seed=0)
                row |= {f"Δ vs {first}": round(test.mean_diff, 4),
                        "p rand.": round(test.p_randomization, 4), "p t": round(test.p_t, 4)}
            else:
                row |= {f"Δ vs {first}": "-", "p rand.": "-", "p t": "-"}
            row |= {"weak pairs": " ".join(map(str, kept)) or "-",
                    "steps": " ".join(map(str, steps)) or "-", "overrides": " ".join(sets) or "-"}
            rows.append(row)
    return rows


def main() -> None:
    setup()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pipeline")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--setting", action="append", default=[], type=parse_setting)
    parser.add_argument("--set", action="append", default=[], dest="common",
                        help="an override for every setting")
    parser.add_argument("--systems", nargs="+", default=["wo-aug", "inpars", "sptar"])
    parser.add_argument("--jobs", type=int, default=2, help="(setting, seed) runs side by side")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads per run (default: the cores shared among the jobs)")
    parser.add_argument("--out", default="levers", help="results file suffix")
    parser.add_argument("--table-only", action="store_true", help="only print the table")
    args = parser.parse_args()
    settings = [(name, [*args.common, *sets]) for name, sets in args.setting or [("base", [])]]
    if not args.table_only:
        threads = str(args.threads or max(1, (os.cpu_count() or 1) // args.jobs))
        os.environ.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
        jobs = [(args.pipeline, name, sets, seed, args.systems)
                for name, sets in settings for seed in args.seeds]
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            for done in pool.map(run_job, *zip(*jobs, strict=True)):
                print(f"done: {done}", flush=True)
    report(f"levers-{args.pipeline}-{args.out}", table(args.pipeline, settings, args.seeds, args.systems),
           {"seeds": args.seeds, "split": "validation", "settings": dict(settings)})


if __name__ == "__main__":
    main()
