"""The query-likelihood rerankers: scores on the prefix and document caches equal whole prompts
run one by one; the top ``depth`` is reordered and the rest kept; the evaluate stage runs them."""

from __future__ import annotations

import pytest

from sptar.io.formats import read_json, read_run
from sptar.llm.reranking import rerank
from sptar.run.runner import execute
from tests.test_generate import setup, tiny_adapter, tiny_llm  # noqa: F401  (fixtures)

DOCS = ["Photosynthesis turns light, water and carbon dioxide into sugar and oxygen in leaves.",
        "A short one.", "Tides follow the moon: two highs and two lows a day on most coasts."]
QUERIES = ["how do plants make sugar", "moon and tides", "x"]


def _whole_prompt_scores(model, fmt, examples, soft, doc, queries):
    """The plain way: every prompt run whole, no cache."""
    import torch

    from sptar.llm.prompts import IGNORE_INDEX

    out = []
    for query in queries:
        ids, labels = fmt.training_example(doc, query, examples)
        with torch.no_grad():
            embeds = model.get_input_embeddings()(torch.tensor([ids]))
            n_soft = 0
            if soft is not None:
                embeds, n_soft = torch.cat([soft, embeds], dim=1), soft.shape[1]
            mask = torch.ones(1, embeds.shape[1], dtype=torch.long)
            logits = model(inputs_embeds=embeds, attention_mask=mask).logits[0, n_soft:]
        targets = torch.tensor(labels[1:])
        keep = targets != IGNORE_INDEX
        nll = torch.nn.functional.cross_entropy(logits[:-1][keep], targets[keep], reduction="sum")
        out.append(-nll.item() / keep.sum().item())
    return out


@pytest.mark.parametrize("with_prompt", [False, True])
def test_cached_scores_equal_whole_prompts(tiny_llm, tiny_adapter, with_prompt):  # noqa: F811
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sptar.llm.prompts import PromptFormat
    from sptar.llm.reranking import QueryLikelihood
    from sptar.llm.softprompt import soft_prompt_embeddings

    tokenizer = AutoTokenizer.from_pretrained(tiny_llm)
    model = AutoModelForCausalLM.from_pretrained(tiny_llm).eval()
    soft, examples = None, []
    if with_prompt:
        model, soft = soft_prompt_embeddings(model, tiny_adapter)
        examples = [(DOCS[2], "when is high tide")]
    fmt = PromptFormat(tokenizer, style="sptar", max_doc_tokens=12, max_example_doc_tokens=10)
    scorer = QueryLikelihood(model, fmt, examples, soft, tokenizer.pad_token_id, "cpu", batch_size=2)
    for doc in DOCS:
        got = scorer.scores(doc, QUERIES)
        want = _whole_prompt_scores(model, fmt, examples, soft, doc, QUERIES)
        assert got == pytest.approx(want, abs=1e-4)
        assert len(set(round(v, 4) for v in got)) == len(QUERIES)  # the queries are told apart


class _Fixed:
    """A scorer whose likelihoods are given: {doc text: {query: score}}."""

    def __init__(self, table):
        self.table, self.calls = table, []

    def scores(self, doc, queries):
        self.calls.append((doc, list(queries)))
        return [self.table[doc].get(q, -9.0) for q in queries]


def test_rerank_reorders_the_top_depth_and_keeps_the_rest():
    run = {"q1": {"a": 9.0, "b": 8.0, "c": 7.0, "d": 6.0}, "q2": {"b": 3.0, "a": 2.0}}
    docs = {d: d.upper() for d in "abcd"}
    scorer = _Fixed({"A": {"one": -3.0, "two": -1.0}, "B": {"one": -1.0, "two": -1.0},
                     "C": {"one": -0.5}, "D": {"one": -0.1}})
    out, counts = rerank(scorer, run, {"q1": "one", "q2": "two"}, docs, depth=3)
    assert sorted(out["q1"], key=lambda d: -out["q1"][d]) == ["c", "b", "a", "d"]  # d stays below
    assert sorted(out["q2"], key=lambda d: -out["q2"][d]) == ["b", "a"]  # a tie keeps BM25's order
    assert counts["pairs_scored"] == 5 and counts["documents_scored"] == 3
    assert sorted(doc for doc, _ in scorer.calls) == ["A", "B", "C"]  # one call per document


def test_the_evaluate_stage_reranks_bm25(setup):  # noqa: F811
    cfg, paths = setup("a", "rerank.depth=3")
    for system in ("bm25", "ql-rerank-untuned", "ql-rerank"):
        execute("evaluate", cfg, paths, system=system)
    summary = read_json(paths.stage("evaluate", "ql-rerank") / "manifest.json")["summary"]
    assert summary["rerank"]["depth"] == 3 and summary["rerank"]["pairs_scored"] > 0
    for system in ("ql-rerank-untuned", "ql-rerank"):
        base = read_run(paths.stage("evaluate", "bm25") / "test" / "run.trec")
        run = read_run(paths.stage("evaluate", system) / "test" / "run.trec")
        for qid, docs in base.items():
            first = sorted(docs, key=lambda d: -docs[d])
            mine = sorted(run[qid], key=lambda d: -run[qid][d])
            assert set(mine[:3]) == set(first[:3]) and mine[3:] == first[3:]
