"""Batched decoding of one line per prompt, reusing the key/value cache of a shared prefix.

Every prompt is ``prefix + doc`` where the prefix (optional soft-prompt embeddings, then the
token ids of the in-context examples) is the same for every document. :class:`LineGenerator`
runs the prefix through the model once and keeps its key/value cache. Documents are then
decoded in ``slots`` rows at once, with continuous batching:

- the key/value cache of a batch is one buffer per layer, ``[slots, kv heads, capacity, dim]``,
  allocated once; columns ``0..P-1`` hold the prefix (copied from the cached prefix), and every
  decode step writes one column for all rows in place;
- a document enters a free row by a prefill forward of its tokens on top of the cached prefix
  (left-padded with its batch-mates, positions ``P, P+1, ...`` exactly as in the unpadded prompt);
  its keys/values are copied into the row's columns just before the current write column, and
  the row's attention mask covers the prefix and its own columns only;
- a row is done when it writes a token containing a line break (or EOS) or reaches
  ``max_new_tokens``; its row is refilled with the next documents (in groups, so that prefills are
  batched), so the batch never waits for its slowest row; when the columns run out, the live ones
  are moved left (compaction).

Greedy by default; sampling (temperature, nucleus) draws with one seeded generator per document,
so that a document's result does not depend on its batch-mates. With ``use_cache=False`` every
prefill also recomputes the prefix (same layout): the reference that the cached path must
reproduce. Both are checked against plain ``model.generate()`` on the concatenated ids in the
tests and in ``benchmarks/bench_generate.py``.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from sptar.errors import SptarError
from sptar.llm.cpu_attention import use_decode_attention
from sptar.llm.kvcache import buffer_layer_class, prefix_cache, prefix_embeddings, prefix_states

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


@dataclass
class _Row:
    """A document being decoded in one row of the batch."""

    index: int  # position in the caller's list
    start: int  # first buffer column of its document tokens
    generator: object = None  # torch.Generator when sampling
    tokens: list[int] = field(default_factory=list)
    logprob_sum: float = 0.0


class LineGenerator:
    """Writes one line per document after a fixed prefix, with the prefix cache computed once."""

    def __init__(self, model, prefix_ids: Sequence[int], *, stop_ids: Sequence[int], pad_id: int,
                 soft_prompt=None, use_cache: bool = True, max_new_tokens: int = 48,
                 slots: int = 8, banned: Sequence[Sequence[int]] = ()):
        """``model``: a causal LM (not a PEFT wrapper); ``soft_prompt``: ``[1, n, hidden]``
        embeddings placed before the prefix ids (the virtual tokens of prompt tuning);
        ``slots``: rows decoded at once; ``banned``: token n-grams a line never contains (its
        next token is never the one that would complete one)."""
        import torch

        self.model = model
        self.device = next(model.parameters()).device
        self.pad_id = int(pad_id)
        self.use_cache = use_cache
        self.max_new_tokens = max_new_tokens
        self.slots = slots
        self.group = max(1, slots // 4)  # rows prefilled together when refilling
        self.stop_ids = torch.tensor(sorted(set(stop_ids)), dtype=torch.long, device=self.device)
        self.banned: dict[tuple[int, ...], set[int]] = {}  # n-1 tokens -> the tokens they forbid
        for ngram in banned:
            self.banned.setdefault(tuple(ngram[:-1]), set()).add(int(ngram[-1]))
        self.ban_context = len(next(iter(self.banned))) if self.banned else 0
        self._check_layers()
        use_decode_attention(model)
        self.prefix_embeds = prefix_embeddings(model, prefix_ids, soft_prompt)  # [1, P, hidden]
        self.prefix_len = self.prefix_embeds.shape[1]
        self._prefix_kv = (prefix_states(model, self.prefix_embeds) if use_cache and self.prefix_len
                           else None)

    def prefix_states(self) -> list | None:
        """The prefix's key/value states (:func:`sptar.llm.kvcache.prefix_states`), None without one."""
        if self._prefix_kv is not None or not self.prefix_len:
            return self._prefix_kv
        return prefix_states(self.model, self.prefix_embeds)  # use_cache off: computed again

    def _check_layers(self) -> None:
        from transformers import DynamicCache
        from transformers.cache_utils import DynamicLayer

        kinds = {type(layer).__name__ for layer in DynamicCache(config=self.model.config).layers
                 if type(layer) is not DynamicLayer}
        if kinds:
            raise SptarError(f"model {type(self.model).__name__} uses cache layers of kind "
                             f"{', '.join(sorted(kinds))}; the batched generator supports full "
                             "attention only (fix: use a model without sliding-window/linear layers)")

    def _cache(self, batch: int, capacity: int, with_prefix: bool):
        """A cache of buffer layers for ``batch`` rows and ``capacity`` columns."""
        return prefix_cache(self.model, self._prefix_kv if with_prefix else None, batch,
                            lambda: buffer_layer_class()(capacity))

    # ------------------------------------------------------------ documents

    def generate(self, docs: Sequence[Sequence[int]], sampling: Sampling = Sampling(),
                 seeds: Sequence[int] | None = None) -> list[Line]:
        """One line for each document (token ids of the doc block, placed after the prefix)."""
        import torch

        if sampling.sample and (seeds is None or len(seeds) != len(docs)):
            raise ValueError("sampling needs one seed per document")
        if not docs:
            return []
        with torch.inference_mode():
            return _Decoding(self, docs, sampling, seeds).run()


