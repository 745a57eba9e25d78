"""Prompt scoring: the mean negative log-likelihood of the query tokens of many prompts.

Used by prompt tuning (its loss, early stopping, the soft prompt filter and the before/after
figures). :class:`Scorer` runs the prefix that every prompt of a call shares once and reuses its
key/value cache (:mod:`sptar.llm.kvcache`); the losses equal those of whole prompts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sptar.llm.prompts import IGNORE_INDEX, pad_batch
from sptar.llm.softprompt import soft_prompt_weights


def _supports_logits_to_keep(model) -> bool:
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(base.forward).parameters


def target_nll(model, input_ids, attention_mask, labels, n_virtual: int = 0, past_key_values=None):
    """Per row: the summed negative log-likelihood of the labelled tokens, and their count.

    ``n_virtual`` is the number of soft prompt tokens the (PEFT) model puts in front of the
    input. Only the positions that predict a labelled token are projected onto the vocabulary.
    With ``past_key_values`` (a cached prefix), ``attention_mask`` covers the prefix too and
    ``input_ids``/``labels`` are what follows it.
    """
    import torch
    import torch.nn.functional as F

    targets = labels[:, 1:]
    keep = targets != IGNORE_INDEX
    rows = input_ids.shape[0]
    # position p predicts token p + 1; the soft prompt shifts every input position by n_virtual
    positions = torch.cat([keep.new_zeros(rows, n_virtual), keep, keep.new_zeros(rows, 1)], dim=1)
    cached = {} if past_key_values is None else {"past_key_values": past_key_values, "use_cache": True}
    if _supports_logits_to_keep(model):
        logits = model(input_ids=input_ids, attention_mask=attention_mask,
                       logits_to_keep=positions, **cached).logits
    else:
        logits = model(input_ids=input_ids, attention_mask=attention_mask, **cached).logits[positions]
    nll = F.cross_entropy(logits.float(), targets[keep], reduction="none")
    per_row = torch.zeros(rows, dtype=nll.dtype, device=nll.device)
    per_row = per_row.index_add(0, keep.nonzero()[:, 0], nll)
    return per_row, keep.sum(dim=1)


Row = tuple[list[int], list[int]]  # (input_ids, labels)


def shared_length(rows: Sequence[Row]) -> int:
    """How many leading input ids every row has in common, short of any row's first prediction
    (the position before its first labelled token): the prefix that can be run once for all."""
    limit = min(next((i for i, label in enumerate(labels) if label != IGNORE_INDEX), len(labels)) - 1
                for _, labels in rows)
    first = rows[0][0]
    shared = 0
    while shared < limit and all(ids[shared] == first[shared] for ids, _ in rows):
        shared += 1
    return shared


@dataclass
class Scorer:
    """Mean per-token NLL of the query tokens of many prompts, in length-sorted batches.

    The prefix that every row of a call shares (the soft prompt, and the examples when they are
    the same for all) runs once; its key/value cache is then reused by every batch.
    """

    model: Any
    pad_id: int
    device: str
    batch_size: int = 8
    n_virtual: int = 0
    share_prefix: bool = True  # False: every prompt runs whole (the plain way, for benchmarks)

    def _parts(self):
        """The causal LM and the soft prompt's embeddings ``[1, n, hidden]`` (None without one)."""
        if not self.n_virtual:
            return self.model, None
        return self.model.get_base_model(), soft_prompt_weights(self.model)[None]

    def row_scores(self, rows: Sequence[Row], desc: str | None = None) -> list[tuple[float, int]]:
        from sptar.llm.kvcache import prefix_embeddings, prefix_states

        if not rows:
            return []
        model, soft = self._parts() if self.share_prefix else (self.model, None)
        shared = shared_length(rows) if self.share_prefix else 0
        n_virtual = 0 if self.share_prefix else self.n_virtual
        states, prefix = None, 0
        if shared or soft is not None:
            embeds = prefix_embeddings(model, rows[0][0][:shared], soft)
            states, prefix = prefix_states(model, embeds), embeds.shape[1]
        rest = [(ids[shared:], labels[shared:]) for ids, labels in rows]
        return scores_after_prefix(model, states, prefix, rest, self.pad_id, self.device,
                                   self.batch_size, n_virtual, desc)

    def loss(self, rows: Sequence[Row], desc: str | None = None) -> float:
        scores = self.row_scores(rows, desc)
        return sum(total for total, _ in scores) / max(1, sum(n for _, n in scores))


def scores_after_prefix(model, states: list | None, prefix: int, rows: Sequence[Row], pad_id: int,
                        device: str, batch_size: int = 8, n_virtual: int = 0,
                        desc: str | None = None) -> list[tuple[float, int]]:
    """``(summed NLL, token count)`` of each row's labelled tokens, every row following the prefix
    whose key/value ``states`` (:func:`sptar.llm.kvcache.prefix_states`, ``prefix`` positions long;
    None: no prefix) are computed already; length-sorted batches."""
    import torch
    from tqdm.auto import tqdm

    from sptar.llm.kvcache import prefix_cache

    scores: list[tuple[float, int]] = [(0.0, 0)] * len(rows)
    order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]))
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    with torch.no_grad():
        for batch in tqdm(batches, desc=desc, leave=False, disable=desc is None):
            ids, mask, labels = pad_batch([rows[i][0] for i in batch], pad_id, "right",
                                          labels=[rows[i][1] for i in batch])
            cache = None
            if states is not None:
                cache = prefix_cache(model, states, len(batch))
                mask = torch.cat([mask.new_ones(len(batch), prefix), mask], dim=1)
            nll, count = target_nll(model, ids.to(device), mask.to(device), labels.to(device),
                                    n_virtual, past_key_values=cache)
            for i, total, n in zip(batch, nll.tolist(), count.tolist(), strict=True):
                scores[i] = (total, n)
    return scores
