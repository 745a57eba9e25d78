"""Weak query generation: our batched decoding with a cached prompt prefix vs HF generate per doc.

Both write greedy queries for the same SciFact unlabeled documents with the same model
(``models.llm``, SmolLM2-135M) and the same prompt token ids, in two settings:

- ``inpars``: the InPars few-shot prompt with ``generate.inpars_examples`` labeled pairs;
- ``soft``: the SPTAR prompt with a freshly initialised 50-token PEFT prompt-tuning adapter
  (initialised from SPTAR's text) and two example pairs, so that the soft-prompt path is timed.

The baseline is the straightforward way, as SPTAR's ``weak_inference.py`` does it: HF
``generate()`` (through the PEFT model when there is a soft prompt), one document at a time,
the whole prompt recomputed each time, stopping at EOS or ``max_new_tokens``, first line kept.
Its timing is also read at the moment each document's line ended (``baseline-eol``): what the
same loop costs when it stops at the end of the line, as ours does. Documents are processed
interleaved (one chunk of the stage, ``generate.chunk_size`` documents, our way in fp32 and in
bf16, then the same documents the baseline way) so that a busy machine slows both alike. Outputs are compared token by token up to the end of the first line; for every
difference the batch-1 cached output and the logit margin where the two paths part are reported.

Usage: ``python benchmarks/bench_generate.py [--docs 200] [--settings inpars,soft] [--threads 1]``
"""

from __future__ import annotations

import argparse
import copy
import time

from common import prepared, report

from sptar.io.formats import doc_text
from sptar.llm.decoding import LineGenerator, stop_token_ids
from sptar.llm.prompts import SOFT_PROMPT_INIT, PromptFormat
from sptar.models import autocast, cast_linear_weights, load_causal_lm, resolve_model
from sptar.outputs.fewshot import load_split
from sptar.run.resources import decoding_rows
from sptar.run.runner import execute
from sptar.stages.generate import inpars_examples


class LineEndTimes:
    """A stopping criterion that never stops: it notes when each row first writes a stop token."""

    def __init__(self, stops, prompt_len: int):
        self.stops, self.prompt_len = set(stops), prompt_len
        self.started = time.perf_counter()
        self.ended: float | None = None

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        if self.ended is None and input_ids.shape[1] > self.prompt_len \
                and int(input_ids[0, -1]) in self.stops:
            self.ended = time.perf_counter()
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


def first_line(ids: list[int], stops: set[int]) -> list[int]:
    ends = [i for i, token in enumerate(ids) if token in stops]
    return ids[:ends[0] + 1] if ends else ids


def baseline(generate, prompt_ids, stops, max_new_tokens, pad_id):
    """HF generate, batch 1: ``(first line ids, seconds, seconds until the line ended)``."""
    import torch
    from transformers import StoppingCriteriaList

    ids = torch.tensor([prompt_ids])
    watch = LineEndTimes(stops, ids.shape[1])
    with torch.inference_mode():
        out = generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                       max_new_tokens=max_new_tokens, pad_token_id=pad_id,
                       stopping_criteria=StoppingCriteriaList([watch]))
    seconds = time.perf_counter() - watch.started
    new = out[0].tolist()[ids.shape[1]:]
    return first_line(new, set(stops)), seconds, (watch.ended or time.perf_counter()) - watch.started


def margin_at_divergence(model, prompt_ids, ours, theirs, soft=None) -> float:
    """Top-1 minus top-2 logit of the plain full-prompt forward where the two outputs part."""
    import torch

    common = 0
    while common < min(len(ours), len(theirs)) and ours[common] == theirs[common]:
        common += 1
    ids = torch.tensor([prompt_ids + theirs[:common]])
    with torch.inference_mode():
        embeds = model.get_input_embeddings()(ids)
        if soft is not None:
            embeds = torch.cat([soft.to(embeds.dtype), embeds], dim=1)
        logits = model(inputs_embeds=embeds).logits[0, -1].float()
    top = logits.topk(2).values
    return float(top[0] - top[1])


def setting_prompt(name, cfg, paths, corpus, model, tokenizer):
    """``(PromptFormat, examples, soft prompt or None, HF generate callable)``."""
    prompt = inpars_examples(cfg, paths, corpus)
    if name == "inpars":
        fmt = PromptFormat(tokenizer, "inpars", max_doc_tokens=cfg.generate.max_doc_tokens)
        return fmt, prompt.examples, None, model.generate
    from peft import PromptTuningConfig, PromptTuningInit, TaskType, get_peft_model

    config = PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=50,
                                prompt_tuning_init=PromptTuningInit.TEXT,
                                prompt_tuning_init_text=SOFT_PROMPT_INIT,
                                tokenizer_name_or_path=resolve_model(cfg.models.llm))
    peft_model = get_peft_model(model, config).eval()
    soft = peft_model.get_prompt(batch_size=1).detach()
    fmt = PromptFormat(tokenizer, "sptar", max_doc_tokens=cfg.generate.max_doc_tokens)
    return fmt, prompt.examples[:2], soft, peft_model.generate


