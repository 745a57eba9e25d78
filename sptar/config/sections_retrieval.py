"""Config sections for retrieval: BM25, dense encoding and search, bi-encoder training and export."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from sptar.config.base import Precision, Section


class BM25Config(Section):
    backend: Literal["bm25s", "rank-bm25"] = "bm25s"
    k1: float = Field(0.9, gt=0)
    b: float = Field(0.4, ge=0, le=1)
    stopwords: Literal["en", "none"] = "en"
    stemmer: Literal["english", "none"] = "english"
    top_k: int = Field(1000, ge=1)


class DenseConfig(Section):
    """Encoding and FAISS search for every dense system."""

    batch_size: int = Field(64, ge=1)
    max_seq_length: int | None = Field(256, ge=8)
    index: Literal["flat", "hnsw", "ivf"] = "flat"
    hnsw_m: int = Field(32, ge=4)
    hnsw_ef_search: int = Field(256, ge=1)
    ivf_nlist: int = Field(256, ge=1)
    ivf_nprobe: int = Field(32, ge=1)
    top_k: int = Field(1000, ge=1)
    chunk_size: int = Field(2048, ge=1)  # documents per resumable encoding chunk
    precision: Precision = "auto"  # see Precision
    # auto: OpenVINO on CPU (1.25-1.3x torch's speed, see sptar.openvino_encoding), torch on GPU
    backend: Literal["auto", "torch", "openvino"] = "auto"
    # int8: OpenVINO encodes with an int8-quantised copy of the encoder (NNCF post-training
    # quantisation, activation ranges from calibration_docs documents of the corpus): ~1.36x
    # faster on CPU. Only the OpenVINO backend quantises; on a GPU (backend auto) it is ignored.
    quantize: Literal["none", "int8"] = "none"
    calibration_docs: int = Field(64, ge=1)

    @model_validator(mode="after")
    def _check_quantize(self) -> DenseConfig:
        if self.quantize == "int8" and self.backend == "torch":
            raise ValueError("dense.quantize int8 needs the OpenVINO backend (fix: set dense.backend"
                             " to auto or openvino, or dense.quantize: none)")
        return self


class TrainConfig(Section):
    """Fine-tuning the bi-encoder (MultipleNegativesRankingLoss, in-batch negatives)."""

    epochs: int = Field(1, ge=1)  # passes over each system's own training set (without steps)
    # optimizer steps, the same for every trained system (a small set repeats its epochs);
    # when set, epochs is ignored
    steps: int | None = Field(None, ge=1)
    batch_size: int = Field(32, ge=2)  # in-batch negatives: batch_size - 1 per query, at least 1
    lr: float = Field(2e-5, gt=0, lt=1)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    weight_decay: float = Field(0.01, ge=0)
    max_seq_length: int | None = Field(256, ge=8)  # None: the model's own limit
    max_pairs_per_query: int | None = Field(None, ge=1)  # cap labeled pairs of one query
    hard_negatives: int = Field(0, ge=0)  # BM25-mined negatives per pair (0: in-batch only)
    hard_negative_depth: int = Field(30, ge=1)  # mine from this many BM25 results per query
    dev_fraction: float = Field(0.0, ge=0, lt=1)  # labeled queries held out for model selection
    dev_candidates: int = Field(100, ge=1)  # BM25 candidates per dev query in the dev corpus
    eval_steps: int | None = Field(None, ge=1)  # dev evaluation every n steps (None: each epoch)
    precision: Literal["auto", "fp32", "fp16", "bf16"] = "auto"  # auto: bf16/fp16 on CUDA
    # dropout on the attention probabilities while training; None: the encoder's own (0.1 for
    # MiniLM). 0 lets CPU attention run fused (scaled_dot_product_attention has no fused CPU
    # kernel with dropout): 1.6x faster steps on CPU. The saved model keeps the encoder's value.
    attention_dropout: float | None = Field(None, ge=0, lt=1)
    logging_steps: int = Field(1, ge=1)
    seed: int | None = None  # None: the pipeline seed


class ExportConfig(Section):
    """``sptar export``: the filtered weak set plus the labeled pairs as training data files."""

    gold: bool = True  # include the labeled pairs of the split (marked source: gold)
    hard_negatives: int = Field(1, ge=0)  # BM25-mined negatives per pair (0: none)
    hard_negative_depth: int = Field(30, ge=1)  # mined from this many BM25 results per query
