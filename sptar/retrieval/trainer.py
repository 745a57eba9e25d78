"""Fine-tuning a sentence-transformers bi-encoder with MultipleNegativesRankingLoss (in-batch
negatives, optional hard negatives) or MarginMSELoss (``train.loss margin_mse``: each row's
cosine margins between its positive and its hard negatives fit to the row's ``margins``, which
the train stage puts there): the trainer's arguments, precision, warmup, attention dropout, the
dev evaluator for model selection, and its log."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from sptar.config import Config, TrainConfig
from sptar.errors import SptarError
from sptar.io.formats import Corpus, doc_text
from sptar.retrieval.trainset import WEAK, Example, TrainingData, train_seed

log = logging.getLogger(__name__)

DEV_METRIC = "dev_cosine_ndcg@10"  # the dev evaluator's nDCG@10, as the trainer logs it


def training_dataset(rows: list[Example], corpus: Corpus, n_negatives: int, margins: bool = False):
    """A ``datasets.Dataset`` with columns anchor, positive[, negative_1 ... negative_n][, label:
    each row's margins]."""
    from datasets import Dataset

    columns: dict[str, list] = {"anchor": [r.query for r in rows],
                                "positive": [doc_text(corpus[r.doc_id]) for r in rows]}
    for k in range(n_negatives):
        columns[f"negative_{k + 1}"] = [doc_text(corpus[r.negatives[k]]) for r in rows]
    if margins:
        unlabeled = [r for r in rows if r.margins is None or len(r.margins) != n_negatives]
        if unlabeled:
            raise SptarError(f"training row {unlabeled[0].query_id} -> {unlabeled[0].doc_id} has no"
                             f" teacher margin for each of its {n_negatives} negatives")
        columns["label"] = [list(r.margins) for r in rows]
    return Dataset.from_dict(columns)


def training_loss(model, loss: str):
    """The loss of ``train.loss``: MNRL, or margin-MSE on cosine margins."""
    from sentence_transformers.sentence_transformer.losses import (
        MarginMSELoss,
        MultipleNegativesRankingLoss,
    )
    from sentence_transformers.util import pairwise_cos_sim

    if loss == "margin_mse":
        return MarginMSELoss(model, similarity_fct=pairwise_cos_sim)
    return MultipleNegativesRankingLoss(model)


def dev_evaluator(dev: list[Example], corpus: Corpus, searcher, depth: int, batch_size: int):
    """nDCG@10 of the dev queries over their positives plus BM25's top ``depth`` candidates."""
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator
    from sentence_transformers.util import cos_sim

    queries = {row.query_id: row.query for row in dev}
    relevant: dict[str, set[str]] = {}
    for row in dev:
        relevant.setdefault(row.query_id, set()).add(row.doc_id)
    candidates = set().union(*relevant.values())
    for docs in searcher.search(queries, top_k=depth).values():
        candidates.update(docs)
    dev_corpus = {did: doc_text(corpus[did]) for did in corpus if did in candidates}
    return InformationRetrievalEvaluator(queries, dev_corpus, relevant, name="dev", write_csv=False,
                                         batch_size=batch_size, score_functions={"cosine": cos_sim},
                                         main_score_function="cosine")


# ---------------------------------------------------------------- trainer


def precision_flags(tc: TrainConfig, device: str) -> dict[str, bool]:
    """Mixed precision: ``auto`` is bf16 on CUDA where supported (else fp16) and on CPUs with
    native bf16 (:func:`sptar.models.effective_precision`), fp32 elsewhere."""
    import torch

    from sptar.models import effective_precision

    if not device.startswith("cuda"):
        if tc.precision == "fp16":
            raise SptarError("train.precision fp16 needs a CUDA device (fix: use auto, fp32 or bf16)")
        return {"bf16": effective_precision(device, tc.precision) == "bf16", "fp16": False}
    choice = tc.precision
    if choice == "auto":
        choice = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return {"bf16": choice == "bf16", "fp16": choice == "fp16"}


def training_arguments(tc: TrainConfig, output_dir: Path, device: str, seed: int, with_dev: bool):
    from sentence_transformers import SentenceTransformerTrainingArguments
    from sentence_transformers.base.sampler import BatchSamplers

    selection: dict[str, Any] = {"eval_strategy": "no", "save_strategy": "no"}
    if with_dev:
        strategy = "steps" if tc.eval_steps else "epoch"
        selection = {"eval_strategy": strategy, "save_strategy": strategy,
                     "load_best_model_at_end": True, "metric_for_best_model": f"eval_{DEV_METRIC}",
                     "greater_is_better": True, "save_total_limit": 1, "save_only_model": True}
        if tc.eval_steps:
            selection.update(eval_steps=tc.eval_steps, save_steps=tc.eval_steps)
    return SentenceTransformerTrainingArguments(
        output_dir=str(output_dir),
        num_train_epochs=tc.epochs,
        max_steps=tc.steps or -1,  # when set, the same for every system: small sets repeat epochs
        per_device_train_batch_size=tc.batch_size,
        learning_rate=tc.lr,
        warmup_steps=0,  # set by fit() once the number of steps is known (warmup_steps())
        weight_decay=tc.weight_decay,
        seed=seed,
        data_seed=seed,
        batch_sampler=BatchSamplers.NO_DUPLICATES,
        logging_steps=tc.logging_steps,
        logging_first_step=True,
        report_to="none",
        use_cpu=not device.startswith("cuda"),
        dataloader_drop_last=False,
        **precision_flags(tc, device),
        **selection,
    )


def _quiet_progress_bar(trainer) -> None:
    """Keep the trainer's progress bar, named ("training ... steps", also in the stage's status
    lines), but drop its printing of every log dict (logged already)."""
    from tqdm.auto import tqdm
    from transformers.trainer_callback import ProgressCallback

    class QuietProgress(ProgressCallback):
        def on_train_begin(self, args, state, control, **kwargs):  # ProgressCallback's, named
            if state.is_world_process_zero:
                self.training_bar = tqdm(total=state.max_steps, desc="training", unit="step",
                                         dynamic_ncols=True)
            self.current_step = 0

        def on_log(self, args, state, control, logs=None, **kwargs):
            return None

    if trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(QuietProgress())


def _log_callback(rows: list[dict[str, Any]]):
    from transformers import TrainerCallback

    class LogCallback(TrainerCallback):
        """Collect every logged dict (loss, learning rate, dev scores) with its step."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs:
                row = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4), **logs}
                rows.append(row)
                if "loss" in logs or f"eval_{DEV_METRIC}" in logs:
                    log.info("train step %d: %s", state.global_step,
                             ", ".join(f"{k} {v:.4g}" for k, v in logs.items()
                                       if isinstance(v, float)))

    return LogCallback()


def fit(cfg: Config, data: TrainingData, corpus: Corpus, searcher, work_dir: Path,
        device: str) -> tuple[Any, dict[str, Any], list[dict[str, Any]]]:
    """Fine-tune the configured encoder on ``data`` as ``train`` schedules it; return (trained
    model, trainer metrics, log rows). One stage on every row (the labeled ones
    ``train.labeled_repeat`` times), or with ``train.weak_steps`` two: the weak rows alone, then
    the labeled rows alone."""
    tc = cfg.train
    labeled = [row for row in data.train if row.source != WEAK]
    weak = [row for row in data.train if row.source == WEAK]
    if not (tc.weak_steps and weak):
        return _fit(cfg, data.train + labeled * (tc.labeled_repeat - 1), data.dev, corpus, searcher,
                    work_dir, device, tc.steps)
    model, first, log_first = _fit(cfg, weak, [], corpus, searcher, work_dir / "weak", device,
                                   tc.weak_steps)
    model, second, log_second = _fit(cfg, labeled * tc.labeled_repeat, data.dev, corpus, searcher,
                                     work_dir, device, tc.steps, model)
    steps = first["global_step"] + second["global_step"]
    metrics = dict(second, global_step=steps, weak_steps=first["global_step"],
                   train_runtime=first.get("train_runtime", 0.0) + second.get("train_runtime", 0.0),
                   training_loss=(first["training_loss"] * first["global_step"]
                                  + second["training_loss"] * second["global_step"]) / steps)
    return model, metrics, ([{"phase": "weak", **row} for row in log_first]
                            + [{"phase": "labeled", **row} for row in log_second])


def _fit(cfg: Config, train: list[Example], dev: list[Example], corpus: Corpus, searcher,
         work_dir: Path, device: str, steps: int | None, model=None):
    """One trainer run over ``train`` (``steps`` optimizer steps, or ``train.epochs``), from the
    configured encoder or from ``model``."""
    from sentence_transformers import SentenceTransformerTrainer

    from sptar.models import load_encoder

    tc = cfg.train.model_copy(update={"steps": steps})
    dropout = attention_dropout_setting(cfg) if tc.attention_dropout is not None else {}
    if model is None:
        model = load_encoder(cfg.models.encoder, device, tc.max_seq_length,
                             cfg.models.trust_remote_code, cfg.models.download,
                             config_overrides={key: tc.attention_dropout for key in dropout},
                             pooling=cfg.models.encoder_pooling, layers=cfg.models.encoder_layers)
    else:
        for key in dropout:  # the first stage's model came back with the encoder's own value
            setattr(model[0].auto_model.config, key, tc.attention_dropout)
    evaluator = (dev_evaluator(dev, corpus, searcher, tc.dev_candidates, tc.batch_size)
                 if dev else None)
    rows: list[dict[str, Any]] = []
    trainer = SentenceTransformerTrainer(
        model=model,
        args=training_arguments(tc, work_dir, device, train_seed(cfg), bool(dev)),
        train_dataset=training_dataset(train, corpus, tc.hard_negatives, tc.loss == "margin_mse"),
        loss=training_loss(model, tc.loss),
        evaluator=evaluator,
        callbacks=[_log_callback(rows)],
    )
    _quiet_progress_bar(trainer)
    total = tc.steps or len(trainer.get_train_dataloader()) * tc.epochs
    trainer.args.warmup_steps = warmup_steps(tc.warmup_ratio, total)
    result = trainer.train()
    for key, value in dropout.items():  # the saved config keeps the encoder's own value
        setattr(trainer.model[0].auto_model.config, key, value)
    metrics = dict(result.metrics, global_step=result.global_step, training_loss=result.training_loss,
                   epochs=round(trainer.state.epoch or 0.0, 3), warmup_steps=trainer.args.warmup_steps,
                   best_metric=trainer.state.best_metric,
                   best_step=_checkpoint_step(trainer.state.best_model_checkpoint))
    return trainer.model, metrics, rows


def warmup_steps(ratio: float, total: int) -> int:
    """Linear warmup over ``ratio`` of the ``total`` optimizer steps (rounded up, as the trainer
    does), but never all of them: the first step of a warmup runs at learning rate 0, so a run of
    one step with any warmup would leave the model as it was."""
    if total < 1:
        raise SptarError("training would take 0 optimizer steps and leave the encoder unchanged"
                         " (fix: give the train stage pairs, or set train.steps)")
    return min(math.ceil(ratio * total), total - 1)


ATTENTION_DROPOUT_KEYS = ("attention_probs_dropout_prob", "attention_dropout")  # BERT family; others


def attention_dropout_setting(cfg: Config) -> dict[str, float]:
    """``{config key: the encoder's own value}`` of its attention dropout (for ``train.attention_dropout``)."""
    from transformers import AutoConfig

    from sptar.models import hub_access, resolve_encoder

    folder = resolve_encoder(cfg.models.encoder, cfg.models.encoder_pooling, cfg.models.encoder_layers)
    try:
        with hub_access(cfg.models.download):
            config = AutoConfig.from_pretrained(folder,
                                                trust_remote_code=cfg.models.trust_remote_code,
                                                local_files_only=not cfg.models.download)
    except (OSError, ValueError) as exc:
        raise SptarError(f"train.attention_dropout: no transformer config found for {cfg.models.encoder}"
                         f" ({str(exc).splitlines()[0][:160]}) (fix: leave train.attention_dropout unset)") from exc
    for key in ATTENTION_DROPOUT_KEYS:
        if isinstance(getattr(config, key, None), int | float):
            return {key: getattr(config, key)}
    raise SptarError(f"train.attention_dropout: the config of {cfg.models.encoder} ({config.model_type})"
                     f" has none of {', '.join(ATTENTION_DROPOUT_KEYS)} (fix: leave train.attention_dropout unset)")


def _checkpoint_step(checkpoint: str | None) -> int | None:
    return int(checkpoint.rsplit("-", 1)[-1]) if checkpoint else None
