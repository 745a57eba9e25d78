"""generate.engine vllm against native, in one run on the same documents: greedy agreement and
docs per second.

For each prompt style of a finished run's seed (``inpars``: the InPars prompt with the seed's
examples, as token ids; ``sptar``: the seed's tuned soft prompt and examples, as prompt
embeddings), the same ``--docs`` unlabeled documents (a seeded sample of the pool, one chunk as
the stage would pass it) go through each engine at each batch size, through the engine interface
the generate stage uses (:func:`sptar.llm.engines.open_engine`), at each ``--precisions``.
Reported per run: docs/s and new tokens/s of the ``generate`` call (the engine's start-up, timed
apart), and against native at the same precision (its first batch size): lines equal token for
token, and the share of native's tokens that vLLM matches before the two lines first part.

Run it in the vLLM environment (``make install-vllm``), with one thread for each engine:

    OMP_NUM_THREADS=1 VLLM_CPU_OMP_THREADS_BIND=0 VLLM_CPU_KVCACHE_SPACE=1 \\
        VLLM_ENABLE_V1_MULTIPROCESSING=0 .venv-vllm/bin/python benchmarks/bench_vllm.py \\
        --pipeline scifact-cpu --seed 1 --docs 64
"""

from __future__ import annotations

import argparse
import random
import time

from common import report, setup


def seeded_config(pipeline: str, seed: int, sets: list[str]):
    from sptar.config import load_config
    from sptar.stages.repeats import seed_overrides

    return load_config(pipeline, [*sets, *seed_overrides(load_config(pipeline, sets), seed)])


def prompts(cfg, paths, corpus):
    from sptar.outputs.prompt import load_prompt
    from sptar.run.runner import execute
    from sptar.stages.generate import inpars_examples

    for stage in ("split", "tune"):
        execute(stage, cfg, paths)
    return {"inpars": inpars_examples(cfg, paths, corpus), "sptar": load_prompt(paths)}


def agreement(theirs: list[list[int]], ours: list[list[int]]) -> tuple[int, float]:
    """(lines equal, share of ``ours``' tokens that ``theirs`` matches before the lines part)."""
    equal = matched = 0
    for a, b in zip(theirs, ours, strict=True):
        equal += a == b
        matched += next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y),
                        min(len(a), len(b)))
    total = sum(map(len, ours))
    return equal, matched / total if total else 1.0


def timed_lines(cfg, prompt, fmt, blocks, widest):
    from sptar.llm.decoding import Sampling
    from sptar.llm.engines import open_engine

    started = time.perf_counter()
    with open_engine(cfg, prompt, fmt.prefix_ids(prompt.examples), widest, "cpu", [],
                     "bench") as (generator, _rows):
        opened = time.perf_counter()
        lines = generator.generate(blocks, Sampling())
        done = time.perf_counter()
    return lines, opened - started, done - opened


def main() -> None:
    setup()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline", default="scifact-cpu")
    parser.add_argument("--seed", type=int, default=1, help="the run whose tuned prompt is used")
    parser.add_argument("--docs", type=int, default=64)
    parser.add_argument("--styles", nargs="+", default=["inpars", "sptar"])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--native-batch", type=int, nargs="+", default=[16])
    parser.add_argument("--vllm-batch", type=int, nargs="+", default=[8, 32])
    args = parser.parse_args()

    from sptar.io.formats import doc_text
    from sptar.llm.prompts import prompt_format
    from sptar.models import load_tokenizer
    from sptar.outputs.dataset import load_corpus
    from sptar.outputs.fewshot import load_split
    from sptar.run.runner import execute, paths_for

    cfg = seeded_config(args.pipeline, args.seed, [])
    paths = paths_for(cfg)
    execute("data", cfg, paths)
    corpus = load_corpus(paths)
    styles = prompts(cfg, paths, corpus)
    pool = load_split(paths).unlabeled
    docs = random.Random(0).sample(pool, min(args.docs, len(pool)))
    tokenizer = load_tokenizer(cfg.models.llm)
    rows = []
    for style in args.styles:
        prompt = styles[style]
        fmt = prompt_format(prompt, tokenizer, cfg.generate.max_doc_tokens)
        blocks = [fmt.doc_ids(doc_text(corpus[d]), len(prompt.examples)) for d in docs]
        order = sorted(range(len(blocks)), key=lambda i: -len(blocks[i]))  # the stage's order
        blocks = [blocks[i] for i in order]
        widest = max(map(len, blocks))
        for precision in args.precisions:
            reference = None
            runs = [("native", b) for b in args.native_batch] + [("vllm", b) for b in args.vllm_batch]
            for engine, batch in runs:
                sets = [f"generate.engine={engine}", f"generate.batch_size={batch}",
                        f"generate.precision={precision}", "device=cpu"]
                run_cfg = seeded_config(args.pipeline, args.seed, sets)
                lines, startup, seconds = timed_lines(run_cfg, prompt, fmt, blocks, widest)
                ids = [line.token_ids for line in lines]
                reference = reference or ids
                equal, share = agreement(ids, reference)
                new = sum(map(len, ids))
                rows.append({"style": style, "precision": precision, "engine": engine,
                             "batch": batch, "docs": len(ids), "startup_s": round(startup, 1),
                             "seconds": round(seconds, 1), "docs_per_s": round(len(ids) / seconds, 3),
                             "new_tok_per_s": round(new / seconds, 1),
                             "lines_equal_native": f"{equal}/{len(ids)}",
                             "tokens_before_first_difference": round(share, 4)})
                print(rows[-1], flush=True)
    for row in rows:
        best = max((r["docs_per_s"] for r in rows if r["style"] == row["style"]
                    and r["precision"] == row["precision"] and r["engine"] == "native"))
        row["vs_best_native"] = round(row["docs_per_s"] / best, 2)
    report("bench-vllm", rows, {"pipeline": args.pipeline, "seed": args.seed, "docs": args.docs,
                                "reference": "native at its first batch size, same precision"})


if __name__ == "__main__":
    main()
