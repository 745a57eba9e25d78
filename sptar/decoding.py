"""Batched decoding of one line per prompt, reusing the key/value cache of a shared prefix.

Every prompt is ``prefix + doc`` where the prefix (optional soft-prompt embeddings, then the
token ids of the in-context examples) is the same for every document. :class:`LineGenerator`
runs the prefix through the model once, keeps its key/value cache, and for each batch of
documents:

1. copies the prefix cache to the batch size;
2. runs the left-padded document tokens on top of it, laid out as ``[prefix][pad...][doc]``
   with an attention mask that covers the prefix and the real tokens only, and position ids
   that continue the prefix (``P, P+1, ...``) exactly as in the unpadded prompt;
3. decodes greedily (or samples, with one seeded generator per row so that a row's result
   does not depend on its batch) until every row has written a token containing a newline
   (or EOS) or ``max_new_tokens`` is reached, then stops the whole batch.

With ``use_cache=False`` the prefix is recomputed for every batch (same layout, one forward):
the reference that the cached path must reproduce. Both are checked against plain
``model.generate()`` on the concatenated ids in the tests and in ``benchmarks/bench_generate.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sampling:
    """How the next token is chosen: greedy, or sampled with temperature and nucleus (top-p)."""

    sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0


@dataclass
class Line:
    """One decoded line: the generated ids (up to and including the stop token, if any)."""

    token_ids: list[int]
    logprob_sum: float
    stopped: bool  # ended with a newline/EOS token (False: cut at max_new_tokens)

    @property
    def mean_logprob(self) -> float:
        return self.logprob_sum / len(self.token_ids) if self.token_ids else 0.0


def stop_token_ids(tokenizer) -> list[int]:
    """Every token whose text contains a line break, plus EOS: generation stops at end of line."""
    vocab = len(tokenizer)
    texts = tokenizer.batch_decode([[i] for i in range(vocab)], skip_special_tokens=False)
    stops = {i for i, text in enumerate(texts) if "\n" in text or "\r" in text}
    if tokenizer.eos_token_id is not None:
        stops.add(int(tokenizer.eos_token_id))
    return sorted(stops)


class LineGenerator:
    """Writes one line per document after a fixed prefix, with the prefix cache computed once."""

    def __init__(self, model, prefix_ids: Sequence[int], *, stop_ids: Sequence[int], pad_id: int,
                 soft_prompt=None, use_cache: bool = True, max_new_tokens: int = 48):
        """``model``: a causal LM (not a PEFT wrapper); ``soft_prompt``: ``[1, n, hidden]``
        embeddings placed before the prefix ids (the virtual tokens of prompt tuning)."""
        import torch

        self.model = model
        self.device = next(model.parameters()).device
        self.dtype = model.get_input_embeddings().weight.dtype
        self.pad_id = int(pad_id)
        self.use_cache = use_cache
        self.max_new_tokens = max_new_tokens
        self.stop_ids = torch.tensor(sorted(set(stop_ids)), dtype=torch.long, device=self.device)
        with torch.inference_mode():
            embeds = model.get_input_embeddings()(
                torch.tensor([list(prefix_ids)], dtype=torch.long, device=self.device))
            if soft_prompt is not None:
                soft = soft_prompt.detach().to(device=self.device, dtype=self.dtype)
                embeds = torch.cat([soft, embeds], dim=1)
        self.prefix_embeds = embeds  # [1, P, hidden]
        self.prefix_len = embeds.shape[1]
        self._prefix_kv = None
        if use_cache and self.prefix_len:
            self._prefix_kv = self._run_prefix()

    # ------------------------------------------------------------ prefix

    def _run_prefix(self) -> list[tuple]:
        import torch

        with torch.inference_mode():
            out = self.model(inputs_embeds=self.prefix_embeds, use_cache=True, logits_to_keep=1)
        return [(keys, values) for keys, values, *_ in out.past_key_values]

    def _batch_cache(self, batch: int):
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        if self._prefix_kv is not None:
            for layer, (keys, values) in enumerate(self._prefix_kv):
                cache.update(keys.expand(batch, -1, -1, -1), values.expand(batch, -1, -1, -1), layer)
        return cache

    # ------------------------------------------------------------ documents

    def generate(self, docs: Sequence[Sequence[int]], sampling: Sampling = Sampling(),
                 seeds: Sequence[int] | None = None) -> list[Line]:
        """One line for each document (token ids of the doc block, placed after the prefix)."""
        import torch

        from sptar.prompts import pad_batch

        if not docs:
            return []
        batch = len(docs)
        doc_ids, doc_mask = pad_batch(docs, self.pad_id, "left")
        doc_ids, doc_mask = doc_ids.to(self.device), doc_mask.to(self.device)
        prefix_mask = torch.ones((batch, self.prefix_len), dtype=torch.long, device=self.device)
        mask = torch.cat([prefix_mask, doc_mask], dim=1)
        # real doc tokens continue the prefix positions; pads get a dummy position (masked)
        doc_pos = (self.prefix_len + doc_mask.cumsum(dim=1) - 1).clamp(min=self.prefix_len)
        with torch.inference_mode():
            cache = self._batch_cache(batch)
            if self.use_cache or not self.prefix_len:
                out = self.model(input_ids=doc_ids, attention_mask=mask, position_ids=doc_pos,
                                 past_key_values=cache, use_cache=True, logits_to_keep=1)
            else:
                embeds = torch.cat([self.prefix_embeds.expand(batch, -1, -1),
                                    self.model.get_input_embeddings()(doc_ids)], dim=1)
                prefix_pos = torch.arange(self.prefix_len, device=self.device).expand(batch, -1)
                out = self.model(inputs_embeds=embeds, attention_mask=mask,
                                 position_ids=torch.cat([prefix_pos, doc_pos], dim=1),
                                 past_key_values=cache, use_cache=True, logits_to_keep=1)
            return self._decode(out, mask, doc_pos[:, -1], sampling, seeds)

    def _decode(self, out, mask, last_pos, sampling: Sampling, seeds) -> list[Line]:
        import torch

        batch = mask.shape[0]
        generators = None
        if sampling.sample:
            if seeds is None or len(seeds) != batch:
                raise ValueError("sampling needs one seed per row")
            generators = [torch.Generator(device=self.device).manual_seed(int(s)) for s in seeds]
        tokens = torch.empty((batch, 0), dtype=torch.long, device=self.device)
        done = torch.zeros(batch, dtype=torch.bool, device=self.device)
        lengths = torch.zeros(batch, dtype=torch.long, device=self.device)
        logprob_sums = torch.zeros(batch, dtype=torch.float64, device=self.device)
        cache, position = out.past_key_values, last_pos
        logits = out.logits[:, -1, :].float()
        for step in range(self.max_new_tokens):
            chosen = _choose(logits, sampling, generators)
            logprobs = torch.log_softmax(logits, dim=-1).gather(1, chosen[:, None])[:, 0]
            active = ~done
            logprob_sums += torch.where(active, logprobs.double(), 0.0)
            lengths += active.long()
            tokens = torch.cat([tokens, torch.where(active, chosen, self.pad_id)[:, None]], dim=1)
            done |= torch.isin(chosen, self.stop_ids)
            if step == self.max_new_tokens - 1 or bool(done.all()):
                break
            mask = torch.cat([mask, torch.ones((batch, 1), dtype=mask.dtype, device=mask.device)], 1)
            position = position + 1
            out = self.model(input_ids=chosen[:, None], attention_mask=mask,
                             position_ids=position[:, None], past_key_values=cache, use_cache=True,
                             logits_to_keep=1)
            cache = out.past_key_values
            logits = out.logits[:, -1, :].float()
        rows = tokens.tolist()
        lengths_list, sums, stopped = lengths.tolist(), logprob_sums.tolist(), done.tolist()
        return [Line(token_ids=row[:n], logprob_sum=s, stopped=bool(d))
                for row, n, s, d in zip(rows, lengths_list, sums, stopped, strict=True)]


def _choose(logits, sampling: Sampling, generators):
    """Greedy argmax, or one nucleus (top-p) sample per row drawn with that row's generator.

    Sampling uses the Gumbel-max trick (argmax of ``logits / T + Gumbel noise`` over the nucleus)
    so that a draw depends on the token order of the vocabulary only: float rounding that
    reorders near-equal probabilities (e.g. another batch size) cannot change which token a
    row's noise selects unless it changes the winner itself.
    """
    import torch

    if not sampling.sample:
        return logits.argmax(dim=-1)
    scaled = logits / sampling.temperature
    probs = torch.softmax(scaled, dim=-1)
    if sampling.top_p < 1.0:
        sorted_probs = probs.sort(dim=-1, descending=True).values
        # the nucleus: the most likely tokens whose mass reaches top_p (at least one)
        kept = ((sorted_probs.cumsum(dim=-1) - sorted_probs) < sampling.top_p).sum(dim=-1)
        threshold = sorted_probs.gather(1, (kept - 1)[:, None])
        scaled = scaled.masked_fill(probs < threshold, float("-inf"))
    noise = torch.stack([torch.rand(logits.shape[-1], generator=gen, device=logits.device,
                                    dtype=torch.float64) for gen in generators])
    gumbel = -torch.log(-torch.log(noise.clamp_min(1e-300)))
    return (scaled.double() + gumbel).argmax(dim=-1)
