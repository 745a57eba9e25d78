"""Config sections for retrieval: BM25, dense encoding and search, bi-encoder training and export."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from sptar.config.base import Precision, Section


class BM25Config(Section):
    """BM25: the bm25 system, the consistency filter, hard negatives and dev candidates."""

    backend: Literal["bm25s", "rank-bm25"] = Field("bm25s", description="the BM25 implementation"
                                                   " (both score as Lucene does)")
    k1: float = Field(0.9, gt=0, description="term frequency saturation (Anserini's default 0.9)")
    b: float = Field(0.4, ge=0, le=1, description="document length normalisation, 0 to 1"
                     " (Anserini's default 0.4)")
    stopwords: Literal["en", "none"] = Field("en", description="stopwords removed from queries and"
                                             " documents: English, or none")
    stemmer: Literal["english", "none"] = Field("english", description="the stemmer applied to"
                                                " every token (PyStemmer), or none")
    top_k: int = Field(1000, ge=1, description="documents retrieved per query in the bm25 system's"
                       " run (and by any search that names no depth)")


class DenseConfig(Section):
    """Encoding and FAISS search for every dense system."""

    batch_size: int = Field(64, ge=1, description="texts encoded per batch (corpus and queries)")
    max_seq_length: int | None = Field(256, ge=8, description="tokens per encoded text (longer"
                                       " ones are cut); null: the encoder's own limit")
    index: Literal["flat", "hnsw", "ivf"] = Field("flat", description="the FAISS index: flat"
                                                  " (exact inner product), hnsw or ivf (approximate)")
    hnsw_m: int = Field(32, ge=4, description="hnsw: neighbours per graph node")
    hnsw_ef_search: int = Field(256, ge=1, description="hnsw: candidates kept while searching"
                                " (more: closer to exact, slower)")
    ivf_nlist: int = Field(256, ge=1, description="ivf: clusters (at most one per 39 documents)")
    ivf_nprobe: int = Field(32, ge=1, description="ivf: clusters searched per query")
    top_k: int = Field(1000, ge=1, description="documents retrieved per query in a dense system's"
                       " run")
    chunk_size: int = Field(2048, ge=1, description="documents per resumable encoding chunk")
    precision: Precision = Field("auto", description="auto: bf16 on CUDA and on CPUs with native"
                                 " bf16 (AVX512-BF16, AMX), fp32 elsewhere")
    backend: Literal["auto", "torch", "openvino"] = Field(
        "auto", description="auto: OpenVINO on CPU (1.25-1.3x torch's speed, see"
        " sptar.retrieval.openvino_encoding), torch on GPU")
    quantize: Literal["none", "int8"] = Field(
        "none", description="int8: OpenVINO encodes with an int8-quantised copy of the encoder"
        " (NNCF post-training quantisation, activation ranges from calibration_docs documents):"
        " ~1.36x faster on CPU. Only the OpenVINO backend quantises; on a GPU (backend auto) it is"
        " ignored")
    calibration_docs: int = Field(64, ge=1, description="corpus documents that set the int8"
                                  " activation ranges (quantize: int8)")

    @model_validator(mode="after")
    def _check_quantize(self) -> DenseConfig:
        if self.quantize == "int8" and self.backend == "torch":
            raise ValueError("dense.quantize int8 needs the OpenVINO backend (fix: set dense.backend"
                             " to auto or openvino, or dense.quantize: none)")
        return self


class TrainConfig(Section):
    """Fine-tuning the bi-encoder: MultipleNegativesRankingLoss (in-batch and hard negatives), or
    margin-MSE distillation from the LLM's query likelihood (``loss: margin_mse``)."""

    HASH_NEUTRAL: ClassVar[dict[str, Any]] = {"labeled_repeat": 1, "weak_steps": 0,
                                              "max_weak_pairs": None, "loss": "mnrl",
                                              "teacher": "tuned", "teacher_scale": 1.0}

    epochs: int = Field(1, ge=1, description="passes over each system's own training set (ignored"
                        " when steps is set)")
    steps: int | None = Field(None, ge=1, description="optimizer steps, the same for every trained"
                              " system (a small set repeats its epochs); when set, epochs is"
                              " ignored")
    labeled_repeat: int = Field(1, ge=1, description="each labeled pair appears this many times"
                                " in the training set (upsampling the gold pairs beside the weak"
                                " ones)")
    weak_steps: int = Field(0, ge=0, description="two-stage training: first this many optimizer"
                            " steps on the weak pairs alone, then steps (or epochs) on the labeled"
                            " pairs alone; 0: one stage on both mixed")
    max_weak_pairs: int | None = Field(None, ge=1, description="train on this many of the"
                                       " filtered weak pairs: the first of one seeded order, so"
                                       " that smaller sets are nested in larger ones (the"
                                       " learning curve); null: all")
    loss: Literal["mnrl", "margin_mse"] = Field(
        "mnrl", description="mnrl: MultipleNegativesRankingLoss on hard labels (each query's"
        " document is its positive, the batch's other documents and the hard negatives its"
        " negatives); margin_mse: GPL's distillation, the student's cosine margin between the"
        " positive and each hard negative fit to the LLM teacher's (train.teacher) margin of"
        " log P(query | document), scored in the rerank section's settings and cached. Needs"
        " hard_negatives >= 1")
    teacher: Literal["tuned", "untuned"] = Field(
        "tuned", description="the margin_mse teacher: the LLM with the tuned soft prompt and its"
        " examples (as ql-rerank), or the plain LLM (as ql-rerank-untuned)")
    teacher_scale: float = Field(1.0, gt=0, description="margin_mse: the teacher's margins (mean"
                                 " log-probability per query token) are multiplied by this"
                                 " before the student's cosine margins are fit to them")
    batch_size: int = Field(32, ge=2, description="pairs per batch (per process under DDP);"
                            " in-batch negatives: batch_size - 1 per query, at least 1")
    lr: float = Field(2e-5, gt=0, lt=1, description="learning rate of the retriever fine-tuning"
                      " (AdamW, linear decay after warmup)")
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="share of the optimizer steps with a"
                                " linear warmup of the learning rate")
    weight_decay: float = Field(0.01, ge=0, description="AdamW's weight decay")
    max_seq_length: int | None = Field(256, ge=8, description="tokens per text while training;"
                                       " null: the model's own limit")
    max_pairs_per_query: int | None = Field(None, ge=1, description="cap on the labeled pairs of"
                                            " one query (sampled by seed); null: all")
    hard_negatives: int = Field(0, ge=0, description="BM25-mined negatives per pair (0: in-batch"
                                " negatives only)")
    hard_negative_depth: int = Field(30, ge=1, description="negatives are mined from this many BM25"
                                     " results per query")
    dev_fraction: float = Field(0.0, ge=0, lt=1, description="share of the labeled queries held"
                                " out as a dev set for model selection (best dev nDCG@10); 0: none")
    dev_candidates: int = Field(100, ge=1, description="BM25 candidates per dev query in the dev"
                                " corpus")
    eval_steps: int | None = Field(None, ge=1, description="optimizer steps between dev"
                                   " evaluations (null: each epoch)")
    precision: Literal["auto", "fp32", "fp16", "bf16"] = Field(
        "auto", description="auto: bf16 on CUDA (fp16 where bf16 is unsupported) and on CPUs with"
        " native bf16, fp32 elsewhere")
    attention_dropout: float | None = Field(
        None, ge=0, lt=1, description="dropout on the attention probabilities while training;"
        " null: the encoder's own (0.1 for MiniLM). 0 lets CPU attention run fused"
        " (scaled_dot_product_attention has no fused CPU kernel with dropout): 1.6x faster steps"
        " on CPU. The saved model keeps the encoder's value")
    logging_steps: int = Field(1, ge=1, description="optimizer steps between rows of the training"
                               " log")
    seed: int | None = Field(None, description="the seed of training (dev split, pair caps,"
                             " negatives, batches); null: the pipeline seed")

    @model_validator(mode="after")
    def _distillation_needs_negatives(self) -> TrainConfig:
        if self.loss == "margin_mse" and self.hard_negatives < 1:
            raise ValueError("train.loss margin_mse fits margins between a positive and its hard"
                             " negatives (fix: set train.hard_negatives to 1 or more)")
        return self


class ExportConfig(Section):
    """``sptar export``: the rows sptar train trains on (labeled + filtered weak pairs, with the
    train section's hard negatives) as training data files."""

    gold: bool = Field(True, description="include the labeled pairs of the split (marked source:"
                       " gold)")