class _Decoding:
    """The state of one :meth:`LineGenerator.generate` call (continuous batching)."""

    def __init__(self, gen: LineGenerator, docs, sampling: Sampling, seeds):
        import torch

        self.gen, self.docs, self.sampling, self.seeds = gen, docs, sampling, seeds
        self.queue = deque(range(len(docs)))
        self.results: list[Line | None] = [None] * len(docs)
        slots = min(gen.slots, len(docs))
        widest = max(len(d) for d in docs)
        self.prefix = gen.prefix_len
        self.end = self.prefix + widest  # the next column every row writes
        self.capacity = self.end + 2 * gen.max_new_tokens
        self.cache = gen._cache(slots, self.capacity, with_prefix=True)
        self.mask = torch.zeros((slots, self.capacity), dtype=torch.long, device=gen.device)
        self.mask[:, :self.prefix] = 1
        self.rows: list[_Row | None] = [None] * slots
        self.last = torch.full((slots,), gen.pad_id, dtype=torch.long, device=gen.device)
        self.position = torch.zeros(slots, dtype=torch.long, device=gen.device)
        if not gen.use_cache:  # prefix columns are filled per row by its own prefill
            self.mask[:, :self.prefix] = 0

    # ------------------------------------------------------------ main loop

    def run(self) -> list[Line]:
        while True:
            free = [slot for slot, row in enumerate(self.rows) if row is None]
            busy = len(self.rows) - len(free)
            if self.queue and free and (busy == 0 or len(free) >= min(self.gen.group, len(self.queue))):
                self._refill(free)
                continue
            if busy == 0:
                break
            self._step()
        return self.results  # type: ignore[return-value]

    def _refill(self, free: list[int]) -> None:
        """Prefill the next documents into free rows, in groups; choose their first token."""
        count = min(len(free), len(self.queue))
        for start in range(0, count, self.gen.group):
            slots = free[start:min(start + self.gen.group, count)]
            indices = [self.queue.popleft() for _ in slots]
            logits = self._prefill(slots, indices)
            self._advance(slots, logits)

    def _prefill(self, slots: list[int], indices: list[int]):
        """Run documents ``indices`` (on top of the prefix); place their keys/values in ``slots``."""
        import torch

        from sptar.llm.prompts import pad_batch

        gen, prefix = self.gen, self.prefix
        ids, doc_mask = pad_batch([self.docs[i] for i in indices], gen.pad_id, "left")
        ids, doc_mask = ids.to(gen.device), doc_mask.to(gen.device)
        batch, width = ids.shape
        positions = (prefix + doc_mask.cumsum(dim=1) - 1).clamp(min=prefix)
        mask = torch.cat([torch.ones((batch, prefix), dtype=torch.long, device=gen.device),
                          doc_mask], dim=1)
        temp = gen._cache(batch, prefix + width, with_prefix=gen.use_cache)
        if gen.use_cache or not prefix:
            out = gen.model(input_ids=ids, attention_mask=mask, position_ids=positions,
                            past_key_values=temp, use_cache=True, logits_to_keep=1)
            first = prefix
        else:
            embeds = torch.cat([gen.prefix_embeds.expand(batch, -1, -1),
                                gen.model.get_input_embeddings()(ids)], dim=1)
            prefix_pos = torch.arange(prefix, device=gen.device).expand(batch, -1)
            out = gen.model(inputs_embeds=embeds, attention_mask=mask,
                            position_ids=torch.cat([prefix_pos, positions], dim=1),
                            past_key_values=temp, use_cache=True, logits_to_keep=1)
            first = 0
        if self.end < prefix + width:  # a wider document than the live rows: skip ahead
            self.mask[:, self.end:prefix + width] = 0
            self.end = prefix + width
        rows = torch.tensor(slots, device=gen.device)
        target = slice(self.end - width, self.end)
        for mine, theirs in zip(self.cache.layers, temp.layers, strict=True):
            if not mine.is_initialized:
                mine.allocate(len(self.rows), theirs._keys, theirs._values)
            mine.write(rows, target, theirs._keys[:, :, prefix:prefix + width],
                       theirs._values[:, :, prefix:prefix + width])
            if first == 0 and prefix:
                mine.write(rows, slice(0, prefix), theirs._keys[:, :, :prefix],
                           theirs._values[:, :, :prefix])
        self.mask[rows, prefix:] = 0
        self.mask[rows, target] = doc_mask
        if first == 0:
            self.mask[rows, :prefix] = 1
        self.position[rows] = positions[:, -1]
        for slot, index in zip(slots, indices, strict=True):
            generator = None
            if self.sampling.sample:
                generator = torch.Generator(device=gen.device).manual_seed(int(self.seeds[index]))
            self.rows[slot] = _Row(index, self.end - len(self.docs[index]), generator)
        return out.logits[:, -1, :].float()

    def _step(self) -> None:
        """One decode step for every row (free rows compute too, masked and ignored)."""
        import torch

        if self.end == self.capacity:
            self._compact()
        active = [slot for slot, row in enumerate(self.rows) if row is not None]
        self.mask[:, self.end] = 0
        self.mask[active, self.end] = 1
        self.position += 1
        for layer in self.cache.layers:
            layer.length = self.end
        out = self.gen.model(input_ids=self.last[:, None], attention_mask=self.mask[:, :self.end + 1],
                             position_ids=self.position[:, None], past_key_values=self.cache,
                             use_cache=True, logits_to_keep=1)
        self.end += 1
        logits = out.logits[:, -1, :].float()
        self._advance(active, logits[torch.tensor(active, device=logits.device)])

    def _advance(self, slots: list[int], logits) -> None:
        """Choose the next token of rows ``slots``; finish the rows that ended their line."""
        import torch

        generators = [self.rows[s].generator for s in slots] if self.sampling.sample else None
        if self.gen.banned:
            self._ban(slots, logits)
        chosen = _choose(logits, self.sampling, generators)
        logprobs = torch.log_softmax(logits, dim=-1).gather(1, chosen[:, None])[:, 0]
        stopped = torch.isin(chosen, self.gen.stop_ids).tolist()
        self.last[torch.tensor(slots, device=chosen.device)] = chosen
        for slot, token, logprob, stop in zip(slots, chosen.tolist(), logprobs.double().tolist(),
                                              stopped, strict=True):
            row = self.rows[slot]
            row.tokens.append(token)
            row.logprob_sum += logprob
            if stop or len(row.tokens) >= self.gen.max_new_tokens:
                self.results[row.index] = Line(row.tokens, row.logprob_sum, bool(stop))
                self.rows[slot] = None

    def _ban(self, slots: list[int], logits) -> None:
        """Forbid, in place, each row's tokens that would complete a banned n-gram."""
        n = self.gen.ban_context
        for i, slot in enumerate(slots):
            tokens = self.rows[slot].tokens
            if len(tokens) >= n:
                forbidden = self.gen.banned.get(tuple(tokens[len(tokens) - n:]))
                if forbidden:
                    logits[i, list(forbidden)] = float("-inf")

    def _compact(self) -> None:
        """Move the live columns left, right after the prefix, to make room for new ones."""
        starts = [row.start for row in self.rows if row is not None]
        first = min(starts) if starts else self.end
        shift = first - self.prefix
        if shift <= 0:
            raise RuntimeError("decoding buffer full")  # cannot happen: capacity >= widest + 2 * max_new
        span = slice(first, self.end)
        for layer in self.cache.layers:
            layer.shift(span, shift)
        live = self.mask[:, span].clone()
        self.mask[:, self.prefix:] = 0
        self.mask[:, self.prefix:self.prefix + live.shape[1]] = live
        for row in self.rows:
            if row is not None:
                row.start -= shift
        self.end -= shift


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