def run_setting(name, cfg, paths, corpus, doc_ids, model, tokenizer, batch_size):
    fmt, examples, soft, hf_generate = setting_prompt(name, cfg, paths, corpus, model, tokenizer)
    stops = stop_token_ids(tokenizer)
    stop_set = set(stops)
    prefix = fmt.prefix_ids(examples)
    docs = {d: fmt.doc_ids(doc_text(corpus[d]), len(examples)) for d in doc_ids}
    order = sorted(doc_ids, key=lambda d: (-len(docs[d]), d))  # as the stage batches them
    max_new = cfg.generate.max_new_tokens
    base_model = model.get_base_model() if hasattr(model, "get_base_model") else model

    started = time.perf_counter()
    # ours on copies: LineGenerator switches its model's decode attention on CPU, and the
    # baseline keeps plain sdpa
    generator = LineGenerator(copy.deepcopy(base_model), prefix, stop_ids=stops,
                              pad_id=tokenizer.pad_token_id,
                              soft_prompt=soft, max_new_tokens=max_new, slots=batch_size)
    ours_s = time.perf_counter() - started
    started = time.perf_counter()
    # generate.precision bf16 as the stage runs it: linear weights cast once (a copy, so that the
    # fp32 path keeps its weights), the prefix computed in bf16 too
    bf16_model = cast_linear_weights(copy.deepcopy(base_model), "cpu", "bf16")
    with autocast("cpu", "bf16"):
        generator_bf16 = LineGenerator(bf16_model, prefix, stop_ids=stops,
                                       pad_id=tokenizer.pad_token_id, soft_prompt=soft,
                                       max_new_tokens=max_new, slots=batch_size)
    bf16_s = time.perf_counter() - started
    ours, bf16, theirs, base_s, base_eol_s = {}, {}, {}, 0.0, 0.0
    for start in range(0, len(order), cfg.generate.chunk_size):  # one chunk of the stage
        batch = order[start:start + cfg.generate.chunk_size]
        tick = time.perf_counter()
        for doc, line in zip(batch, generator.generate([docs[d] for d in batch]), strict=True):
            ours[doc] = line.token_ids
        ours_s += time.perf_counter() - tick
        tick = time.perf_counter()
        with autocast("cpu", "bf16"):
            for doc, line in zip(batch, generator_bf16.generate([docs[d] for d in batch]),
                                 strict=True):
                bf16[doc] = line.token_ids
        bf16_s += time.perf_counter() - tick
        for doc in batch:
            theirs[doc], seconds, eol = baseline(hf_generate, prefix + docs[doc], stops, max_new,
                                                 tokenizer.pad_token_id)
            base_s, base_eol_s = base_s + seconds, base_eol_s + eol
        print(f"  {name}: {start + len(batch)}/{len(order)} docs, ours {ours_s:.0f} s, "
              f"baseline {base_s:.0f} s", flush=True)

    differ = [d for d in order if first_line(ours[d], stop_set) != theirs[d]]
    details = []
    for doc in differ:
        alone = generator.generate([docs[doc]])[0].token_ids
        details.append({
            "doc_id": doc,
            "ours": tokenizer.decode(ours[doc]), "baseline": tokenizer.decode(theirs[doc]),
            "batch1_cached_equals_baseline": first_line(alone, stop_set) == theirs[doc],
            "logit_margin_at_divergence": round(margin_at_divergence(
                base_model, prefix + docs[doc], ours[doc], theirs[doc], soft), 5),
        })
    new_tokens = sum(len(first_line(t, stop_set)) for t in ours.values())
    n = len(order)
    same = f"{n - len(differ)}/{n}"
    rows = [
        {"setting": name, "method": "ours (batched, cached prefix)", "docs": n,
         "seconds": round(ours_s, 1), "docs/s": round(n / ours_s, 3), "identical": same,
         "speedup": 1.0},
        {"setting": name, "method": "ours, generate.precision bf16 (CPU autocast)", "docs": n,
         "seconds": round(bf16_s, 1), "docs/s": round(n / bf16_s, 3),
         "identical": f"{sum(bf16[d] == ours[d] for d in order)}/{n} (vs ours fp32)",
         "speedup": round(ours_s / bf16_s, 2)},
        {"setting": name, "method": "baseline-eol (HF generate, stop at end of line)", "docs": n,
         "seconds": round(base_eol_s, 1), "docs/s": round(n / base_eol_s, 3), "identical": same,
         "speedup": round(base_eol_s / ours_s, 2)},
        {"setting": name, "method": "baseline (HF generate, as SPTAR: to EOS/max tokens)", "docs": n,
         "seconds": round(base_s, 1), "docs/s": round(n / base_s, 3), "identical": same,
         "speedup": round(base_s / ours_s, 2)},
    ]
    notes = {"prefix_tokens": generator.prefix_len,
             "mean_doc_tokens": round(sum(len(docs[d]) for d in order) / n, 1),
             "new_tokens (first lines)": new_tokens, "differences": details}
    return rows, notes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=200)
    parser.add_argument("--settings", default="inpars,soft")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="our rows decoded at once (default: generate.batch_size)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--pipeline", default="scifact-quick")
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg, paths, dataset = prepared(args.pipeline)
    execute("split", cfg, paths)
    doc_ids = load_split(paths).unlabeled[:args.docs]
    model, tokenizer = load_causal_lm(cfg.models.llm, "cpu")
    batch_size = args.batch_size or decoding_rows(cfg.generate.batch_size, model, "cpu", 0)
    rows, notes = [], {"model": cfg.models.llm, "device": "cpu", "threads": torch.get_num_threads(),
                       "batch_size": batch_size, "max_new_tokens": cfg.generate.max_new_tokens,
                       "max_doc_tokens": cfg.generate.max_doc_tokens, "decoding": "greedy"}
    for name in args.settings.split(","):
        setting_rows, setting_notes = run_setting(name, cfg, paths, dataset.corpus, doc_ids, model,
                                                  tokenizer, batch_size)
        rows += setting_rows
        notes[name] = setting_notes
    name = "generate" if args.settings == "inpars,soft" else f"generate-{args.settings.replace(',', '-')}"
    report(name, rows, notes)


if __name__ == "__main__":
    main()
