"""The weak data filter: BM25 consistency at the k boundary, dedup, order, errors, statistics."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from sptar.cli import main
from sptar.config import BM25Config, load_config
from sptar.errors import SptarError
from sptar.io.formats import read_jsonl, read_qrels, read_queries, write_json
from sptar.outputs.fewshot import load_split
from sptar.outputs.weakset import WeakSet
from sptar.retrieval.bm25 import BM25Searcher
from sptar.retrieval.weak_filters import (
    Context,
    NearDuplicateIndex,
    apply_steps,
    longest_shared_run,
)
from sptar.run.runner import execute, paths_for
from sptar.stages.filter import rank_histogram

# A corpus where BM25's ranking for the query "alpha" is known by construction: ten-word
# documents a1..a5 hold "alpha" 5, 4, 3, 2, 1 times (more occurrences in a document of the same
# length score higher), b1..b5 hold none. a5 and a5twin are the same bag of words (a tie).
FILLER = [f"w{i}x{j}" for i in range(12) for j in range(10)]


def _alpha_corpus() -> dict[str, dict[str, str]]:
    corpus = {}
    for n, doc_id in enumerate(["a1", "a2", "a3", "a4", "a5", "a5twin"]):
        count = max(5 - n, 1)
        corpus[doc_id] = {"title": "", "text": " ".join(["alpha"] * count + FILLER[n * 10:n * 10 + 10 - count])}
    for n in range(5):
        corpus[f"b{n + 1}"] = {"title": "", "text": " ".join(FILLER[60 + n * 10:70 + n * 10])}
    return corpus


def _mirror(tmp_path, corpus, name="toy"):
    folder = tmp_path / "mirror" / name
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": d, **doc}) + "\n" for d, doc in corpus.items()))
    first, *rest = corpus
    labeled = {f"l{n}": text for n, text in enumerate(["fake meat", "beta gamma", "delta", "epsilon",
                                                      "zeta", "eta", "theta", "iota"])}
    (folder / "queries.jsonl").write_text("".join(
        json.dumps({"_id": qid, "text": text}) + "\n"
        for qid, text in {"t1": "alpha", **labeled}.items()))
    (folder / "qrels" / "test.tsv").write_text(f"query-id\tcorpus-id\tscore\nt1\t{first}\t1\n")
    (folder / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"{qid}\t{rest[-1]}\t1\n" for qid in labeled))  # every labeled query judges the last document
    return folder.parent


def _write_generated(paths, variant, rows):
    """rows: (query id, doc id, text, logprob) -> generate/<variant>/ as the generate stage writes it."""
    folder = paths.stage("generate", variant)
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    with (folder / "queries.jsonl").open("w") as out:
        for qid, did, text, logprob in rows:
            meta = {"doc_id": did, "logprob": logprob, "variant": variant}
            out.write(json.dumps({"_id": qid, "text": text, "metadata": meta}) + "\n")
    with (folder / "qrels" / "train.tsv").open("w") as out:
        out.write("query-id\tcorpus-id\tscore\n")
        out.writelines(f"{qid}\t{did}\t1\n" for qid, did, _, _ in rows)
    write_json(folder / "manifest.json", {"stage": "generate", "rows": len(rows)})


@pytest.fixture
def toy(tmp_path, monkeypatch):
    """(make_cfg, paths): a pipeline on the alpha corpus with the data stage done."""
    monkeypatch.setenv("SPTAR_DATA_MIRROR", str(_mirror(tmp_path, _alpha_corpus())))

    def make_cfg(*overrides):
        return load_config("tiny", ["dataset.name=toy", "dataset.mirror=null", *overrides])

    cfg = make_cfg()
    paths = paths_for(cfg, tmp_path / "data")
    execute("data", cfg, paths)
    execute("split", cfg, paths)  # 4 + 3 labeled of the 8 train queries
    return make_cfg, paths


# ---------------------------------------------------------------- BM25 ranks


@pytest.mark.parametrize("backend", ["bm25s", "rank-bm25"])
def test_ranks_are_known_on_the_alpha_corpus(backend):
    searcher = BM25Searcher(_alpha_corpus(), BM25Config(backend=backend))
    docs = ["a1", "a2", "a3", "a4", "a5", "a5twin", "b1"]
    ranks = searcher.ranks(["alpha"] * len(docs), docs)
    # tied documents share the best rank of their group; a document without the term is 0
    assert ranks.tolist() == [1, 2, 3, 4, 5, 5, 0]
    assert searcher.ranks(["the of", "w0x9 alpha"], ["a1", "a1"]).tolist() == [0, 1]


def test_rank_k_is_kept_and_rank_k_plus_1_dropped(toy):
    make_cfg, paths = toy
    _write_generated(paths, "sptar", [("gen-a3-0", "a3", "alpha", -1.0),
                                      ("gen-a4-0", "a4", "alpha", -1.0),
                                      ("gen-a1-0", "a1", "alpha w0x4", -1.0),
                                      ("gen-b1-0", "b1", "alpha", -1.0)])
    cfg = make_cfg("filter.steps=[{bm25_consistency: {k: 3}}]")
    execute("filter", cfg, paths, variant="sptar")
    out = paths.stage("filter", "sptar")
    kept, meta = read_queries(out / "queries.jsonl", with_metadata=True)
    assert list(kept) == ["gen-a3-0", "gen-a1-0"]
    assert meta["gen-a3-0"] == {"doc_id": "a3", "logprob": -1.0, "variant": "sptar", "bm25_rank": 3}
    assert meta["gen-a1-0"]["bm25_rank"] == 1
    assert read_qrels(out / "qrels" / "train.tsv") == {"gen-a3-0": {"a3": 1}, "gen-a1-0": {"a1": 1}}
    dropped = {row["query_id"]: row for row in read_jsonl(out / "dropped.jsonl")}
    assert dropped["gen-a4-0"]["reason"] == "bm25_consistency: source document ranked 4 > k=3"
    assert dropped["gen-a4-0"]["doc_id"] == "a4" and dropped["gen-a4-0"]["text"] == "alpha"
    assert "shares no term" in dropped["gen-b1-0"]["reason"]
    # k=4 keeps the rank-4 pair too
    execute("filter", make_cfg("filter.steps=[{bm25_consistency: {k: 4}}]"), paths, variant="sptar")
    assert len(read_queries(out / "queries.jsonl")) == 3


def test_stats_numbers(toy):
    make_cfg, paths = toy
    rows = [(f"gen-{d}-0", d, "alpha", -float(i)) for i, d in enumerate(["a1", "a2", "a3", "a4", "a5"])]
    rows += [("gen-b2-0", "b2", "alpha w7x0 w7x1 w7x2 w7x3 w7x4 w7x5 w7x6", -9.0)]  # b2 ranks 1
    rows += [("gen-b3-0", "b3", "alpha", -9.5)]  # not found
    _write_generated(paths, "inpars", rows)
    cfg = make_cfg("filter.steps=[{bm25_consistency: {k: 3}}, {length: {min_words: 1, max_words: 5}}]")
    manifest = execute("filter", cfg, paths, variant="inpars")
    stats = json.loads((paths.stage("filter", "inpars") / "stats.json").read_text())
    assert stats["input"] == 7 and stats["kept"] == 3 and stats["kept_share"] == round(3 / 7, 4)
    assert [(s["filter"], s["in"], s["kept"]) for s in stats["steps"]] == [
        ("bm25_consistency", 7, 4), ("length", 4, 3)]
    assert stats["steps"][1]["share_of_step"] == 0.75
    assert stats["steps"][1]["share_of_input"] == round(3 / 7, 4)
    assert stats["dropped_by_filter"] == {"bm25_consistency": 3, "length": 1}
    assert stats["bm25"]["depth"] == 100
    assert stats["bm25"]["rank_histogram_input"] == {
        "1": 2, "2-3": 2, "4-10": 2, "11-30": 0, "31-70": 0, "71-100": 0, ">100/not found": 1}
    assert stats["bm25"]["rank_histogram_kept"]["1"] == 1
    assert stats["bm25"]["kept_share_at_k"] == {k: round(6 / 7, 4) for k in ("10", "30", "70", "100")}
    assert stats["median_query_words"] == {"input": 1.0, "kept": 1.0}
    assert manifest["summary"]["kept"] == 3


def test_rank_histogram_buckets_and_recorded_depth():
    assert rank_histogram([1, 2, 3, 4, 10, 11, 30, 31, 70, 71, 100, 101, 0]) == {
        "1": 1, "2-3": 2, "4-10": 2, "11-30": 2, "31-70": 2, "71-100": 2, ">100/not found": 2}


# ---------------------------------------------------------------- dedup


def _context(queries, docs, source, logprobs=None):
    metadata = {q: ({"logprob": logprobs[q]} if logprobs else {}) for q in queries}
    weak = WeakSet(dict(queries), metadata, dict(source))
    return Context(weak, {d: {"title": "", "text": t} for d, t in docs.items()},
                   dict.fromkeys(queries, 1), 100)


def _cfg(steps: str):
    return load_config("tiny", [f"filter.steps={steps}"])


def test_dedup_near_duplicates_exact_duplicates_and_copies():
    doc = ("Vitamin D and bone health. Vitamin D supplementation increases calcium absorption in"
           " the gut and supports bone mineral density in older adults living at home.")
    queries = {
        "q1": "does vitamin d help bone density in older adults",
        "q2": "Does vitamin D help bone density, in older adults?",  # exact after normalising
        "q3": "does vitamin d really help bone density in older adults",  # Jaccard 9/10
        "q4": "vitamin d and calcium for elderly bones",  # shares words, but Jaccard < 0.8
        "q5": "Vitamin D and bone health",  # the title: a 5-word verbatim copy of 5 words
        "q6": "how does supplementation increases calcium absorption in the gut and supports bone",
        "q7": "bone mineral density",  # verbatim but short: kept
        "q8": "do older adults living at home need vitamin d",  # 5-word span of 9 words: kept
    }
    ctx = _context(queries, {"d": doc}, dict.fromkeys(queries, "d"))
    outcome = apply_steps(_cfg("[dedup]"), ctx)
    assert outcome.kept == ["q1", "q4", "q7", "q8"]
    reasons = {q: reason for q, (_, reason) in outcome.dropped.items()}
    assert reasons["q2"] == "dedup: exact duplicate of q1 (after normalisation)"
    assert reasons["q3"] == "dedup: near-duplicate of q1 (token-set Jaccard 0.90 >= 0.8)"
    assert reasons["q5"] == "dedup: copies 5 consecutive words of its document verbatim (5 of its 5 words)"
    assert reasons["q6"].startswith("dedup: copies 10 consecutive words")
    # near_jaccard 1.0: only identical token sets; a copy must be 20 words or the whole query
    outcome = apply_steps(_cfg("[{dedup: {near_jaccard: 1.0, copy_words: 20, copy_fraction: 1.0}}]"), ctx)
    assert "q3" in outcome.kept and "q6" in outcome.kept and "q5" not in outcome.kept


def test_a_copy_never_shadows_a_later_query():
    doc = "smoking and lung cancer in heavy smokers over forty"
    queries = {"c": "smoking and lung cancer in heavy smokers",  # copies its document
               "k": "smoking and lung cancer in heavy smokers?"}  # same text, another source
    ctx = _context(queries, {"d": doc, "e": "tobacco statistics"}, {"c": "d", "k": "e"})
    outcome = apply_steps(_cfg("[dedup]"), ctx)
    assert outcome.kept == ["k"]
    assert outcome.dropped["c"][1].startswith("dedup: copies 7 consecutive words")


def test_longest_shared_run():
    assert longest_shared_run(list("abcd"), list("xabcyabcd")) == 4
    assert longest_shared_run(list("aaa"), list("aa")) == 2
    assert longest_shared_run([], ["a"]) == 0


def test_near_duplicate_index_matches_brute_force():
    from collections import Counter

    rng = random.Random(3)
    vocab = [f"t{i}" for i in range(12)]
    sets = [frozenset(rng.sample(vocab, rng.randint(1, 7))) for _ in range(400)]
    for threshold in (0.5, 0.7, 0.8, 1.0):
        index = NearDuplicateIndex(threshold, Counter(t for s in sets for t in s))
        kept: list[frozenset] = []
        for n, tokens in enumerate(sets):
            brute = next((k for k in kept if len(tokens & k) / len(tokens | k) >= threshold), None)
            found = index.find(tokens)
            assert (found is None) == (brute is None), (threshold, n)
            if found is None:
                index.add(tokens, str(n))
                kept.append(tokens)


# ---------------------------------------------------------------- length, logprob, order, errors


def test_length_and_logprob_topn():
    queries = {"a": "one two", "b": "one two three four", "c": "w " * 40, "d": "x y z", "e": "p q r s"}
    logprobs = {"a": -0.1, "b": -0.5, "c": -0.2, "d": -2.0, "e": -0.5}
    ctx = _context(queries, {"doc": "nothing shared"}, dict.fromkeys(queries, "doc"), logprobs)
    outcome = apply_steps(_cfg("[{length: {min_words: 3, max_words: 32}}]"), ctx)
    assert outcome.kept == ["b", "d", "e"]
    assert outcome.dropped["a"][1] == "length: 2 words < min_words=3"
    assert outcome.dropped["c"][1] == "length: 40 words > max_words=32"
    # best 2 by log-probability; b and e tie, the earlier one wins; input order is kept
    assert apply_steps(_cfg("[{logprob_topn: {n: 2}}]"), ctx).kept == ["a", "c"]
    assert apply_steps(_cfg("[{logprob_topn: {n: 3}}]"), ctx).kept == ["a", "b", "c"]
    assert apply_steps(_cfg("[{logprob_topn: {fraction: 0.8}}]"), ctx).kept == ["a", "b", "c", "e"]
    assert apply_steps(_cfg("[{logprob_topn: {n: 99}}]"), ctx).kept == list(queries)


def test_filter_order_is_respected_and_empty_result_names_the_filter():
    queries = {"short": "vitamin d", "long": "does vitamin d help bones"}
    ctx = _context(queries, {"doc": "nothing shared"}, dict.fromkeys(queries, "doc"),
                   {"short": -0.1, "long": -3.0})
    first_length = apply_steps(_cfg("[{length: {min_words: 3}}, {logprob_topn: {n: 1}}]"), ctx)
    assert first_length.kept == ["long"]
    with pytest.raises(SptarError, match="step 2 'length' removed all 1 remaining queries"):
        apply_steps(_cfg("[{logprob_topn: {n: 1}}, {length: {min_words: 3}}]"), ctx)


def test_empty_result_of_the_stage_is_an_error(toy, monkeypatch, capsys):
    make_cfg, paths = toy
    _write_generated(paths, "sptar", [("gen-a4-0", "a4", "alpha", -1.0)])
    cfg = make_cfg("filter.steps=[dedup, {bm25_consistency: {k: 2}}]")
    with pytest.raises(SptarError, match="step 2 'bm25_consistency' removed all 1 remaining"):
        execute("filter", cfg, paths, variant="sptar")
    assert not (paths.stage("filter", "sptar") / "manifest.json").exists()
    # the CLI prints the same one line and exits 2
    monkeypatch.setenv("SPTAR_DATA_DIR", str(paths.root))
    code = main(["filter", "--variant", "sptar", "--config", "tiny", "--set", "dataset.name=toy",
                 "--set", "dataset.mirror=null", "--set", "filter.steps=[{bm25_consistency: {k: 3}}]"])
    assert code == 2
    assert "step 1 'bm25_consistency' removed all 1 remaining" in capsys.readouterr().err


def test_missing_logprob_is_an_error_naming_the_file():
    ctx = _context({"a": "x y z"}, {"doc": "t"}, {"a": "doc"})
    with pytest.raises(SptarError, match=r"queries.jsonl: query 'a' has no numeric metadata 'logprob'"):
        apply_steps(_cfg("[{logprob_topn: {n: 1}}]"), ctx)


def test_unknown_filter_or_parameter_is_a_config_error(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("dataset:\n  name: scifact\nfilter:\n  steps:\n    - dedup: {}\n    - bogus: {k: 3}\n")
    with pytest.raises(SptarError, match=r"exp.yaml:6: key 'filter.steps.1': .*unknown filter 'bogus'"
                                         r" \(known: bm25_consistency, dedup, length, logprob_topn, not_labeled, dense_consistency, query_likelihood\)"):
        load_config(path)
    path.write_text("dataset:\n  name: scifact\nfilter:\n  steps:\n    - length:\n        min_wrds: 3\n")
    with pytest.raises(SptarError, match=r"exp.yaml:6: key 'filter.steps.0.length.min_wrds': unknown key"):
        load_config(path)
    with pytest.raises(SptarError, match=r"--set filter.steps: key 'filter.steps.0.logprob_topn'.*exactly one"):
        load_config("tiny", ["filter.steps=[{logprob_topn: {}}]"])
    with pytest.raises(SptarError, match="min_words .* must not exceed max_words"):
        load_config("tiny", ["filter.steps=[{length: {min_words: 9, max_words: 3}}]"])


def test_steps_round_trip_through_the_resolved_config():
    cfg = _cfg("[{bm25_consistency: {k: 20}}, dedup, {logprob_topn: {fraction: 0.5}}]")
    dumped = cfg.model_dump(mode="json")["filter"]
    assert dumped["steps"][0] == {"bm25_consistency": {"k": 20}}
    assert [s.name for s in type(cfg.filter).model_validate(dumped).steps] == [
        "bm25_consistency", "dedup", "logprob_topn"]


def test_generated_set_must_name_one_source_document(toy):
    make_cfg, paths = toy
    _write_generated(paths, "sptar", [("gen-a1-0", "a1", "alpha", -1.0)])
    folder = paths.stage("generate", "sptar")
    with (folder / "qrels" / "train.tsv").open("a") as out:
        out.write("gen-a1-0\ta2\t1\n")
    with pytest.raises(SptarError, match=r"train.tsv: query 'gen-a1-0' has 2 source documents"):
        execute("filter", make_cfg(), paths, variant="sptar")


def test_ranks_agree_across_backends_on_a_real_slice(scifact_slice):
    from sptar.outputs.dataset import load_beir

    data = load_beir(scifact_slice / "scifact-slice", splits=["train"])
    pairs = [(qid, did) for qid, docs in data.qrels["train"].items() for did in docs][:60]
    texts, docs = [data.queries[q] for q, _ in pairs], [d for _, d in pairs]
    fast = BM25Searcher(data.corpus, BM25Config()).ranks(texts, docs)
    slow = BM25Searcher(data.corpus, BM25Config(backend="rank-bm25")).ranks(texts, docs)
    np.testing.assert_array_equal(fast, slow)
    assert (fast == 1).mean() > 0.5  # real claims mostly find their evidence first


# ---------------------------------------------------------------- copies of labeled queries


def test_not_labeled_drops_copies_of_labeled_queries():
    queries = {"q1": "fake meat", "q2": "Fake meat?", "q3": "fake meat and health risks in adults",
               "q4": "is soy protein safe for children", "q5": "processed meat and colon cancer"}
    ctx = _context(queries, {"d": "a document"}, dict.fromkeys(queries, "d"))
    ctx.labeled = ["Fake meat", "processed meat and colon cancer risk"]
    outcome = apply_steps(_cfg("[not_labeled]"), ctx)
    # q1, q2: the labeled query itself; q5: Jaccard 5/6 = 0.83; q3: 2/7 of its words
    assert outcome.kept == ["q3", "q4"]
    reasons = {q: reason for q, (_, reason) in outcome.dropped.items()}
    assert reasons["q2"] == "not_labeled: near a labeled query 'Fake meat' (token-set Jaccard 1.00 >= 0.8)"
    assert reasons["q5"].endswith("(token-set Jaccard 0.83 >= 0.8)")
    strict = apply_steps(_cfg("[{not_labeled: {near_jaccard: 0.9}}]"), ctx)
    assert strict.kept == ["q3", "q4", "q5"]


def test_dense_consistency_keeps_the_source_within_k():
    queries = {"q1": "a", "q2": "b", "q3": "c"}
    ctx = _context(queries, {"d": "a document"}, dict.fromkeys(queries, "d"))
    ctx.dense_ranks = {"q1": 1, "q2": 4, "q3": 0}  # 0: not within the searched depth
    outcome = apply_steps(_cfg("[{dense_consistency: {k: 3}}]"), ctx)
    assert outcome.kept == ["q1"]
    assert outcome.dropped["q3"][1] == ("dense_consistency: source document ranked beyond the"
                                         " searched depth > k=3")


def test_the_stage_ranks_with_the_base_encoder_and_reads_the_labeled_queries(toy, tiny_encoder):
    """dense_consistency: the base encoder retrieves over the corpus (cached embeddings);
    not_labeled: the split's labeled queries, read from split/."""
    make_cfg, paths = toy
    labeled = set(load_split(paths).queries.values())
    copied = sorted(labeled)[0]
    _write_generated(paths, "sptar", [("gen-a1-0", "a1", copied, -1.0),
                                      ("gen-a2-0", "a2", "alpha alpha", -1.0),
                                      ("gen-b1-0", "b1", "w6x3 w6x4", -1.0)])
    cfg = make_cfg(f"models.encoder={tiny_encoder}",
                   "filter.steps=[not_labeled, {dense_consistency: {k: 11}}]")
    summary = execute("filter", cfg, paths, variant="sptar")["summary"]
    assert [s["kept"] for s in summary["steps"]] == [2, 2]  # 11 documents: every rank is <= 11
    dropped = read_jsonl(paths.stage("filter", "sptar") / "dropped.jsonl")
    assert [(row["query_id"], row["filter"]) for row in dropped] == [("gen-a1-0", "not_labeled")]
    assert list((paths.cache / "embeddings").iterdir())  # the corpus was encoded into the cache
    strict = make_cfg(f"models.encoder={tiny_encoder}", "filter.steps=[{dense_consistency: {k: 1}}]")
    assert execute("filter", strict, paths, variant="sptar")["summary"]["kept"] < 3


def test_query_likelihood_keeps_what_the_document_explains_best():
    queries = {"q1": "a", "q2": "b", "q3": "c", "q4": "d"}
    ctx = _context(queries, {"d": "a document"}, dict.fromkeys(queries, "d"))
    for qid, (with_doc, without) in {"q1": (-1.0, -3.0), "q2": (-0.5, -0.6), "q3": (-2.0, -5.0),
                                     "q4": (-1.0, -1.0)}.items():
        ctx.weak.metadata[qid] |= {"ll_doc": with_doc, "ll_nodoc": without}
    outcome = apply_steps(_cfg("[{query_likelihood: {n: 2}}]"), ctx)
    assert outcome.kept == ["q1", "q3"]  # gains 2.0 and 3.0; q2 0.1, q4 0
    assert outcome.dropped["q2"][1].startswith("query_likelihood: log-probability gain from the"
                                               " document 0.100 not among the best 2 of 4")
    del ctx.weak.metadata["q4"]["ll_nodoc"]
    with pytest.raises(SptarError, match="no numeric metadata 'll_nodoc'.*generate.score_without_doc"):
        apply_steps(_cfg("[{query_likelihood: {fraction: 0.5}}]"), ctx)
