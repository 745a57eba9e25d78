"""Config sections for the LLM side: the models, soft prompt tuning and weak query generation."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from sptar.config.base import Precision, Section


class ModelsConfig(Section):
    """Model aliases (see ``sptar.models``), Hugging Face ids or local folders."""

    llm: str = "smollm2-135m"
    encoder: str = "all-minilm-l6-v2"
    trust_remote_code: bool = False  # run Python code shipped with a model: only for models you trust
    download: bool = False  # fetch a Hugging Face id missing from the local cache (else: local only)


class TuneConfig(Section):
    """Soft prompt tuning and the soft prompt filter (``sptar.tune``)."""

    n_virtual_tokens: int = Field(50, ge=1)
    lr: float = Field(3e-2, gt=0)
    batch_size: int = Field(1, ge=1)  # micro-batch on CPU
    cuda_batch_size: int = Field(8, ge=1)  # micro-batch on CUDA (bf16)
    grad_accum: int = Field(1, ge=1)  # micro-batches per optimizer step
    epochs: int = Field(3, ge=1)
    max_steps: int | None = Field(None, ge=1)  # optimizer steps; None: the epochs decide
    eval_every: int | None = Field(None, ge=1)  # optimizer steps between evals; None: every epoch
    patience: int = Field(3, ge=1)  # evals without a better eval loss before stopping
    eval_pairs: int | None = Field(None, ge=1)  # prompt-eval pairs for early stopping, the filter
    #                                              and the before/after figures (None: all)
    eval_batch_size: int = Field(8, ge=1)
    max_doc_tokens: int = Field(256, ge=8)
    max_example_doc_tokens: int = Field(128, ge=8)
    max_query_tokens: int = Field(48, ge=4)
    n_examples: int = Field(1, ge=0, le=2)  # in-context example pairs in every prompt
    n_candidates: int = Field(10, ge=1)  # example sets the soft prompt filter scores
    heldout_eval_pairs: int = Field(0, ge=0)  # further prompt-eval pairs, used for no choice


class GenerateConfig(Section):
    """Weak query generation (``sptar generate``): decoding, prompt and batching."""

    queries_per_doc: int = Field(1, ge=1)
    sample: bool = False  # false: greedy decoding
    temperature: float = Field(0.7, gt=0)  # sampling, and every retry of an empty query
    top_p: float = Field(0.95, gt=0, le=1)
    max_new_tokens: int = Field(48, ge=1)  # generation stops earlier at the end of the line
    max_doc_tokens: int = Field(256, ge=8)  # the document in the prompt is cut to this many tokens
    inpars_examples: int = Field(3, ge=1)  # example pairs in the InPars prompt (from prompt-train)
    retries: int = Field(2, ge=0)  # an empty query is re-sampled this often, then dropped
    # rows decoded at once (refilled as rows finish); auto: 16 on CPU, on CUDA as many as half
    # the free GPU memory holds key/value caches for (sptar.resources.decoding_rows)
    batch_size: int | Literal["auto"] = 16
    chunk_size: int = Field(64, ge=1)  # documents per resumable part file
    prefix_cache: bool = True  # compute the shared prompt prefix once (false: per batch)
    precision: Precision = "auto"  # see Precision (bf16 changes some greedy outputs)

    @field_validator("batch_size", mode="before")
    @classmethod
    def _rows(cls, value: Any) -> Any:
        if value == "auto" or (type(value) is int and value >= 1):
            return value
        raise ValueError("should be a number of rows (1 or more) or auto")

    @model_validator(mode="after")
    def _greedy_writes_one(self) -> GenerateConfig:
        if self.queries_per_doc > 1 and not self.sample:
            raise ValueError("queries_per_doc > 1 needs sample: true (greedy decoding writes the"
                             " same query every time)")
        return self
