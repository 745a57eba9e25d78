"""The pipeline config: typed sections loaded from ``pipelines/<name>.yaml``.

Unknown keys, wrong types and out-of-range values are errors that name the file, the line and
the key. ``--set section.key=value`` overrides any value (the value is parsed as YAML).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path, PurePath
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from sptar.errors import SptarError
from sptar.paths import check_name

PIPELINES_DIR = Path("pipelines")


# Where a model computes in: "auto" is bf16 on CUDA and on CPUs with native bf16 (AVX512-BF16,
# AMX), fp32 elsewhere (sptar.models.effective_precision).
Precision = Literal["auto", "fp32", "bf16"]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=True)


def _relative(value: str | None, what: str) -> str | None:
    if value is not None and PurePath(value).is_absolute():
        raise ValueError(f"{what} must be relative to the project folder, got absolute {value!r}")
    return value


class CorpusSource(Section):
    """A local document collection (``sptar.own``): JSON Lines, CSV, TSV or a folder of files.

    JSON Lines with the default fields is a BEIR ``corpus.jsonl``. CSV / TSV need a header row
    naming the columns. In a folder, every file with one of ``extensions`` (hidden ones skipped)
    is a document whose id is its path relative to the folder; a Markdown file that starts with
    a ``# heading`` line has that heading as its title.
    """

    path: str
    format: Literal["auto", "jsonl", "csv", "tsv", "folder"] = "auto"  # auto: by suffix / folder
    id_field: str = "_id"
    title_field: str = "title"  # optional in every row (CSV/TSV: the column may be absent)
    text_field: str = "text"
    extensions: list[str] = [".txt", ".md"]

    @field_validator("path")
    @classmethod
    def _check_path(cls, value: str) -> str:
        return _relative(value, "dataset.corpus.path")


class DatasetConfig(Section):
    """Which BEIR dataset, and where it comes from; or a local corpus with labeled examples."""

    name: str
    mirror: str | None = None  # a folder holding <name>/; else $SPTAR_DATA_MIRROR; else download
    download: bool = True  # allow downloading the official BEIR zip when no mirror has it
    # a local corpus instead of a BEIR dataset (see sptar.own): the data stage converts it and
    # the labeled examples (TSV/CSV/JSONL of query + doc_id or doc_text) into data/beir/<name>/
    corpus: CorpusSource | None = None
    examples: str | None = None  # labeled pairs: qrels/train.tsv
    test_examples: str | None = None  # optional held-out pairs: qrels/test.tsv

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        return check_name(value, "dataset name")

    @field_validator("mirror", "examples", "test_examples")
    @classmethod
    def _check_paths(cls, value: str | None, info) -> str | None:
        return _relative(value, f"dataset.{info.field_name}")

    @model_validator(mode="after")
    def _local_needs_examples(self) -> DatasetConfig:
        if self.corpus is None and (self.examples or self.test_examples):
            raise ValueError("dataset.examples / test_examples need dataset.corpus (a local corpus)")
        if self.corpus is not None and not self.examples:
            raise ValueError("a local dataset.corpus needs dataset.examples (a few labeled pairs)")
        return self


class SplitConfig(Section):
    """SPTAR's few-shot split of the labeled data and the unlabeled pool."""

    n_prompt_train: int = Field(50, ge=1)
    n_prompt_eval: int = Field(100, ge=1)
    source_split: str = "auto"  # "auto": train if the dataset has one, else dev
    min_relevance: int = Field(1, ge=1)
    max_unlabeled_docs: int | None = Field(None, ge=1)
    # keep at most this many relevant documents per labeled query (sampled by seed); NFCorpus
    # queries have ~40 each, which would make thousands of prompt-training pairs
    max_pairs_per_query: int | None = Field(None, ge=1)
    # "unjudged": documents judged in no qrels split (SPTAR); "not-in-eval": documents not judged
    # in the evaluation split and not in the sampled labeled pairs (for corpora such as NFCorpus
    # where every document is judged in some split)
    pool: Literal["unjudged", "not-in-eval"] = "unjudged"
    # with fewer usable labeled queries than n_prompt_train + n_prompt_eval (a small examples
    # file), split the ones there are: a third (at least one) for prompt-eval, the rest (at most
    # n_prompt_train) for prompt-train; false: that is an error
    shrink_to_fit: bool = False
    # the validation queries every choice is made on, held out like the test split: "auto" (the
    # dataset's dev split when it has one besides the source and test splits, else "rest"),
    # "rest" (the source split's usable queries not sampled as labeled pairs), a qrels split
    # name, or "none"
    validation: str = "auto"
    max_validation_queries: int | None = Field(None, ge=1)  # cap (a seeded sample)

    @field_validator("validation")
    @classmethod
    def _check_validation(cls, value: str) -> str:
        return check_name(value, "split.validation")


