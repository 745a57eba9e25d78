"""``sptar <stage> --config <pipeline> [--set key=value ...]``: parse, set up logging, run.

Errors a user can fix print one line and exit with code 2 (``--debug`` shows the traceback).
A stage's whole log goes to ``log.txt`` in its folder; ``SPTAR_CONSOLE=status`` (set by
``make all``) shows short status lines on the terminal instead of everything
(:mod:`sptar.run.stagelog`).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from sptar.errors import SptarError
from sptar.run.stagelog import setup_console

log = logging.getLogger("sptar")

DESCRIPTION = ("sptar: from a document collection and a few labeled (query, document) pairs to a "
               "dense retriever, the way SPTAR does it: soft-prompt-tune an LLM on the pairs, have "
               "it write weak queries for unlabeled documents, filter them, train a bi-encoder, and "
               "evaluate it against BM25 and the baselines. Run the stages in order (make all does),"
               " each with the same --config.")

# run-time flags (see sptar.run.runner.RUN_FLAGS), added to the stages that take them
_FLAGS = {
    "overwrite": dict(action="store_true", default=None,
                      help="discard unfinished output written with a different config"),
    "shard": dict(type=int, metavar="I", help="run shard I of --num-shards (0-based);"
                  " default: $RANK under torchrun/accelerate, else 0"),
    "num_shards": dict(type=int, metavar="N", help="split the work into N shards;"
                       " default: $WORLD_SIZE, else 1"),
}


def _parser() -> argparse.ArgumentParser:
    from sptar.run.runner import RUN_FLAGS, STAGES

    parser = argparse.ArgumentParser(prog="sptar", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True, metavar="<command>")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", "-c", default="scifact-quick",
                        help="pipeline name (pipelines/<name>.yaml) or a YAML path")
    common.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a config value, e.g. tune.max_steps=60")
    common.add_argument("--seed", type=int, metavar="N", help="one run of a repeated pipeline:"
                        " seed N, in its own folder data/runs/<experiment>-seed<N>/")
    common.add_argument("--debug", action="store_true", help="show tracebacks")
    common.add_argument("--quiet", "-q", action="store_true", help="warnings and errors only")
    for name, (_, options) in STAGES.items():
        stage = sub.add_parser(name, parents=[common], help=f"run the {name} stage")
        stage.add_argument("--force", action="store_true",
                           help="run even if the manifest says the stage is up to date")
        for option, values in options.items():
            stage.add_argument(f"--{option}", required=True, choices=values)
        for flag in RUN_FLAGS.get(name, ()):
            stage.add_argument(f"--{flag.replace('_', '-')}", dest=flag, **_FLAGS[flag])
    config = sub.add_parser("config", parents=[common], help="print the resolved config as YAML")
    config.add_argument("--explain", action="store_true", help="print every value with its default"
                        " and its meaning instead")
    sub.add_parser("plan", parents=[common], help="dry run: resolve every stage's config, folder"
                   " and inputs, and say which stages are done (loads no model)")
    repeats = sub.add_parser("repeats", parents=[common], help="one report over the runs of the"
                             " pipeline with each seed (make all SEEDS='1 2 3' runs them)")
    repeats.add_argument("--seeds", type=int, nargs="+", required=True, metavar="N",
                         help="the seeds whose runs (data/runs/<experiment>-seed<N>/) to report on")
    return parser


def _main(args: argparse.Namespace) -> int:
    from sptar.config import load_config

    cfg = load_config(args.config, args.overrides)
    if args.seed is not None:
        from sptar.stages.repeats import seed_overrides

        cfg = load_config(args.config, [*args.overrides, *seed_overrides(cfg, args.seed)])
    if not cfg.models.download:  # the Hugging Face libraries, imported later, stay offline
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.command == "config" and args.explain:
        from sptar.config.explain import explain

        sys.stdout.write(explain(cfg))
        return 0
    if args.command == "config":
        import yaml

        sys.stdout.write(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
        return 0
    if args.command == "repeats":
        from sptar.outputs.report import report_markdown
        from sptar.stages.repeats import run as report_repeats

        folder = report_repeats(args.config, args.overrides, args.seeds)
        sys.stdout.write(report_markdown(folder))
        return 0
    from sptar.run.runner import RUN_FLAGS, STAGES, execute, paths_for, plan

    if args.command == "plan":
        for row in plan(cfg, paths_for(cfg)):
            label = " ".join([row["stage"], *row["options"].values()])
            sys.stdout.write(f"{label:<22} {row['state']:<8} {row['config_hash']}  {row['folder']}\n")
        return 0

    options = {name: getattr(args, name) for name in STAGES[args.command][1]}
    flags = {name: getattr(args, name) for name in RUN_FLAGS.get(args.command, ())}
    execute(args.command, cfg, paths_for(cfg), force=args.force, flags=flags, **options)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    setup_console(args.quiet)
    try:
        return _main(args)
    except SptarError as exc:
        if args.debug:
            raise
        sys.stderr.write(f"sptar: error: {exc}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("sptar: interrupted\n")
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
