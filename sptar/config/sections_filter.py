"""Config sections for the weak data filter: the filter steps and their parameters."""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_serializer, model_validator

from sptar.config.base import Section


class BM25ConsistencyFilter(Section):
    """Keep a pair when BM25 over the whole corpus ranks its source document in the top ``k``."""

    k: int = Field(30, ge=1, description="the depth BM25 must rank the source document within"
                   " (SPTAR: 30 on MS MARCO, 70 on FiQA)")


class DedupFilter(Section):
    """Drop repeated queries, and queries that copy a long span of their document verbatim.

    Texts are compared as lower-case word tokens. A query is a near-duplicate of an earlier kept
    query (input order) when their token sets have Jaccard similarity >= ``near_jaccard``
    (1.0 means exact duplicates only). A query is a copy when it shares a run of at least
    ``copy_words`` consecutive tokens with its document, or a run of at least
    ``copy_min_words`` tokens covering at least ``copy_fraction`` of the query.
    """

    near_jaccard: float = Field(0.8, gt=0, le=1, description="drop a query whose word set has at"
                                " least this Jaccard similarity with an earlier kept query's (1.0:"
                                " exact duplicates only)")
    copy_words: int = Field(8, ge=1, description="drop a query that shares a run of this many"
                            " consecutive words with its document")
    copy_fraction: float = Field(0.75, gt=0, le=1, description="drop a query when a shared run of"
                                 " at least copy_min_words words covers this share of it")
    copy_min_words: int = Field(4, ge=1, description="the shortest shared run that copy_fraction"
                                " counts, in words")


class LengthFilter(Section):
    """Keep queries of ``min_words`` to ``max_words`` whitespace-separated words."""

    min_words: int = Field(3, ge=1, description="the fewest words a kept query has")
    max_words: int = Field(32, ge=1, description="the most words a kept query has")

    @model_validator(mode="after")
    def _ordered(self) -> LengthFilter:
        if self.min_words > self.max_words:
            raise ValueError(f"min_words ({self.min_words}) must not exceed max_words ({self.max_words})")
        return self


class LogprobTopNFilter(Section):
    """Keep the best ``n`` queries (or ``fraction`` of them) by mean token log-probability."""

    n: int | None = Field(None, ge=1, description="keep this many queries (give n or fraction)")
    fraction: float | None = Field(None, gt=0, le=1, description="keep this share of the queries"
                                   " (give n or fraction)")

    @model_validator(mode="after")
    def _one_of(self) -> LogprobTopNFilter:
        if (self.n is None) == (self.fraction is None):
            raise ValueError("give exactly one of n or fraction")
        return self


class QueryLikelihoodFilter(Section):
    """Keep the best ``n`` queries (or ``fraction`` of them) by how much their document raises
    their likelihood: the mean log-probability per token after the prompt with the document
    minus with an empty one (a pointwise mutual information; needs
    ``generate.score_without_doc``)."""

    n: int | None = Field(None, ge=1, description="keep this many queries (give n or fraction)")
    fraction: float | None = Field(None, gt=0, le=1, description="keep this share of the queries"
                                   " (give n or fraction)")

    @model_validator(mode="after")
    def _one_of(self) -> QueryLikelihoodFilter:
        if (self.n is None) == (self.fraction is None):
            raise ValueError("give exactly one of n or fraction")
        return self


class NotLabeledFilter(Section):
    """Drop a generated query equal or near to a labeled query (prompt-train or prompt-eval; the
    in-context examples are among them): a copied example teaches nothing about its document."""

    near_jaccard: float = Field(0.8, gt=0, le=1, description="drop a query whose word set has at"
                                " least this Jaccard similarity with a labeled query's")


class DenseConsistencyFilter(Section):
    """Keep a pair when the untouched base encoder (``models.encoder``), searching the whole
    corpus with the query, ranks its source document in the top ``k`` (Promptagator's round-trip
    filter, with the zero-shot retriever)."""

    k: int = Field(10, ge=1, description="the depth the base encoder must rank the source document"
                   " within")


FILTERS = {"bm25_consistency": BM25ConsistencyFilter, "dedup": DedupFilter,
           "length": LengthFilter, "logprob_topn": LogprobTopNFilter,
           "not_labeled": NotLabeledFilter, "dense_consistency": DenseConsistencyFilter,
           "query_likelihood": QueryLikelihoodFilter}


class FilterStep(Section):
    """One step of ``filter.steps``: a mapping with exactly one filter name as its key."""

    bm25_consistency: BM25ConsistencyFilter | None = Field(
        None, description="keep a pair when BM25 over the whole corpus ranks its source document"
        " in the top k")
    dedup: DedupFilter | None = Field(None, description="drop repeated queries, and queries that"
                                      " copy a long span of their document verbatim")
    length: LengthFilter | None = Field(None, description="keep queries of min_words to max_words"
                                        " whitespace-separated words")
    logprob_topn: LogprobTopNFilter | None = Field(
        None, description="keep the best n queries (or fraction of them) by mean token"
        " log-probability")
    not_labeled: NotLabeledFilter | None = Field(
        None, description="drop queries equal or near to a labeled query (copied examples)")
    dense_consistency: DenseConsistencyFilter | None = Field(
        None, description="keep a pair when the base encoder ranks its source document in the"
        " top k")
    query_likelihood: QueryLikelihoodFilter | None = Field(
        None, description="keep the best n queries (or fraction) by log P(q | d) - log P(q) under"
        " the generation prompt")

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

    steps: list[FilterStep] = Field(
        [FilterStep.model_validate({"bm25_consistency": {"k": 30}})],
        description="the filters, applied in order to each generated set: a list of"
        " `name: {parameters}` (or `- name` for the defaults) with name one of "
        + ", ".join(FILTERS))