class ModelsConfig(Section):
    """Model aliases (see ``sptar.models``), Hugging Face ids or local folders."""

    llm: str = "smollm2-135m"
    encoder: str = "all-minilm-l6-v2"
    trust_remote_code: bool = False  # run Python code shipped with a model: only for models you trust
    download: bool = False  # fetch a Hugging Face id missing from the local cache (else: local only)


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


VALIDATION, TEST = "validation", "test"


class EvaluateConfig(Section):
    """Which labeled queries the systems are scored on."""

    # the dataset's qrels split held out as the test split (MS MARCO: dev); read only by
    # evaluate and report (and by split, to keep its queries and documents out of everything)
    test_split: str = "test"
    # what `sptar evaluate` scores: the split stage's validation queries and/or the test split
    splits: list[Literal["validation", "test"]] = [VALIDATION, TEST]

    @field_validator("test_split")
    @classmethod
    def _check_test_split(cls, value: str) -> str:
        return check_name(value, "evaluate.test_split")

    @field_validator("splits")
    @classmethod
    def _check_splits(cls, value: list[str]) -> list[str]:
        if not value or len(set(value)) != len(value):
            raise ValueError("list validation and/or test, each once")
        return value


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


class BM25ConsistencyFilter(Section):
    """Keep a pair when BM25 over the whole corpus ranks its source document in the top ``k``."""

    k: int = Field(30, ge=1)


class DedupFilter(Section):
    """Drop repeated queries, and queries that copy a long span of their document verbatim.

    Texts are compared as lower-case word tokens. A query is a near-duplicate of an earlier kept
    query (input order) when their token sets have Jaccard similarity >= ``near_jaccard``
    (1.0 means exact duplicates only). A query is a copy when it shares a run of at least
    ``copy_words`` consecutive tokens with its document, or a run of at least
    ``copy_min_words`` tokens covering at least ``copy_fraction`` of the query.
    """

    near_jaccard: float = Field(0.8, gt=0, le=1)
    copy_words: int = Field(8, ge=1)
    copy_fraction: float = Field(0.75, gt=0, le=1)
    copy_min_words: int = Field(4, ge=1)


