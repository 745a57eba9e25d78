"""Figures of a finished tune stage: eval loss before/after tuning, sample queries, speed.

Usage: python benchmarks/tune_figures.py [pipeline] [n_samples]   (after `sptar tune`)

Prints the eval loss and perplexity of the prompt-eval queries for the untuned LLM with the
hand-written InPars prompt, the tuned soft prompt with random examples and with the examples the
soft prompt filter chose; then wall time and seconds per step; then greedy queries the tuned
prompt (with the chosen examples) writes for held-out prompt-eval documents (pairs used for no
choice), next to their true queries and to what the untuned LLM writes with the InPars prompt. Writes benchmarks/results/tune-<pipeline>.json.
"""

from __future__ import annotations

import json
import sys

from common import RESULTS, report, setup

from sptar.config import load_config
from sptar.io.formats import read_json
from sptar.run.runner import paths_for


def generate_queries(model, tokenizer, fmt, docs, examples, max_new_tokens: int) -> list[str]:
    """Greedy decoding, one document at a time, stopped at the end of the line."""
    import torch

    newline = tokenizer("\n", add_special_tokens=False)["input_ids"]
    stop = [tokenizer.eos_token_id] + (newline if len(newline) == 1 else [])
    queries = []
    for doc in docs:
        ids = torch.tensor([fmt.prefix_ids(examples) + fmt.doc_ids(doc, len(examples))])
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                      max_new_tokens=max_new_tokens, do_sample=False,
                                      eos_token_id=stop, pad_token_id=tokenizer.pad_token_id)
        text = tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
        queries.append(text.split("\n")[0].strip())
    return queries


def main(pipeline: str = "scifact-quick", n_samples: int = 10) -> None:
    setup()
    from sptar.llm.prompt_pairs import eval_sets, load_data
    from sptar.llm.softprompt import load_tuned
    from sptar.outputs.prompt import load_examples
    from sptar.stages.tune import output_dir, prompt_format

    cfg = load_config(pipeline)
    paths = paths_for(cfg)
    folder = output_dir(paths)
    examples, manifest = read_json(folder / "examples.json"), read_json(folder / "manifest.json")
    rows = []
    for part, figures in (("eval pairs", examples["losses"]), ("held-out pairs", examples["heldout"])):
        for name, entry in (figures or {}).items():
            if name != "eval_pairs":
                rows.append({"pairs": f"{part} ({figures['eval_pairs']})", "prompt": name,
                             "eval_loss": entry["eval_loss"], "perplexity": entry["perplexity"]})
    summary = manifest["summary"]
    notes = {"wall_time_s": manifest["wall_time_s"], "cpu_seconds": summary["cpu_seconds"],
             "steps": summary["steps"],
             "seconds_per_step": summary["seconds_per_step"], "seconds": summary["seconds"],
             "best_step": summary["best_step"], "stopped_early": summary["stopped_early"],
             "chosen": [[c["query_id"], c["doc_id"], c["query"]] for c in examples["chosen"]]}

    data = load_data(cfg, paths)
    evals, _ = eval_sets(cfg, data)
    held_out = data.eval[len(evals.pairs):len(evals.pairs) + n_samples]  # used for no choice
    peft_model, tokenizer = load_tuned(cfg, paths, "cpu")
    fmt = prompt_format(cfg, tokenizer)
    docs = [data.texts[pair][0] for pair in held_out]
    chosen = load_examples(paths)
    written = generate_queries(peft_model, tokenizer, fmt, docs, chosen, cfg.tune.max_query_tokens)
    # the untuned LLM with the hand-written InPars prompt and the same examples, for comparison
    untuned = generate_queries(peft_model.get_base_model(), tokenizer,
                               prompt_format(cfg, tokenizer, "inpars"), docs, chosen,
                               cfg.tune.max_query_tokens)
    samples = [{"doc_id": did, "doc": fmt.truncate(data.texts[(qid, did)][0], 40) + " ...",
                "true_query": data.texts[(qid, did)][1], "tuned": query, "untuned_inpars": plain}
               for (qid, did), query, plain in zip(held_out, written, untuned, strict=True)]
    for number, sample in enumerate(samples, start=1):
        print(f"{number:2d}. doc {sample['doc_id']}: {sample['doc']}\n    true:           "
              f"{sample['true_query']}\n    tuned:          {sample['tuned']}\n    untuned InPars: "
              f"{sample['untuned_inpars']}")
    notes["samples"] = samples
    report(f"tune-{pipeline}", rows, {k: v for k, v in notes.items() if k != "samples"})
    (RESULTS / f"tune-{pipeline}.json").write_text(json.dumps({"rows": rows, "notes": notes}, indent=2,
                                                               ensure_ascii=False))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "scifact-quick",
         int(sys.argv[2]) if len(sys.argv) > 2 else 10)
