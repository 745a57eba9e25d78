"""Prompt tuning proper: AdamW on the soft prompt's embeddings, linear decay, early stopping on
the eval loss, the best prompt kept."""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sptar.config import Config
from sptar.llm.prompt_pairs import ExampleDraw, TuneData
from sptar.llm.prompts import PromptFormat, pad_batch
from sptar.llm.scoring import Row, Scorer, target_nll
from sptar.llm.softprompt import soft_prompt_weights

log = logging.getLogger(__name__)


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
    examples = ExampleDraw.for_config(cfg, data)
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
            rows = [fmt.training_example(*data.texts[pair], data.examples(examples(rng, pair)))
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
            progress.set_postfix(loss=f"{step_loss:.3f}", refresh=False)  # shown by the update
            progress.update(1)
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
