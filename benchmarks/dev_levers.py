"""Choose training levers on a dev set carved from the labeled pairs, never on the test split.

Each ``--setting 'NAME=key=value;key=value'`` (``NAME=`` alone: the pipeline as it is; ``--set``
items apply to every setting) trains the chosen variants with ``train.dev_fraction`` of the
labeled queries held out, in its own experiment folder ``data/runs/<pipeline>-dev-<NAME>/``: split, tune and generate are copied from the
pipeline's finished run (``make generate`` first), filter and train run there. The table is the
dev nDCG@10 (the dev queries' positives plus BM25's top ``train.dev_candidates`` as the corpus)
of each setting and variant; ``benchmarks/results/dev-levers-<pipeline>.json`` keeps it.

    python benchmarks/dev_levers.py scifact-quick --variants sptar inpars \\
        --set train.dev_candidates=30 --setting base= --setting epochs2=train.epochs=2
"""

from __future__ import annotations

import argparse
import shutil

from common import report

from sptar.config import load_config
from sptar.stages import execute, paths_for

COPIED = ("split", "tune", "generate")


def parse_setting(text: str) -> tuple[str, list[str]]:
    name, _, sets = text.partition("=")
    return name, [item for item in sets.split(";") if item]


def run_setting(pipeline: str, name: str, sets: list[str], variants: list[str],
                dev_fraction: float) -> list[dict]:
    base = paths_for(load_config(pipeline))
    experiment = f"{pipeline}-dev-{name}"
    cfg = load_config(pipeline, [f"experiment={experiment}", f"train.dev_fraction={dev_fraction}",
                                 *sets])
    paths = paths_for(cfg)
    for stage in COPIED:
        if not (paths.runs / stage).exists():
            shutil.copytree(base.runs / stage, paths.runs / stage)
    rows = []
    for variant in variants:
        if variant != "wo-aug":
            execute("filter", cfg, paths, variant=variant)
        summary = execute("train", cfg, paths, variant=variant)["summary"]
        rows.append({"setting": name, "overrides": " ".join(sets) or "-", "variant": variant,
                     "weak_pairs": summary["weak_pairs"], "dev_queries": summary["dev_queries"],
                     "steps": summary["steps"], "dev_ndcg@10": summary["best_dev_ndcg@10"],
                     "train_s": summary["train_seconds"]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pipeline")
    parser.add_argument("--variants", nargs="+", default=["sptar", "inpars", "wo-aug"])
    parser.add_argument("--setting", action="append", default=[], type=parse_setting)
    parser.add_argument("--set", action="append", default=[], dest="common")
    parser.add_argument("--dev-fraction", type=float, default=0.2)
    args = parser.parse_args()
    rows = []
    for name, sets in args.setting or [("base", [])]:
        rows += run_setting(args.pipeline, name, [*args.common, *sets], args.variants,
                            args.dev_fraction)
    report(f"dev-levers-{args.pipeline}", rows, {"dev_fraction": args.dev_fraction,
                                                 "common": args.common})


if __name__ == "__main__":
    main()
