"""The pipeline config: typed sections loaded from ``pipelines/<name>.yaml``.

Unknown keys, wrong types and out-of-range values are errors that name the file, the line and
the key. ``--set section.key=value`` overrides any value (the value is parsed as YAML).

The sections live in the ``sections_*`` modules, the whole :class:`Config` in ``pipeline``, the
YAML loading in ``loading``, ``sptar config --explain`` in ``explain``; every public name is
importable from ``sptar.config``.
"""

from sptar.config.base import Precision, Section
from sptar.config.loading import PIPELINES_DIR, load_config, resolve_config_path
from sptar.config.pipeline import SYSTEMS, Config, ReportConfig, System
from sptar.config.sections_data import (
    TEST,
    VALIDATION,
    CorpusSource,
    DatasetConfig,
    EvaluateConfig,
    SplitConfig,
)
from sptar.config.sections_filter import (
    FILTERS,
    BM25ConsistencyFilter,
    DedupFilter,
    DenseConsistencyFilter,
    FilterConfig,
    FilterStep,
    LengthFilter,
    LogprobTopNFilter,
    NotLabeledFilter,
    QueryLikelihoodFilter,
)
from sptar.config.sections_llm import (
    ENCODER_KEYS,
    GenerateConfig,
    ModelsConfig,
    RerankConfig,
    TuneConfig,
)
from sptar.config.sections_retrieval import BM25Config, DenseConfig, ExportConfig, TrainConfig

__all__ = [
    "ENCODER_KEYS", "FILTERS", "PIPELINES_DIR", "SYSTEMS", "TEST", "VALIDATION",
    "BM25Config", "BM25ConsistencyFilter", "Config", "CorpusSource", "DatasetConfig",
    "DedupFilter", "DenseConfig", "DenseConsistencyFilter", "EvaluateConfig", "ExportConfig", "FilterConfig", "FilterStep",
    "GenerateConfig", "LengthFilter", "LogprobTopNFilter", "ModelsConfig", "NotLabeledFilter", "Precision", "QueryLikelihoodFilter",
    "RerankConfig", "ReportConfig", "Section", "SplitConfig", "System", "TrainConfig", "TuneConfig",
    "load_config", "resolve_config_path",
]
