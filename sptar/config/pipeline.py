"""The whole pipeline config (every section) with its hashes, and the report section."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from sptar.config.base import Section
from sptar.config.sections_data import DatasetConfig, EvaluateConfig, SplitConfig
from sptar.config.sections_filter import FilterConfig
from sptar.config.sections_llm import GenerateConfig, ModelsConfig, RerankConfig, TuneConfig
from sptar.config.sections_retrieval import BM25Config, DenseConfig, ExportConfig, TrainConfig
from sptar.io.paths import check_name
from sptar.systems import SYSTEMS

System = Literal[SYSTEMS]


class ReportConfig(Section):
    """``sptar report``: the systems compared side by side, and the paired significance tests."""

    systems: list[System] = Field(["bm25", "zero-shot"], description="the systems in the report"
                                  " (each needs its sptar evaluate run)")
    reference: System = Field("sptar", description="paired tests compare this system with every"
                              " other one")
    primary: list[System] = Field(["wo-aug", "inpars"], description="the primary comparisons"
                                  " (reference vs each): their p-values are Holm-corrected together")
    resamples: int = Field(10000, ge=100, description="sign flips of the paired randomization test"
                           " (exact when 2^n is fewer)")


class Config(Section):
    """A whole pipeline: one experiment on one dataset."""

    experiment: str = Field(description="the experiment's name: its runs go to"
                            " data/runs/<experiment>/")  # load_config: the file's name by default
    seed: int = Field(42, description="the seed of every random choice: split, tuning, examples,"
                      " sampling, training")
    device: str = Field("auto", description="auto (CUDA when present, else CPU), cpu, cuda, cuda:N"
                        " or mps")
    dataset: DatasetConfig = Field(description="which dataset, and where it comes from")
    split: SplitConfig = Field(SplitConfig(), description="the few-shot split of the labeled data,"
                               " the validation queries and the unlabeled pool")
    models: ModelsConfig = Field(ModelsConfig(), description="the LLM and the bi-encoder: aliases"
                                 " (sptar.models), Hugging Face ids or local folders")
    bm25: BM25Config = Field(BM25Config(), description="the bm25 system, the BM25 consistency"
                             " filter and BM25-mined negatives")
    dense: DenseConfig = Field(DenseConfig(), description="encoding and FAISS search for every"
                               " dense system")
    tune: TuneConfig = Field(TuneConfig(), description="soft prompt tuning and the soft prompt"
                             " filter (the choice of in-context examples)")
    generate: GenerateConfig = Field(GenerateConfig(), description="weak query generation:"
                                     " decoding, prompt and batching")
    evaluate: EvaluateConfig = Field(EvaluateConfig(), description="which labeled queries the"
                                     " systems are scored on")
    filter: FilterConfig = Field(FilterConfig(), description="the weak data filter: steps applied"
                                 " in order to each generated set")
    train: TrainConfig = Field(TrainConfig(), description="fine-tuning the bi-encoder"
                               " (MultipleNegativesRankingLoss, in-batch negatives)")
    export: ExportConfig = Field(ExportConfig(), description="the filtered weak set plus the"
                                 " labeled pairs as training data files (sptar export)")
    rerank: RerankConfig = Field(RerankConfig(), description="the query-likelihood rerankers"
                                 " (systems ql-rerank and ql-rerank-untuned)")
    report: ReportConfig = Field(ReportConfig(), description="the systems compared side by side,"
                                 " and the paired significance tests")

    @field_validator("experiment")
    @classmethod
    def _check_experiment(cls, value: str) -> str:
        return check_name(value, "experiment")

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", value):
            raise ValueError(f"device must be auto, cpu, cuda, cuda:N or mps, got {value!r}")
        return value

    def sections(self, *names: str) -> dict[str, Any]:
        """The named sections (or dotted keys such as ``dataset.name``) as plain data, as the
        config hash sees them (:meth:`Section.hash_dump`)."""
        out: dict[str, Any] = {}
        for name in names:
            value: Any = self
            parent: Any = None
            for part in name.split("."):
                parent, value = value, getattr(value, part)
            neutral = getattr(parent, "HASH_NEUTRAL", {})
            if part in neutral and value == neutral[part]:
                continue  # a field added later, at the value that behaves as before it existed
            if isinstance(value, Section):
                out[name] = value.hash_dump()
            else:
                out[name] = value.model_dump(mode="json") if isinstance(value, BaseModel) else value
        return out

    def section_hash(self, *names: str) -> str:
        """A stable hash of the named sections: what a stage's output depends on."""
        blob = json.dumps(self.sections(*names), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]
