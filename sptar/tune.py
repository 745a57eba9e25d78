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
the text :data:`sptar.prompts.SOFT_PROMPT_INIT`, AdamW, linear decay) of ``models.llm``, whose
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
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sptar.config import Config
from sptar.errors import SptarError
from sptar.formats import doc_text
from sptar.outputs.dataset import load_corpus
from sptar.outputs.fewshot import PROMPT_EVAL, PROMPT_TRAIN, load_split
from sptar.outputs.prompt import loss_curve_file, write_prompt
from sptar.paths import Paths
from sptar.plots import write_loss_curve
from sptar.prompts import Example, PromptFormat, Style, pad_batch
from sptar.scoring import Row, Scorer, target_nll
from sptar.softprompt import soft_prompt_weights, wrap_with_soft_prompt

log = logging.getLogger(__name__)

Pair = tuple[str, str]  # (query id, doc id)


# ---------------------------------------------------------------- stage interface


def sections() -> tuple[str, ...]:
    return ("dataset.name", "models.llm", "models.trust_remote_code", "tune", "seed", "device")


def output_dir(paths: Paths) -> Path:
    return paths.stage("tune")


def upstream(cfg: Config, paths: Paths) -> list[Path]:
    return [paths.beir / "manifest.json", paths.stage("split") / "manifest.json"]


def prompt_format(cfg: Config, tokenizer, style: Style = "sptar") -> PromptFormat:
    """The prompt format with the token budgets the soft prompt was tuned with."""
    return PromptFormat(tokenizer, style, cfg.tune.max_doc_tokens, cfg.tune.max_example_doc_tokens,
                        cfg.tune.max_query_tokens)


# ---------------------------------------------------------------- data


@dataclass
class TuneData:
    """The prompt-train and prompt-eval pairs with their texts."""

    train: list[Pair]
    eval: list[Pair]  # shuffled by seed
    texts: dict[Pair, Example] = field(repr=False)  # pair -> (document text, query)

    def examples(self, pairs: Sequence[Pair]) -> list[Example]:
        return [self.texts[pair] for pair in pairs]


def load_data(cfg: Config, paths: Paths) -> TuneData:
    split = load_split(paths)
    train, evals = split.pairs(PROMPT_TRAIN), split.pairs(PROMPT_EVAL)
    corpus = load_corpus(paths)
    missing = [did for _, did in train + evals if did not in corpus]
    if missing:
        raise SptarError(f"{paths.stage('split')}: document {missing[0]!r} is not in {paths.beir}"
                         " (fix: re-run `sptar split` after `sptar data`)")
    texts = {(qid, did): (doc_text(corpus[did]), split.queries[qid]) for qid, did in train + evals}
    random.Random(f"{cfg.seed}-tune-eval-order").shuffle(evals)
    return TuneData(train=train, eval=evals, texts=texts)


def check_data(cfg: Config, data: TuneData) -> None:
    """Fail before any model is loaded when the split cannot feed the configured tuning."""
    k = cfg.tune.n_examples
    queries = len({qid for qid, _ in data.train})
    if k and queries < k + 1:
        raise SptarError(f"tune.n_examples is {k}, but every training prompt needs {k} example pairs"
                         f" from other prompt-train queries and the split has {queries} prompt-train"
                         f" quer{'y' if queries == 1 else 'ies'} (fix: lower tune.n_examples or raise"
                         " split.n_prompt_train)")
    if not data.eval:
        raise SptarError("the split has no prompt-eval pairs (fix: raise split.n_prompt_eval)")


def draw_examples(rng: random.Random, pairs: Sequence[Pair], k: int,
                  exclude_query: str | None = None) -> tuple[Pair, ...]:
    """``k`` pairs of distinct queries (none of them ``exclude_query``), in random order."""
    picked: list[Pair] = []
    seen = {exclude_query}
    for pair in rng.sample(list(pairs), len(pairs)):
        if len(picked) == k:
            break
        if pair[0] not in seen:
            picked.append(pair)
            seen.add(pair[0])
    if len(picked) < k:
        raise SptarError(f"tune.n_examples is {k}, but only {len(picked)} prompt-train queries are"
                         " available as examples (fix: lower tune.n_examples)")
    return tuple(picked)


