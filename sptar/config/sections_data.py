"""Config sections for the data: the dataset (BEIR or a local corpus), the few-shot split and
which labeled queries are scored."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from sptar.config.base import Section, _relative
from sptar.io.paths import check_name


class CorpusSource(Section):
    """A local document collection (``sptar.io.own``): JSON Lines, CSV, TSV or a folder of files.

    JSON Lines with the default fields is a BEIR ``corpus.jsonl``. CSV / TSV need a header row
    naming the columns. In a folder, every file with one of ``extensions`` (hidden ones skipped)
    is a document whose id is its path relative to the folder; a Markdown file that starts with
    a ``# heading`` line has that heading as its title.
    """

    path: str = Field(description="the corpus file or folder, relative to the project folder")
    format: Literal["auto", "jsonl", "csv", "tsv", "folder"] = Field(
        "auto", description="auto: by the file's suffix, or folder for a folder")
    id_field: str = Field("_id", description="the field (CSV/TSV: column) holding a document's id")
    title_field: str = Field("title", description="the field (column) holding a document's title;"
                             " optional in every row (CSV/TSV: the column may be absent)")
    text_field: str = Field("text", description="the field (column) holding a document's text")
    extensions: list[str] = Field([".txt", ".md"], description="in a folder: the suffixes of the"
                                  " files read as documents (hidden files are skipped)")

    @field_validator("path")
    @classmethod
    def _check_path(cls, value: str) -> str:
        return _relative(value, "dataset.corpus.path")


class DatasetConfig(Section):
    """Which BEIR dataset, and where it comes from; or a local corpus with labeled examples."""

    name: str = Field(description="the BEIR dataset (scifact, nfcorpus, fiqa, msmarco, ...), or"
                      " the name a local corpus is stored under: data/beir/<name>/")
    mirror: str | None = Field(None, description="a folder holding <name>/ to copy the dataset"
                               " from; null: $SPTAR_DATA_MIRROR, else download")
    download: bool = Field(True, description="allow downloading the official BEIR zip when no"
                           " mirror has the dataset")
    corpus: CorpusSource | None = Field(None, description="a local corpus instead of a BEIR dataset"
                                        " (sptar.io.own): the data stage converts it and the labeled"
                                        " examples into data/beir/<name>/; null: a BEIR dataset")
    examples: str | None = Field(None, description="a local corpus's labeled pairs (TSV/CSV/JSONL"
                                 " of query + doc_id or doc_text), stored as qrels/train.tsv")
    test_examples: str | None = Field(None, description="optional held-out pairs of a local"
                                      " corpus (same format), stored as qrels/test.tsv")

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

    n_prompt_train: int = Field(50, ge=1, description="labeled queries sampled for prompt"
                                " training (SPTAR: 50)")
    n_prompt_eval: int = Field(100, ge=1, description="labeled queries sampled for prompt"
                               " evaluation: early stopping and the soft prompt filter (SPTAR: 100)")
    source_split: str = Field("auto", description="the qrels split the labeled queries are sampled"
                              " from; auto: train if the dataset has one, else dev")
    min_relevance: int = Field(1, ge=1, description="the lowest qrels score that counts as relevant")
    max_unlabeled_docs: int | None = Field(None, ge=1, description="cap on the unlabeled pool, in"
                                           " documents (a seeded sample); null: the whole pool")
    max_pairs_per_query: int | None = Field(
        None, ge=1, description="keep at most this many relevant documents per labeled query"
        " (sampled by seed); NFCorpus queries have ~40 each, which would make thousands of"
        " prompt-training pairs; null: all")
    pool: Literal["unjudged", "not-in-eval", "corpus"] = Field(
        "unjudged", description="the unlabeled pool. unjudged: documents judged in no qrels split"
        " (SPTAR); not-in-eval: documents judged neither in the test nor the validation split nor"
        " by the sampled labeled pairs (for corpora such as NFCorpus where every document is judged"
        " in some split); corpus: every document but those of the sampled labeled pairs (as GPL,"
        " InPars and Promptagator generate for the whole target corpus, using no labels)")
    shrink_to_fit: bool = Field(
        False, description="with fewer usable labeled queries than n_prompt_train + n_prompt_eval"
        " (a small examples file), split the ones there are: a third (at least one) for"
        " prompt-eval, the rest (at most n_prompt_train) for prompt-train; false: that is an error")
    validation: str = Field(
        "auto", description="the validation queries every choice is made on, held out like the"
        " test split: auto (the dataset's dev split when it has one besides the source and test"
        " splits, else rest), rest (the source split's usable queries not sampled as labeled"
        " pairs), a qrels split name, or none")
    max_validation_queries: int | None = Field(None, ge=1, description="cap on the validation"
                                               " queries (a seeded sample); null: all")

    @field_validator("validation")
    @classmethod
    def _check_validation(cls, value: str) -> str:
        return check_name(value, "split.validation")


VALIDATION, TEST = "validation", "test"


class EvaluateConfig(Section):
    """Which labeled queries the systems are scored on."""

    test_split: str = Field(
        "test", description="the dataset's qrels split held out as the test split (MS MARCO: dev);"
        " read only by evaluate and report (and by split, to keep its queries and documents out"
        " of everything)")
    splits: list[Literal["validation", "test"]] = Field(
        [VALIDATION, TEST], description="what sptar evaluate scores: the split stage's validation"
        " queries and/or the test split")

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
