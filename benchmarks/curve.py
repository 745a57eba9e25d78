"""The learning curve: validation nDCG@10 against the number of weak pairs trained on, over seeds.

For every seed, the seed's own run (``data/runs/<pipeline>-seed<N>/``) makes the weak data once:
split, tune, generate and filter, both variants (finished stages are skipped). Then each point
``N`` of ``--points`` trains wo-aug, inpars and sptar in its own experiment folder
(``<pipeline>-lever-n<N>-s<steps>-seed<S>``, the seed's stages hard-linked in, as
``levers.py`` does) on the labeled pairs plus the first ``N`` filtered weak pairs of one seeded
order (``train.max_weak_pairs``: the sets are nested), with a budget that grows with the data:
``steps = min(--max-steps, train.steps + ceil(N / train.batch_size))``, the same for the three
systems at each point (wo-aug repeats its labeled pairs for those steps). ``all`` is every kept
pair. bm25 and zero-shot are evaluated once per seed. Only the validation split is scored.

Writes ``benchmarks/results/curve-<pipeline>.json`` (the table, every seed's figure, the paired
tests of sptar and inpars against wo-aug at each point) and ``curve-<pipeline>.png``: nDCG@10
against weak pairs, 95% intervals over the seeds, inpars and sptar as lines, wo-aug (the same
steps, no weak pair) dashed, bm25 and zero-shot as bands.

    python benchmarks/curve.py scifact-cpu --seeds 1 2 3 --points 250 500 1000 2000 all
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor

from common import RESULTS, report, setup
from levers import run_job

WEAK_VARIANTS = ("inpars", "sptar")
BASELINES = ("bm25", "zero-shot")


def point_steps(cfg, n: int | None, kept: int, cap: int) -> int:
    """The optimizer steps of a point: the pipeline's own steps plus one epoch of its weak pairs."""
    pairs = kept if n is None else min(n, kept)
    return min(cap, (cfg.train.steps or 0) + math.ceil(pairs / cfg.train.batch_size))


def prepare_seed(pipeline: str, seed: int, common: list[str]) -> dict[str, int]:
    """The seed's weak data (split, tune, generate, filter): kept pairs per variant."""
    from sptar.config import load_config
    from sptar.outputs.weakset import read_weak_set
    from sptar.run.runner import execute, paths_for
    from sptar.stages.repeats import seed_overrides

    base = load_config(pipeline, common)
    cfg = load_config(pipeline, [*common, *seed_overrides(base, seed)])
    paths = paths_for(cfg)
    for stage, options in [("data", {}), ("split", {}), ("tune", {}),
                           *[(s, {"variant": v}) for v in WEAK_VARIANTS for s in ("generate", "filter")]]:
        execute(stage, cfg, paths, **options)
    return {v: len(read_weak_set(paths.stage("filter", v)).queries) for v in WEAK_VARIANTS}


def settings(pipeline: str, points: list[str], kept: int, cap: int,
             common: list[str]) -> list[tuple[str, list[str]]]:
    from sptar.config import load_config

    cfg = load_config(pipeline, common)
    out = []
    for point in points:
        n = None if point == "all" else int(point)
        steps = point_steps(cfg, n, kept, cap)
        sets = [f"train.steps={steps}", f"train.max_weak_pairs={'null' if n is None else n}"]
        out.append((f"n{point}-s{steps}", [*common, *sets]))
    return out


def curve_table(pipeline, points, seeds, named):
    """Per point and system: mean and interval over seeds, per seed, weak pairs trained on, and
    the paired test against wo-aug at the same point."""
    from levers import lever_config

    from sptar.io.formats import read_json
    from sptar.io.manifest import read_manifest
    from sptar.reporting.significance import compare_per_query, interval
    from sptar.run.runner import paths_for
    from sptar.stages.repeats import averaged_per_query

    rows = []
    for point, (name, sets) in zip(points, named, strict=True):
        averaged = {}
        for system in ("wo-aug", *WEAK_VARIANTS):
            per_seed, means, pairs, steps = [], [], [], []
            for seed in seeds:
                paths = paths_for(lever_config(pipeline, name, sets, seed))
                per_query = read_json(paths.stage("evaluate", system) / "validation" / "per_query.json")
                per_seed.append(per_query)
                means.append(sum(v["NDCG@10"] for v in per_query.values()) / len(per_query))
                summary = read_manifest(paths.stage("train", system))["summary"]
                pairs.append(summary["weak_pairs"])
                steps.append(summary["steps"])
            averaged[system] = averaged_per_query(per_seed)
            mean, half = interval(means)
            row = {"point": point, "system": system, "weak_pairs": pairs, "steps": steps,
                   "nDCG@10": round(mean, 4), "half_width": None if half is None else round(half, 4),
                   "per_seed": [round(m, 4) for m in means]}
            row |= {"vs_wo_aug": "-", "p_t": "-", "p_randomization": "-"}
            if system != "wo-aug":
                test = compare_per_query(averaged[system], averaged["wo-aug"], "NDCG@10", seed=0)
                row |= {"vs_wo_aug": round(test.mean_diff, 4), "p_t": round(test.p_t, 4),
                        "p_randomization": round(test.p_randomization, 4)}
            rows.append(row)
    return rows