def sample_candidates(pairs: Sequence[Pair], k: int, n: int, seed: str) -> list[tuple[Pair, ...]]:
    """Up to ``n`` distinct example sets of ``k`` pairs (just the empty set when ``k`` is 0)."""
    if k == 0:
        return [()]
    rng = random.Random(seed)
    candidates: list[tuple[Pair, ...]] = []
    seen: set[frozenset[Pair]] = set()
    for _ in range(50 * n):
        candidate = draw_examples(rng, pairs, k)
        if frozenset(candidate) not in seen:
            seen.add(frozenset(candidate))
            candidates.append(candidate)
            if len(candidates) == n:
                break
    return candidates


@dataclass
class EvalSet:
    """Prompt-eval pairs, each with its own random example pairs (drawn once, by seed)."""

    pairs: list[Pair]
    random_examples: list[tuple[Pair, ...]]

    def rows(self, data: TuneData, fmt: PromptFormat, examples: Sequence[Pair] | None = None) -> list[Row]:
        """The scoring prompts: each pair's random examples, or ``examples`` for every pair."""
        shots = self.random_examples if examples is None else [tuple(examples)] * len(self.pairs)
        return [fmt.training_example(*data.texts[pair], data.examples(shot))
                for pair, shot in zip(self.pairs, shots, strict=True)]


def eval_sets(cfg: Config, data: TuneData) -> tuple[EvalSet, EvalSet]:
    """The eval set (early stopping, the filter, the figures) and the held-out set (no choice)."""
    rng = random.Random(f"{cfg.seed}-tune-eval-examples")
    n_eval = cfg.tune.eval_pairs or len(data.eval)
    wanted = cfg.tune.heldout_eval_pairs
    heldout = data.eval[n_eval:n_eval + wanted]
    if len(heldout) < wanted:
        log.warning("tune.heldout_eval_pairs is %d but only %d prompt-eval pairs are left after the"
                    " %d of tune.eval_pairs", wanted, len(heldout), n_eval)

    def draw(pairs: list[Pair]) -> EvalSet:
        return EvalSet(pairs, [draw_examples(rng, data.train, cfg.tune.n_examples) for _ in pairs])

    return draw(data.eval[:n_eval]), draw(heldout)


# ---------------------------------------------------------------- scoring


def loss_entry(loss: float, **extra: Any) -> dict[str, Any]:
    return {"eval_loss": round(loss, 6), "perplexity": round(math.exp(loss), 4), **extra}


# ---------------------------------------------------------------- training


@dataclass
class TrainResult:
    log_rows: list[dict[str, Any]]
    steps: int
    best_step: int
    best_loss: float
    initial_loss: float
    stopped_early: bool
    train_seconds: float
    eval_seconds: float


@dataclass
class _EarlyStopping:
    patience: int
    best_loss: float = math.inf
    best_step: int = 0
    best_weights: Any = None
    bad_evals: int = 0

    def update(self, loss: float, step: int, weights) -> bool:
        """Record an eval; return True when it is time to stop."""
        if loss < self.best_loss:
            self.best_loss, self.best_step, self.bad_evals = loss, step, 0
            self.best_weights = weights.detach().clone()
        else:
            self.bad_evals += 1
        return self.bad_evals >= self.patience


def _chunks(items: Sequence, size: int) -> list:
    return [items[i:i + size] for i in range(0, len(items), size)]


