"""Config sections for the LLM side: the models, soft prompt tuning and weak query generation."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from sptar.config.base import Precision, Section

# What a stage that encodes with the bi-encoder depends on (its settings hash only when set)
ENCODER_KEYS = ("models.encoder", "models.encoder_pooling", "models.encoder_layers")


class ModelsConfig(Section):
    """Model aliases (see ``sptar.models``), Hugging Face ids or local folders."""

    # added after stages had run: at these values the models section hashes as before
    HASH_NEUTRAL: ClassVar[dict[str, Any]] = {"encoder_pooling": "mean", "encoder_layers": None}

    llm: str = Field("smollm2-135m", description="the causal LLM whose soft prompt is tuned and"
                     " which writes the weak queries")
    encoder: str = Field("all-minilm-l6-v2", description="the bi-encoder: zero-shot as it is,"
                         " fine-tuned by the train stage")
    trust_remote_code: bool = Field(False, description="run Python code shipped with a model: only"
                                    " for models you trust")
    download: bool = Field(False, description="fetch a Hugging Face id missing from the local"
                           " cache (false: local only)")
    encoder_pooling: Literal["mean", "lasttoken"] = Field(
        "mean", description="encoder smollm2-135m only (the causal LM as a bi-encoder): pool its"
        " token states by mean, or take the last real token's; any other encoder keeps the pooling"
        " of its own folder, and setting lasttoken for it is an error")
    encoder_layers: int | None = Field(
        None, ge=1, description="encoder smollm2-135m only: keep its lowest N transformer layers"
        " (of 30; fewer encode faster); null: all. Setting it for another encoder is an error")

    @model_validator(mode="after")
    def _alias_settings(self) -> ModelsConfig:
        from sptar.models import ENCODER_ALIAS

        if self.encoder != ENCODER_ALIAS and (self.encoder_pooling != "mean"
                                              or self.encoder_layers is not None):
            raise ValueError(f"encoder_pooling and encoder_layers shape encoder {ENCODER_ALIAS}"
                             f" only, not {self.encoder!r} (fix: remove them, or set"
                             f" models.encoder: {ENCODER_ALIAS})")
        return self


class TuneConfig(Section):
    """Soft prompt tuning and the soft prompt filter (``sptar.stages.tune``)."""

    HASH_NEUTRAL: ClassVar[dict[str, Any]] = {"example_draw": "random"}

    n_virtual_tokens: int = Field(50, ge=1, description="length of the soft prompt, in virtual"
                                  " tokens (SPTAR: 50)")
    lr: float = Field(3e-2, gt=0, description="learning rate of the soft prompt (AdamW, linear"
                      " decay; SPTAR: 3e-2)")
    batch_size: int = Field(1, ge=1, description="prompt-train pairs per micro-batch on CPU")
    cuda_batch_size: int = Field(8, ge=1, description="pairs per micro-batch on CUDA (bf16)")
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step")
    epochs: int = Field(3, ge=1, description="passes over the prompt-train pairs (early stopping"
                        " or max_steps may end it sooner)")
    max_steps: int | None = Field(None, ge=1, description="optimizer steps at most; null: the"
                                  " epochs decide")
    eval_every: int | None = Field(None, ge=1, description="optimizer steps between evaluations"
                                   " of the eval loss; null: once every epoch")
    patience: int = Field(3, ge=1, description="evaluations without a better eval loss before"
                          " stopping")
    eval_pairs: int | None = Field(None, ge=1, description="prompt-eval pairs for early stopping,"
                                   " the soft prompt filter and the before/after figures (null: all)")
    eval_batch_size: int = Field(8, ge=1, description="pairs per batch when the eval loss is"
                                 " computed")
    max_doc_tokens: int = Field(256, ge=8, description="the document a query is written for is cut"
                                " to this many tokens")
    max_example_doc_tokens: int = Field(128, ge=8, description="an in-context example's document is"
                                        " cut to this many tokens")
    max_query_tokens: int = Field(48, ge=4, description="a query (the tokens the loss counts) is"
                                  " cut to this many tokens")
    n_examples: int = Field(1, ge=0, le=2, description="in-context example pairs in every prompt")
    example_draw: Literal["random", "fixed"] = Field(
        "random", description="the example pairs of the training prompts: random (drawn afresh"
        " for every prompt and epoch) or fixed (one set, drawn by seed, for every prompt, as"
        " SPTAR tunes; a training pair never serves as its own example)")
    n_candidates: int = Field(10, ge=1, description="example sets the soft prompt filter scores")
    heldout_eval_pairs: int = Field(0, ge=0, description="further prompt-eval pairs, used for no"
                                    " choice: they check the choices on pairs they never saw")


class GenerateConfig(Section):
    """Weak query generation (``sptar generate``): decoding, prompt and batching."""

    HASH_NEUTRAL: ClassVar[dict[str, Any]] = {"ban_example_ngrams": 0, "score_without_doc": False,
                                              "engine": "native", "vllm_tensor_parallel": 1}

    engine: Literal["native", "vllm"] = Field(
        "native", description="native: sptar's batched decoder on the prefix cache (the CPU"
        " default); vllm: vLLM's engine (make install-vllm), the soft prompt as prompt_embeds")
    vllm_tensor_parallel: int = Field(1, ge=1, description="vllm engine: GPUs one model is split"
                                      " over (tensor_parallel_size)")

    queries_per_doc: int = Field(1, ge=1, description="weak queries written per unlabeled document"
                                 " (more than 1 needs sample: true)")
    sample: bool = Field(False, description="sample with temperature and top_p; false: greedy"
                         " decoding")
    temperature: float = Field(0.7, gt=0, description="sampling temperature, used when sampling"
                               " and by every retry of an empty query")
    top_p: float = Field(0.95, gt=0, le=1, description="nucleus sampling: draw from the most likely"
                         " tokens that hold this much probability")
    max_new_tokens: int = Field(48, ge=1, description="tokens generated per query at most"
                                " (generation stops earlier at the end of the line)")
    max_doc_tokens: int = Field(256, ge=8, description="the document in the prompt is cut to this"
                                " many tokens")
    inpars_examples: int = Field(3, ge=1, description="example pairs in the InPars prompt (from"
                                 " prompt-train)")
    score_without_doc: bool = Field(
        False, description="score each written query under the prompt with its document and with an"
        " empty one: metadata ll_doc and ll_nodoc (mean log-probability per token), for the"
        " query_likelihood filter")
    ban_example_ngrams: int = Field(0, ge=0, description="decoding never writes a run of this many"
                                    " tokens that occurs in an in-context example's query (against"
                                    " copying the example); 0: off, else at least 2")
    retries: int = Field(2, ge=0, description="an empty query is re-sampled this often, then"
                         " dropped")
    batch_size: int | Literal["auto"] = Field(
        16, description="rows decoded at once (refilled as rows finish); auto: 16 on CPU, on CUDA"
        " as many as half the free GPU memory holds key/value caches for"
        " (sptar.run.resources.decoding_rows)")
    chunk_size: int = Field(64, ge=1, description="documents per resumable part file")
    prefix_cache: bool = Field(True, description="compute the shared prompt prefix's key/value"
                               " cache once (false: per batch)")
    precision: Precision = Field("auto", description="auto: bf16 on CUDA and on CPUs with native"
                                 " bf16, fp32 elsewhere (bf16 changes some greedy outputs)")

    @field_validator("ban_example_ngrams")
    @classmethod
    def _ngram(cls, value: int) -> int:
        if value == 1:
            raise ValueError("ban_example_ngrams 1 would ban single tokens: use 0 (off) or 2 or more")
        return value

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


class RerankConfig(Section):
    """The query-likelihood rerankers (``sptar evaluate --system ql-rerank`` with the tuned soft
    prompt and its chosen examples, ``ql-rerank-untuned`` with the plain LLM and no example):
    BM25's top ``depth`` reordered by the LLM's mean log P(query | document)."""

    depth: int = Field(20, ge=1, description="BM25 candidates reordered per query (the rest keep"
                       " BM25's order below them)")
    max_doc_tokens: int = Field(160, ge=8, description="the document in the prompt is cut to this"
                                " many tokens (as the soft prompt was tuned on)")
    batch_size: int = Field(16, ge=1, description="queries of one document scored at once")
    precision: Precision = Field("fp32", description="fp32 (the default: bf16 would change"
                                 " scores and has not been checked on validation), bf16 or auto")