def baselines(pipeline, seeds, common):
    from levers import lever_config

    from sptar.io.formats import read_json
    from sptar.reporting.significance import interval
    from sptar.run.runner import paths_for

    out = {}
    for system in BASELINES:
        means = []
        for seed in seeds:
            paths = paths_for(lever_config(pipeline, "baselines", common, seed))
            per_query = read_json(paths.stage("evaluate", system) / "validation" / "per_query.json")
            means.append(sum(v["NDCG@10"] for v in per_query.values()) / len(per_query))
        mean, half = interval(means)
        out[system] = {"nDCG@10": round(mean, 4), "half_width": None if half is None else round(half, 4),
                       "per_seed": [round(m, 4) for m in means]}
    return out


def plot(rows, bands, pipeline, seeds, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(7, 4.2))
    colors = {"bm25": "tab:gray", "zero-shot": "tab:olive"}
    for system, band in bands.items():
        half = band["half_width"] or 0.0
        ax.axhspan(band["nDCG@10"] - half, band["nDCG@10"] + half, color=colors[system], alpha=0.2)
        ax.axhline(band["nDCG@10"], color=colors[system], lw=1, label=f"{system} (±95%)")
    weak_x = {}
    for system, style in (("inpars", "o-"), ("sptar", "s-"), ("wo-aug", "^--")):
        mine = [r for r in rows if r["system"] == system]
        if system != "wo-aug":
            weak_x.update({r["point"]: max(1, sum(r["weak_pairs"]) / len(r["weak_pairs"])) for r in mine})
        xs = [weak_x.get(r["point"], 1) for r in mine] if system == "wo-aug" else \
            [max(1, sum(r["weak_pairs"]) / len(r["weak_pairs"])) for r in mine]
        ax.errorbar(xs, [r["nDCG@10"] for r in mine], yerr=[r["half_width"] or 0 for r in mine],
                    fmt=style, capsize=3, label=system + (" (same steps, no weak pair)"
                                                          if system == "wo-aug" else ""))
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    low, high = ax.get_ylim()
    ax.set_ylim(max(0.0, low), min(1.0, high))
    ax.set_xlabel("weak pairs trained on (mean over seeds; steps grow with them)")
    ax.set_ylabel("validation nDCG@10")
    ax.set_title(f"{pipeline}: learning curve over {len(seeds)} seed(s)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    setup()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pipeline")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--points", nargs="+", default=["250", "500", "1000", "2000", "all"])
    parser.add_argument("--max-steps", type=int, default=150, help="the steps of a point at most")
    parser.add_argument("--jobs", type=int, default=2, help="(point, seed) runs side by side")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads per run (default: the cores shared among the jobs)")
    parser.add_argument("--set", action="append", default=[], dest="common",
                        help="an override for every run, e.g. models.encoder=...")
    parser.add_argument("--table-only", action="store_true", help="only write the table and plot")
    args = parser.parse_args()
    for point in args.points:
        if point != "all" and not point.isdigit():
            parser.error(f"--points: {point!r} is neither a number of weak pairs nor 'all'")
    threads = str(args.threads or max(1, (os.cpu_count() or 1) // args.jobs))
    os.environ.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    # spawned workers: a process forked after torch / OpenVINO were loaded can hang in them
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=spawn) as pool:
        counts = pool.map(prepare_seed, *zip(*[(args.pipeline, seed, args.common)
                                               for seed in args.seeds], strict=True))
        kept = dict(zip(args.seeds, counts, strict=True))
    most = max(max(k.values()) for k in kept.values())
    named = settings(args.pipeline, args.points, most, args.max_steps, args.common)
    if not args.table_only:
        jobs = [(args.pipeline, "baselines", args.common, seed, list(BASELINES))
                for seed in args.seeds]
        jobs += [(args.pipeline, name, sets, seed, ["wo-aug", *WEAK_VARIANTS])
                 for name, sets in named for seed in args.seeds]
        with ProcessPoolExecutor(max_workers=args.jobs, mp_context=spawn) as pool:
            for done in pool.map(run_job, *zip(*jobs, strict=True)):
                print(f"done: {done}", flush=True)
    rows = curve_table(args.pipeline, args.points, args.seeds, named)
    bands = baselines(args.pipeline, args.seeds, args.common)
    RESULTS.mkdir(parents=True, exist_ok=True)
    plot(rows, bands, args.pipeline, args.seeds, RESULTS / f"curve-{args.pipeline}.png")
    report(f"curve-{args.pipeline}", rows, {"seeds": args.seeds, "split": "validation",
                                            "kept_pairs": kept, "baselines": bands,
                                            "settings": dict(named)})


if __name__ == "__main__":
    main()
