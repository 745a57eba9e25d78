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
from sptar.config.sections_llm import GenerateConfig, ModelsConfig, TuneConfig
from sptar.config.sections_retrieval import BM25Config, DenseConfig, ExportConfig, TrainConfig
from sptar.paths import check_name

SYSTEMS = ("bm25", "zero-shot", "wo-aug", "inpars", "sptar")
System = Literal["bm25", "zero-shot", "wo-aug", "inpars", "sptar"]


class ReportConfig(Section):
    systems: list[System] = ["bm25", "zero-shot"]
    reference: System = "sptar"  # paired tests compare this system with every other one
    # the primary comparisons (reference vs each): their p-values are Holm-corrected together
    primary: list[System] = ["wo-aug", "inpars"]
    resamples: int = Field(10000, ge=100)  # paired randomization test (exact when 2^n is fewer)


class Config(Section):
    """A whole pipeline: one experiment on one dataset."""

    experiment: str
    seed: int = 42
    device: str = "auto"
    dataset: DatasetConfig
    split: SplitConfig = SplitConfig()
    models: ModelsConfig = ModelsConfig()
    bm25: BM25Config = BM25Config()
    dense: DenseConfig = DenseConfig()
    tune: TuneConfig = TuneConfig()
    generate: GenerateConfig = GenerateConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    filter: FilterConfig = FilterConfig()
    train: TrainConfig = TrainConfig()
    export: ExportConfig = ExportConfig()
    report: ReportConfig = ReportConfig()

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
        """The named sections (or dotted keys such as ``dataset.name``) as plain data."""
        out: dict[str, Any] = {}
        for name in names:
            value: Any = self
            for part in name.split("."):
                value = getattr(value, part)
            out[name] = value.model_dump(mode="json") if isinstance(value, BaseModel) else value
        return out

    def section_hash(self, *names: str) -> str:
        """A stable hash of the named sections: what a stage's output depends on."""
        blob = json.dumps(self.sections(*names), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]
