"""Prompt scoring in the tune stage: every prompt run whole (the plain way) vs the prefix that
the prompts of one call share run once (its key/value cache reused), one run.

The scoring calls of ``sptar tune`` on the pipeline's prompt-eval pairs: the base LLM with the
InPars prompt (random examples per pair; only BOS and the first words are shared), the soft prompt
with random examples (early stopping, held-out; the soft prompt is shared), and the soft prompt
with one candidate's examples for every pair (the soft prompt filter; soft prompt + examples
shared). The soft prompt is the untrained, text-initialised one: the work is the same. Reported:
the best of ``--repeats`` timings, the speed-up and the largest difference in eval loss.
"""

from __future__ import annotations

import argparse
import time

import torch
from common import prepared, report

from sptar.llm.prompt_pairs import check_data, eval_sets, load_data, sample_candidates
from sptar.llm.scoring import Scorer
from sptar.llm.softprompt import wrap_with_soft_prompt
from sptar.models import load_causal_lm, resolve_device
from sptar.run.runner import execute
from sptar.stages.tune import batch_sizes, prompt_format


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline", default="scifact-quick")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg, paths, _ = prepared(args.pipeline)
    execute("split", cfg, paths)
    tune = cfg.tune
    data = load_data(cfg, paths)
    check_data(cfg, data)
    evals, _ = eval_sets(cfg, data)
    candidate = sample_candidates(data.train, tune.n_examples, 1, f"{cfg.seed}-tune-candidates")[0]
    device = resolve_device(cfg.device)
    model, tokenizer = load_causal_lm(cfg.models.llm, device, cfg.models.trust_remote_code,
                                      cfg.models.download)
    for param in model.parameters():
        param.requires_grad_(False)
    sptar_fmt, inpars_fmt = prompt_format(cfg, tokenizer), prompt_format(cfg, tokenizer, "inpars")
    peft_model = wrap_with_soft_prompt(cfg, model)
    calls = [("untuned LLM, InPars prompt, random examples", evals.rows(data, inpars_fmt), 0),
              ("soft prompt, random examples", evals.rows(data, sptar_fmt), tune.n_virtual_tokens),
              ("soft prompt, one candidate's examples", evals.rows(data, sptar_fmt, candidate),
               tune.n_virtual_tokens)]
    eval_batch = batch_sizes(cfg, device)[1]
    rows = []
    for name, prompts, n_virtual in calls:
        scoring_model = peft_model if n_virtual else model  # the PEFT wrapper leaves it usable
        seconds = {False: [], True: []}
        losses = {}
        for _ in range(args.repeats):
            for share in (False, True):
                scorer = Scorer(scoring_model, tokenizer.pad_token_id, device, eval_batch,
                                n_virtual, share_prefix=share)
                began = time.perf_counter()
                losses[share] = scorer.loss(prompts)
                seconds[share].append(time.perf_counter() - began)
        whole, shared = min(seconds[False]), min(seconds[True])
        rows.append({"scoring": name, "prompts": len(prompts), "whole s": round(whole, 2),
                     "shared prefix s": round(shared, 2), "speedup": round(whole / shared, 2),
                     "loss diff": f"{abs(losses[True] - losses[False]):.1e}"})
    report("tune-scoring", rows, {"pipeline": args.pipeline, "device": device,
                          "threads": torch.get_num_threads(), "repeats": args.repeats,
                          "eval_batch_size": eval_batch})


if __name__ == "__main__":
    main()