class LengthFilter(Section):
    """Keep queries of ``min_words`` to ``max_words`` whitespace-separated words."""

    min_words: int = Field(3, ge=1)
    max_words: int = Field(32, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> LengthFilter:
        if self.min_words > self.max_words:
            raise ValueError(f"min_words ({self.min_words}) must not exceed max_words ({self.max_words})")
        return self


class LogprobTopNFilter(Section):
    """Keep the best ``n`` queries (or ``fraction`` of them) by mean token log-probability."""

    n: int | None = Field(None, ge=1)
    fraction: float | None = Field(None, gt=0, le=1)

    @model_validator(mode="after")
    def _one_of(self) -> LogprobTopNFilter:
        if (self.n is None) == (self.fraction is None):
            raise ValueError("give exactly one of n or fraction")
        return self


FILTERS = {"bm25_consistency": BM25ConsistencyFilter, "dedup": DedupFilter,
           "length": LengthFilter, "logprob_topn": LogprobTopNFilter}


class FilterStep(Section):
    """One step of ``filter.steps``: a mapping with exactly one filter name as its key."""

    bm25_consistency: BM25ConsistencyFilter | None = None
    dedup: DedupFilter | None = None
    length: LengthFilter | None = None
    logprob_topn: LogprobTopNFilter | None = None

    @model_validator(mode="before")
    @classmethod
    def _one_filter(cls, value: Any) -> Any:
        if isinstance(value, str):  # `- dedup` means `- dedup: {}`
            value = {value: {}}
        if not isinstance(value, dict) or len(value) != 1:
            raise ValueError(f"a step is one mapping `name: {{parameters}}` with name one of "
                             f"{', '.join(FILTERS)}, got {value!r}")
        (name, params), = value.items()
        if name not in FILTERS:
            raise ValueError(f"unknown filter {name!r} (known: {', '.join(FILTERS)})")
        return {name: {} if params is None else params}

    @model_serializer(mode="wrap")
    def _dump_only_the_filter(self, handler: Any) -> dict[str, Any]:
        return {self.name: handler(self)[self.name]}

    @property
    def name(self) -> str:
        return next(name for name in FILTERS if getattr(self, name) is not None)

    @property
    def params(self) -> Section:
        return getattr(self, self.name)


class FilterConfig(Section):
    """The weak data filter: steps applied in order to each generated set."""

    steps: list[FilterStep] = [FilterStep.model_validate({"bm25_consistency": {"k": 30}})]


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


# ---------------------------------------------------------------- loading


def resolve_config_path(name_or_path: str | Path) -> Path:
    """``scifact-quick`` means ``pipelines/scifact-quick.yaml``; a path is taken as it is."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml") and not path.exists():
        path = PIPELINES_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in PIPELINES_DIR.glob("*.yaml"))) or "none"
        raise SptarError(f"{path}: config file not found (fix: pick one of pipelines/: {known})")
    return path


def load_config(name_or_path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    path = resolve_config_path(name_or_path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise SptarError(f"{path}: not valid UTF-8 ({exc.reason} at byte {exc.start})"
                         " (fix: re-encode the file as UTF-8)") from None
    try:
        raw = yaml.safe_load(text)
        lines = _key_lines(yaml.compose(text))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        detail = " ".join(str(getattr(exc, "problem", None) or getattr(exc, "reason", None)
                              or exc).split())
        raise SptarError(f"{where}: not valid YAML ({detail}) (fix: correct the YAML syntax)") from None
    if not isinstance(raw, dict):
        raise SptarError(f"{path}: expected a mapping of sections at the top level"
                         " (fix: see pipelines/scifact-quick.yaml)")
    raw.setdefault("experiment", path.stem)
    from_override: set[str] = set()
    for item in overrides:
        key = _apply_override(raw, item)
        from_override.add(key)
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise _config_error(path, exc, lines, from_override) from None


def _apply_override(raw: dict[str, Any], item: str) -> str:
    key, sep, value = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise SptarError(f"--set {item!r}: expected section.key=value"
                         " (fix: e.g. --set split.n_prompt_train=20)")
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        parsed = value
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise SptarError(f"--set {item!r}: '{part}' is a value, not a section"
                             " (fix: name a key inside a section)")
        node = child
    node[parts[-1]] = parsed
    return key


def _key_lines(node: yaml.Node | None, prefix: str = "") -> dict[str, int]:
    """Map every dotted key of a YAML document to its 1-based line number."""
    lines: dict[str, int] = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = f"{prefix}{key_node.value}"
            lines[key] = key_node.start_mark.line + 1
            lines.update(_key_lines(value_node, key + "."))
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            key = f"{prefix}{index}"
            lines[key] = item.start_mark.line + 1
            lines.update(_key_lines(item, key + "."))
    return lines


def _config_error(path: Path, exc: ValidationError, lines: dict[str, int],
                  from_override: set[str]) -> SptarError:
    error = exc.errors()[0]
    key = ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden":
        message = "unknown key"
        fix = "remove it or check its spelling against pipelines/scifact-quick.yaml"
    elif error["type"] == "missing":
        message = "missing required key"
        fix = "add it"
    else:
        message = error["msg"]
        if "input" in error and not isinstance(error["input"], dict):
            message += f" (got {error['input']!r})"
        fix = "correct the value"
    overridden = next((k for k in from_override if key == k or key.startswith(k + ".")), None)
    if overridden:
        where = f"--set {overridden}"
    else:
        line = _nearest_line(key, lines)
        where = f"{path}:{line}" if line else str(path)
    return SptarError(f"{where}: key '{key}': {message} (fix: {fix})")


def _nearest_line(key: str, lines: dict[str, int]) -> int | None:
    parts = key.split(".")
    while parts:
        line = lines.get(".".join(parts))
        if line:
            return line
        parts.pop()
    return None
