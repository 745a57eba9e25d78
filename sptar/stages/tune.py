"""Tune stage: soft prompt tuning of the frozen LLM, then the soft prompt filter.

Reads: ``data/beir/<dataset>/corpus.jsonl`` (document text) and ``data/runs/<experiment>/split/``
(the labeled queries, ``qrels/prompt_train.tsv``, ``qrels/prompt_eval.tsv``).
Writes to ``data/runs/<experiment>/tune/``:

- ``adapter/``: the tuned soft prompt, a PEFT ``save_pretrained`` folder (safetensors);
- ``examples.json``: ``n_examples``, the ``chosen`` example pairs (``query_id``, ``doc_id``,
  ``query``, ``doc``), every ``candidates`` entry with its eval loss, and the eval losses and
  perplexities before and after tuning (``losses``, ``heldout``);
- ``train_log.jsonl``: one row per optimizer step (``type: step``, training loss) and one per
  evaluation (``type: eval``, eval loss and perplexity);
- ``loss_curve.png``: training and eval loss against the step.

Method (SPTAR): PEFT prompt tuning (``tune.n_virtual_tokens`` virtual tokens initialised from
the text :data:`sptar.llm.prompts.SOFT_PROMPT_INIT`, AdamW, linear decay) of ``models.llm``, whose
weights stay frozen. Every prompt-train pair is one training example, preceded by
``tune.n_examples`` in-context example pairs drawn (by seed, afresh every epoch) from the other
prompt-train queries; the loss counts the query tokens only. The eval loss is the mean negative
log-likelihood per query token of the first ``tune.eval_pairs`` prompt-eval pairs (shuffled by
seed once), each with its own random example pairs; it decides early stopping, and the prompt
with the best eval loss is kept. Then the soft prompt filter scores ``tune.n_candidates`` sets of
example pairs (sampled from the prompt-train pairs) by the tuned prompt's eval loss on the same
pairs and keeps the lowest. The figures compare, on those pairs, the untuned LLM with the
hand-written InPars prompt, the soft prompt before and after tuning with random examples, and
with the chosen examples; the next ``tune.heldout_eval_pairs`` prompt-eval pairs serve no choice
at all and check the choices on data they never saw.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sptar.config import Config
from sptar.io.manifest import manifests
from sptar.io.paths import Paths
from sptar.llm.prompt_pairs import (
    EvalSet,
    Pair,
    TuneData,
    check_data,
    eval_sets,
    load_data,
    sample_candidates,
)
from sptar.llm.prompt_training import TrainResult, train_prompt
from sptar.llm.prompts import PromptFormat, Style
from sptar.llm.scoring import Row, Scorer
from sptar.llm.softprompt import wrap_with_soft_prompt
from sptar.outputs.prompt import loss_curve_file, write_prompt
from sptar.reporting.plots import write_loss_curve

log = logging.getLogger(__name__)

# ---------------------------------------------------------------- stage interface


def sections() -> tuple[str, ...]:
    return ("dataset.name", "models.llm", "models.trust_remote_code", "tune", "seed", "device")


def output_dir(paths: Paths) -> Path:
    return paths.stage("tune")


def upstream(cfg: Config, paths: Paths) -> list[Path]:
    return manifests(paths.beir, paths.stage("split"))


def prompt_format(cfg: Config, tokenizer, style: Style = "sptar") -> PromptFormat:
    """The prompt format with the token budgets the soft prompt was tuned with."""
    return PromptFormat(tokenizer, style, cfg.tune.max_doc_tokens, cfg.tune.max_example_doc_tokens,
                        cfg.tune.max_query_tokens)


# ---------------------------------------------------------------- scoring


def loss_entry(loss: float, **extra: Any) -> dict[str, Any]:
    return {"eval_loss": round(loss, 6), "perplexity": round(math.exp(loss), 4), **extra}


# ---------------------------------------------------------------- the soft prompt filter


def score_candidates(candidates: Sequence[tuple[Pair, ...]], rows_for: Callable[[Sequence[Pair]], list[Row]],
                     scorer: Scorer) -> list[float]:
    """The eval loss each candidate example set gives (``rows_for`` builds the eval prompts)."""
    losses = []
    for number, candidate in enumerate(candidates, start=1):
        losses.append(scorer.loss(rows_for(candidate), desc=f"candidate {number}/{len(candidates)}"))
        log.info("candidate %d/%d %s: eval loss %.4f", number, len(candidates),
                 [list(p) for p in candidate], losses[-1])
    return losses


def choose(losses: Sequence[float]) -> int:
    """The index of the lowest eval loss (the first one on ties)."""
    return min(range(len(losses)), key=lambda i: (losses[i], i))


# ---------------------------------------------------------------- outputs


def _pair_record(data: TuneData, pair: Pair) -> dict[str, str]:
    doc, query = data.texts[pair]
    return {"query_id": pair[0], "doc_id": pair[1], "query": query, "doc": doc}


# ---------------------------------------------------------------- run


def _figures(n_pairs: int, untuned: float, result: TrainResult, losses: Sequence[float],
             best: int) -> dict[str, Any]:
    """The before/after eval losses on the eval pairs."""
    return {
        "eval_pairs": n_pairs,
        "untuned_inpars": loss_entry(untuned, note="base LLM, hand-written InPars prompt, each pair"
                                     " its own random examples"),
        "untuned_soft_prompt": loss_entry(result.initial_loss, note="text-initialised soft prompt,"
                                          " before any step; random examples"),
        "tuned_random": loss_entry(result.best_loss, note="the kept soft prompt's early-stopping"
                                   " eval; random examples"),
        "tuned_random_first": loss_entry(losses[0], note="the first random candidate"),
        "tuned_random_mean": loss_entry(sum(losses) / len(losses), note="mean over the candidates"),
        "tuned_chosen": loss_entry(losses[best], note="the candidate the filter chose"),
    }


def _heldout_figures(heldout: EvalSet, data: TuneData, fmt: PromptFormat, scorer: Scorer,
                     untuned: float | None, chosen: Sequence[Pair]) -> dict[str, Any] | None:
    """The same comparison on prompt-eval pairs that took part in no choice."""
    if not heldout.pairs or untuned is None:
        return None
    return {
        "eval_pairs": len(heldout.pairs),
        "untuned_inpars": loss_entry(untuned),
        "tuned_random": loss_entry(scorer.loss(heldout.rows(data, fmt), desc="held-out")),
        "tuned_chosen": loss_entry(scorer.loss(heldout.rows(data, fmt, chosen),
                                               desc="held-out, chosen examples")),
    }


def _write_outputs(cfg: Config, paths: Paths, peft_model, data: TuneData, result: TrainResult,
                   candidates: Sequence[tuple[Pair, ...]], losses: Sequence[float],
                   figures: dict[str, Any], heldout: dict[str, Any] | None) -> None:
    tune = cfg.tune
    write_prompt(paths, peft_model, {
        "n_examples": tune.n_examples,
        "chosen": [_pair_record(data, pair) for pair in candidates[choose(losses)]],
        "candidates": [{"pairs": [list(pair) for pair in candidate], **loss_entry(loss)}
                       for candidate, loss in zip(candidates, losses, strict=True)],
        "losses": figures,
        "heldout": heldout,
        "prompt": {"style": "sptar", "max_doc_tokens": tune.max_doc_tokens,
                   "max_example_doc_tokens": tune.max_example_doc_tokens,
                   "max_query_tokens": tune.max_query_tokens},
    }, result.log_rows)
    loss = {name: figures[name]["eval_loss"] for name in ("untuned_inpars", "tuned_random", "tuned_chosen")}
    write_loss_curve(loss_curve_file(paths), result.log_rows, loss["untuned_inpars"],
                     f"{cfg.experiment}: soft prompt ({tune.n_virtual_tokens} tokens, lr {tune.lr:g}) on "
                     f"{cfg.models.llm}; eval loss: untuned InPars {loss['untuned_inpars']:.3f},\n"
                     f"tuned + random examples {loss['tuned_random']:.3f}, tuned + chosen examples "
                     f"{loss['tuned_chosen']:.3f}")


def batch_sizes(cfg: Config, device: str) -> tuple[int, int]:
    """Prompts per training micro-batch and per scoring batch on ``device``."""
    if device.startswith("cuda"):
        return cfg.tune.cuda_batch_size, 2 * cfg.tune.cuda_batch_size
    return cfg.tune.batch_size, cfg.tune.eval_batch_size


def run(cfg: Config, paths: Paths) -> dict[str, Any]:
    from sptar.models import resolve_device
    from sptar.run.resources import memory_guard

    tune = cfg.tune
    keys = ({"tune.cuda_batch_size": tune.cuda_batch_size} if resolve_device(cfg.device).startswith("cuda")
            else {"tune.batch_size": tune.batch_size, "tune.eval_batch_size": tune.eval_batch_size})
    with memory_guard("tune", keys):
        return _tune(cfg, paths)


def _tune(cfg: Config, paths: Paths) -> dict[str, Any]:
    from sptar.models import load_causal_lm, resolve_device

    tune = cfg.tune
    cpu_started = time.process_time()
    data = load_data(cfg, paths)
    check_data(cfg, data)
    evals, heldout = eval_sets(cfg, data)
    candidates = sample_candidates(data.train, tune.n_examples, tune.n_candidates,
                                   f"{cfg.seed}-tune-candidates")
    device = resolve_device(cfg.device)
    micro_batch, eval_batch = batch_sizes(cfg, device)
    model, tokenizer = load_causal_lm(cfg.models.llm, device, cfg.models.trust_remote_code,
                                      cfg.models.download)
    for param in model.parameters():
        param.requires_grad_(False)
    sptar_fmt, inpars_fmt = prompt_format(cfg, tokenizer), prompt_format(cfg, tokenizer, "inpars")
    seconds: dict[str, float] = {}

    # before tuning: the base LLM with the hand-written InPars prompt, random examples
    started = time.time()
    base = Scorer(model, tokenizer.pad_token_id, device, eval_batch)
    untuned = base.loss(evals.rows(data, inpars_fmt), desc="untuned LLM, eval pairs")
    untuned_heldout = (base.loss(heldout.rows(data, inpars_fmt), desc="untuned LLM, held-out pairs")
                       if heldout.pairs else None)
    log.info("untuned LLM, InPars prompt: eval loss %.4f (perplexity %.2f)", untuned, math.exp(untuned))
    seconds["untuned"] = time.time() - started

    peft_model = wrap_with_soft_prompt(cfg, model)
    scorer = Scorer(peft_model, tokenizer.pad_token_id, device, eval_batch, tune.n_virtual_tokens)
    result = train_prompt(cfg, peft_model, sptar_fmt, data, evals.rows(data, sptar_fmt), scorer,
                          micro_batch, device)
    seconds.update(train=result.train_seconds, early_stopping_evals=result.eval_seconds)

    started = time.time()
    losses = score_candidates(candidates, lambda c: evals.rows(data, sptar_fmt, c), scorer)
    best = choose(losses)
    seconds["filter"] = time.time() - started
    log.info("soft prompt filter: chose %s (eval loss %.4f; random candidates' mean %.4f; untuned"
             " %.4f)", [list(p) for p in candidates[best]], losses[best], sum(losses) / len(losses),
             untuned)
    started = time.time()
    heldout_figures = _heldout_figures(heldout, data, sptar_fmt, scorer, untuned_heldout,
                                       candidates[best])
    seconds["heldout"] = time.time() - started

    figures = _figures(len(evals.pairs), untuned, result, losses, best)
    _write_outputs(cfg, paths, peft_model, data, result, candidates, losses, figures, heldout_figures)
    return {
        "device": device,
        "train_pairs": len(data.train),
        "eval_pairs": len(evals.pairs),
        "heldout_eval_pairs": len(heldout.pairs),
        "steps": result.steps,
        "best_step": result.best_step,
        "stopped_early": result.stopped_early,
        "seconds_per_step": round(result.train_seconds / max(1, result.steps), 3),
        "seconds": {name: round(value, 1) for name, value in seconds.items()},
        "cpu_seconds": round(time.process_time() - cpu_started, 1),
        "candidates": len(candidates),
        "losses": {name: entry["eval_loss"] for name, entry in figures.items() if name != "eval_pairs"},
        "heldout_losses": {name: entry["eval_loss"] for name, entry in (heldout_figures or {}).items()
                           if name != "eval_pairs"},
    }