def _accumulate_gradients(peft_model, rows: Sequence[Row], micro_batch: int, pad_id: int,
                          device: str, n_virtual: int) -> tuple[float, int]:
    """Backpropagate the mean query-token loss of ``rows`` in micro-batches (right-padded)."""
    batches = _chunks(rows, micro_batch)
    total, tokens = 0.0, 0
    for batch in batches:
        ids, mask, labels = pad_batch([r[0] for r in batch], pad_id, "right",
                                      labels=[r[1] for r in batch])
        nll, count = target_nll(peft_model, ids.to(device), mask.to(device), labels.to(device),
                                n_virtual)
        loss = nll.sum() / count.sum()
        (loss / len(batches)).backward()
        total += loss.item() / len(batches)
        tokens += int(count.sum())
    return total, tokens


def train_prompt(cfg: Config, peft_model, fmt: PromptFormat, data: TuneData,
                 early_rows: Sequence[Row], scorer: Scorer, micro_batch: int,
                 device: str) -> TrainResult:
    """Tune the soft prompt; keep the one with the best eval loss on ``early_rows``."""
    import torch
    from tqdm.auto import tqdm

    tune = cfg.tune
    weights = soft_prompt_weights(peft_model)
    optimizer = torch.optim.AdamW([weights], lr=tune.lr)
    per_epoch = math.ceil(math.ceil(len(data.train) / micro_batch) / tune.grad_accum)
    planned = tune.epochs * per_epoch
    if tune.max_steps is not None:
        planned = min(planned, tune.max_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1 - step / planned))
    rng = random.Random(f"{cfg.seed}-tune-train")
    stopper = _EarlyStopping(tune.patience)
    log_rows: list[dict[str, Any]] = []
    timing = {"train": 0.0, "eval": 0.0}

    def evaluate(step: int, epoch: int) -> bool:
        started = time.time()
        loss = scorer.loss(early_rows)
        timing["eval"] += time.time() - started
        stop = stopper.update(loss, step, weights)
        log_rows.append({"type": "eval", "step": step, "epoch": epoch, "eval_loss": round(loss, 6),
                         "eval_perplexity": round(math.exp(loss), 4),
                         "best": stopper.best_step == step})
        log.info("step %d: eval loss %.4f (perplexity %.2f)%s", step, loss, math.exp(loss),
                 " best" if stopper.best_step == step else "")
        return stop

    evaluate(0, 0)
    initial_loss = stopper.best_loss
    step, stop, last_eval = 0, False, 0
    progress = tqdm(total=planned, desc="prompt tuning", unit="step")
    for epoch in range(1, tune.epochs + 1):
        order = rng.sample(data.train, len(data.train))
        for pairs in _chunks(order, micro_batch * tune.grad_accum):
            started = time.time()
            rows = [fmt.training_example(*data.texts[pair], data.examples(
                        draw_examples(rng, data.train, tune.n_examples, exclude_query=pair[0])))
                    for pair in pairs]  # built as needed: a large split is cut short by max_steps
            step_loss, tokens = _accumulate_gradients(peft_model, rows, micro_batch, scorer.pad_id,
                                                      device, tune.n_virtual_tokens)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            seconds = time.time() - started
            timing["train"] += seconds
            log_rows.append({"type": "step", "step": step, "epoch": epoch, "loss": round(step_loss, 6),
                             "lr": scheduler.get_last_lr()[0], "target_tokens": tokens,
                             "seconds": round(seconds, 3)})
            progress.update(1)
            progress.set_postfix(loss=f"{step_loss:.3f}")
            if tune.eval_every and step % tune.eval_every == 0:
                stop, last_eval = evaluate(step, epoch), step
            if stop or step >= planned:
                break
        if tune.eval_every is None and last_eval != step:
            stop, last_eval = evaluate(step, epoch), step
        if stop or step >= planned:
            break
    progress.close()
    if last_eval != step:
        evaluate(step, epoch)
    with torch.no_grad():
        weights.copy_(stopper.best_weights)
    return TrainResult(log_rows, step, stopper.best_step, stopper.best_loss, initial_loss,
                       stop, timing["train"], timing["eval"])


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
    from sptar.resources import memory_guard

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
