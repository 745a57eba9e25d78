"""Train stage: training data (never the test split), hard negatives, determinism, model reload,
and the chain train (three variants) -> evaluate (five systems) -> report on a tiny encoder."""

from __future__ import annotations

import numpy as np
import pytest

import sptar.io.formats
from sptar.config import TrainConfig, load_config
from sptar.errors import SptarError
from sptar.io.formats import read_corpus, read_json, read_jsonl, read_qrels, read_queries, read_run
from sptar.outputs.fewshot import load_split
from sptar.retrieval.bm25 import BM25Searcher
from sptar.retrieval.trainer import precision_flags
from sptar.retrieval.trainset import (
    Example,
    build_training_data,
    carve_dev,
    labeled_examples,
    mine_hard_negatives,
)
from sptar.run.runner import execute, paths_for
from tests.conftest import FIXTURES, write_weak_set

SYSTEMS = ["bm25", "zero-shot", "wo-aug", "inpars", "sptar"]
TEST_QRELS = FIXTURES / "beir" / "tiny" / "qrels" / "test.tsv"


def _config(encoder, *overrides):
    return load_config("tiny", [f"models.encoder={encoder}", f"report.systems={SYSTEMS}", *overrides])


def _weak_sets(paths) -> dict[str, dict[str, tuple[str, str]]]:
    """Hand-made filtered sets over the unlabeled pool: titles (sptar), first words (inpars)."""
    corpus = read_corpus(paths.beir / "corpus.jsonl")
    unlabeled = load_split(paths).unlabeled
    return {
        "sptar": {f"gen-{d}-0": (corpus[d]["title"].lower(), d) for d in unlabeled},
        "inpars": {f"gen-{d}-0": (" ".join(corpus[d]["text"].split()[:4]), d) for d in unlabeled[:8]},
    }


def _prepare(cfg, paths):
    execute("data", cfg, paths)
    execute("split", cfg, paths)
    for variant, pairs in _weak_sets(paths).items():
        write_weak_set(paths, variant, pairs)


@pytest.fixture(scope="module")
def chain(tiny_encoder, tmp_path_factory):
    """data -> split -> (hand-made filter sets) -> train x3 -> evaluate x5 -> report. (That no
    stage before evaluate opens a validation or test file is tests/test_protocol.py's check.)"""
    cfg = _config(tiny_encoder, "train.hard_negatives=1")
    paths = paths_for(cfg, tmp_path_factory.mktemp("chain") / "data")
    _prepare(cfg, paths)
    for variant in ("wo-aug", "inpars", "sptar"):
        execute("train", cfg, paths, variant=variant)
    for system in SYSTEMS:
        execute("evaluate", cfg, paths, system=system)
    execute("report", cfg, paths)
    return cfg, paths, None


def test_training_rows_are_exactly_labeled_plus_weak_and_hold_no_test_query(chain):
    cfg, paths, _ = chain
    split = load_split(paths)
    labeled = set(split.pairs("labeled"))
    test_qrels = read_qrels(TEST_QRELS)
    test_texts = {read_queries(FIXTURES / "beir" / "tiny" / "queries.jsonl")[q] for q in test_qrels}
    for variant in ("wo-aug", "inpars", "sptar"):
        rows = read_jsonl(paths.stage("train", variant) / "pairs.jsonl")
        pairs = {(r["query_id"], r["doc_id"]) for r in rows}
        weak = ({(q, d) for q, (_, d) in _weak_sets(paths)[variant].items()}
                if variant != "wo-aug" else set())
        assert pairs == labeled | weak
        assert len(rows) == len(labeled) + len(weak)
        assert not {r["query_id"] for r in rows} & set(test_qrels)
        assert not {r["query"] for r in rows} & test_texts
        summary = read_json(paths.stage("train", variant) / "manifest.json")["summary"]
        assert summary["labeled_pairs"] == len(labeled) and summary["weak_pairs"] == len(weak)
        assert summary["steps"] == -(-len(rows) // cfg.train.batch_size)  # one epoch
        assert summary["seconds_per_step"] > 0


def test_hard_negatives_are_never_positives_or_judged(chain):
    cfg, paths, _ = chain
    split = load_split(paths)
    judged = read_qrels(paths.beir / "qrels" / "train.tsv")
    corpus = read_corpus(paths.beir / "corpus.jsonl")
    for variant in ("wo-aug", "sptar"):
        rows = read_jsonl(paths.stage("train", variant) / "pairs.jsonl")
        positives: dict[str, set[str]] = {}
        for row in rows:
            positives.setdefault(row["query_id"], set()).add(row["doc_id"])
        for row in rows:
            assert len(row["negatives"]) == 1 and row["negatives"][0] in corpus
            forbidden = positives[row["query_id"]] | set(judged.get(row["query_id"], {}))
            assert not set(row["negatives"]) & forbidden
    assert split.queries  # the labeled queries were mined too


def test_mined_negatives_skip_every_judged_document():
    cfg = load_config("tiny")
    corpus = read_corpus(FIXTURES / "beir" / "tiny" / "corpus.jsonl")
    searcher = BM25Searcher(corpus, cfg.bm25)
    rows = [Example("q01", "does vitamin d help bones calcium", "d01", "labeled"),
            Example("q01", "does vitamin d help bones calcium", "d02", "labeled"),
            Example("gen-d03-0", "aspirin heart attack", "d03", "weak")]
    judged = {"q01": {"d01", "d02"}, "gen-d03-0": {"d03"}}
    top = searcher.search({"q": "does vitamin d help bones calcium"}, top_k=3)["q"]
    assert {"d01", "d02"} <= set(top)  # BM25 ranks the positives high: they must be skipped
    mine_hard_negatives(rows, corpus, searcher, judged, n=3, depth=5, seed=1)
    for row in rows:
        assert len(row.negatives) == 3 == len(set(row.negatives))
        assert not set(row.negatives) & judged[row.query_id]
    again = [Example(r.query_id, r.query, r.doc_id, r.source) for r in rows]
    mine_hard_negatives(again, corpus, searcher, judged, n=3, depth=5, seed=1)
    assert [r.negatives for r in again] == [r.negatives for r in rows]


def test_trained_model_reloads_and_gives_the_evaluated_scores(chain):
    from sentence_transformers import SentenceTransformer

    cfg, paths, _ = chain
    model = SentenceTransformer(str(paths.stage("train", "sptar") / "model"), device="cpu")
    model.max_seq_length = cfg.dense.max_seq_length
    run = read_run(paths.stage("evaluate", "sptar") / "test" / "run.trec")
    corpus = read_corpus(paths.beir / "corpus.jsonl")
    queries = read_queries(paths.beir / "queries.jsonl")
    qid = sorted(run)[0]
    top = sorted(run[qid], key=run[qid].get, reverse=True)[:5]
    docs = model.encode([sptar.io.formats.doc_text(corpus[d]) for d in top], normalize_embeddings=True)
    query = model.encode([queries[qid]], normalize_embeddings=True)[0]
    np.testing.assert_allclose(docs @ query, [run[qid][d] for d in top], atol=1e-4)
    base = SentenceTransformer(str(cfg.models.encoder), device="cpu")
    assert not np.allclose(base.encode([queries[qid]]), model.encode([queries[qid]]), atol=1e-4)


def test_each_trained_model_gets_its_own_embedding_cache(chain):
    _, paths, _ = chain
    assert len(list((paths.cache / "embeddings").iterdir())) == 4  # zero-shot + three trained


def test_report_has_all_five_systems_with_p_values_and_a_chart(chain):
    _, paths, _ = chain
    folder = paths.stage("report")
    report = read_json(folder / "report.json")
    assert list(report["splits"]["test"]["systems"]) == SYSTEMS
    tests = report["splits"]["test"]["significance"]["tests"]
    assert set(tests) == {"bm25", "zero-shot", "wo-aug", "inpars"}
    for metrics in tests.values():
        for test in metrics.values():
            assert 0 <= test["p_t"] <= 1 and 0 < test["p_randomization"] <= 1
            assert test["n"] == 5
    assert report["weak_pairs"]["sptar"]["filtered"] == {"queries": 12, "pairs": 12}
    assert report["weak_pairs"]["sptar"]["trained"] == 12
    assert report["weak_pairs"]["inpars"]["generated"] is None  # no generate stage here
    assert set(report["training"]) == {"wo-aug", "inpars", "sptar"}
    assert {"train/wo-aug", "train/sptar", "evaluate/inpars"} <= set(report["timings"])
    markdown = (folder / "report.md").read_text()
    for system in SYSTEMS:
        assert f"| {system} |" in markdown
    assert "p randomization" in markdown and "metrics.png" in markdown
    assert (folder / "metrics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_training_is_deterministic_for_a_seed(chain, tmp_path):
    from safetensors.numpy import load_file

    cfg, first, _ = chain

    def train_again(root, *overrides):
        again = _config(cfg.models.encoder, "train.hard_negatives=1", *overrides)
        paths = paths_for(again, root)
        _prepare(again, paths)
        execute("train", again, paths, variant="wo-aug")
        return load_file(str(paths.stage("train", "wo-aug") / "model" / "model.safetensors"))

    reference = load_file(str(first.stage("train", "wo-aug") / "model" / "model.safetensors"))
    same = train_again(tmp_path / "same")
    other = train_again(tmp_path / "other", "train.seed=99")
    assert set(same) == set(reference)
    for name in reference:
        np.testing.assert_array_equal(same[name], reference[name])
    assert any(not np.array_equal(other[name], reference[name]) for name in reference)


def test_model_selection_on_a_labeled_dev_set(tiny_encoder, tmp_path):
    cfg = _config(tiny_encoder, "train.dev_fraction=0.3", "train.epochs=2", "train.dev_candidates=5")
    paths = paths_for(cfg, tmp_path / "data")
    _prepare(cfg, paths)
    summary = execute("train", cfg, paths, variant="sptar")["summary"]
    rows = read_jsonl(paths.stage("train", "sptar") / "pairs.jsonl")
    dev = {r["query_id"] for r in rows if r["source"] == "dev"}
    trained = {r["query_id"] for r in rows if r["source"] != "dev"}
    assert len(dev) == summary["dev_queries"] == 2 and not dev & trained
    assert dev <= set(load_split(paths).queries)  # carved from the labeled queries
    assert summary["best_step"] in (summary["steps"] // 2, summary["steps"])
    assert 0 <= summary["best_dev_ndcg@10"] <= 1
    log = read_jsonl(paths.stage("train", "sptar") / "train_log.jsonl")
    assert sum("eval_dev_cosine_ndcg@10" in row for row in log) == 2
    folder = paths.stage("train", "sptar")
    assert sorted(p.name for p in folder.iterdir()) == ["log.txt", "manifest.json", "model",
                                                        "pairs.jsonl", "train_log.jsonl"]


def test_attention_dropout_applies_while_training_only(tiny_encoder, tmp_path, monkeypatch):
    """train.attention_dropout replaces the encoder's attention dropout during training (hidden
    dropout untouched); the saved config keeps the encoder's own value."""
    import torch
    from sentence_transformers import SentenceTransformerTrainer
    from transformers.models.bert.modeling_bert import BertSelfAttention

    seen: list[tuple[set[float], set[float]]] = []
    original = SentenceTransformerTrainer.train

    def recording(trainer, *args, **kwargs):
        attention = {m.dropout.p for m in trainer.model.modules() if isinstance(m, BertSelfAttention)}
        other = {m.p for m in trainer.model.modules() if isinstance(m, torch.nn.Dropout)} - attention
        seen.append((attention, other))
        return original(trainer, *args, **kwargs)

    monkeypatch.setattr(SentenceTransformerTrainer, "train", recording)
    cfg = _config(tiny_encoder, "train.attention_dropout=0")
    paths = paths_for(cfg, tmp_path / "data")
    _prepare(cfg, paths)
    execute("train", cfg, paths, variant="wo-aug")
    assert seen == [({0.0}, {0.1})]
    saved = read_json(paths.stage("train", "wo-aug") / "model" / "config.json")
    assert saved["attention_probs_dropout_prob"] == 0.1

    monkeypatch.setattr("sptar.retrieval.trainer.ATTENTION_DROPOUT_KEYS", ("no_such_setting",))
    with pytest.raises(SptarError, match="has none of no_such_setting"):
        execute("train", _config(tiny_encoder, "train.attention_dropout=0", "train.seed=7"), paths,
                variant="wo-aug")


def test_carve_dev_and_bad_settings():
    rows = [Example(f"q{i}", f"query {i}", f"d{i}", "labeled") for i in range(10)]
    train, dev = carve_dev(rows, 0.2, seed=3)
    assert len(dev) == 2 and len(train) == 8 and {r.source for r in dev} == {"dev"}
    assert carve_dev(rows, 0.2, seed=3)[1] == dev
    with pytest.raises(SptarError, match="dev_fraction"):
        carve_dev(rows[:2], 0.1, seed=3)
    with pytest.raises(SptarError, match="fp16 needs a CUDA"):
        precision_flags(TrainConfig(precision="fp16"), "cpu")
    assert precision_flags(TrainConfig(precision="fp32"), "cpu") == {"bf16": False, "fp16": False}
    native = precision_flags(TrainConfig(), "cpu")["bf16"]  # auto: bf16 on CPUs with bf16 units
    from sptar.models import cpu_has_native_bf16
    assert native == cpu_has_native_bf16()


def test_weak_ids_that_clash_with_labeled_ids_are_refused(tiny_cfg, tiny_paths):
    cfg = tiny_cfg()
    _prepare(cfg, tiny_paths)
    labeled_id = next(iter(load_split(tiny_paths).queries))
    write_weak_set(tiny_paths, "sptar", {labeled_id: ("some weak query", "d20")})
    corpus = read_corpus(tiny_paths.beir / "corpus.jsonl")
    with pytest.raises(SptarError, match="also a labeled query id"):
        build_training_data(cfg, tiny_paths, "sptar", corpus)


def test_train_needs_the_filter_of_its_variant(tiny_cfg, tiny_paths):
    cfg = tiny_cfg()
    execute("data", cfg, tiny_paths)
    execute("split", cfg, tiny_paths)
    with pytest.raises(SptarError, match="filter/inpars"):
        execute("train", cfg, tiny_paths, variant="inpars")


def test_labeled_pairs_capped_per_query_keep_the_most_relevant():
    queries = {"q1": "one", "q2": "two"}
    qrels = [{"q1": {"d1": 1, "d2": 2, "d3": 1, "d4": 1}}, {"q2": {"d9": 1}}]
    every = labeled_examples(queries, qrels, None, seed=0)
    assert [(r.query_id, r.doc_id) for r in every] == [("q1", "d1"), ("q1", "d2"), ("q1", "d3"),
                                                      ("q1", "d4"), ("q2", "d9")]
    capped = labeled_examples(queries, qrels, 2, seed=0)
    assert [r.doc_id for r in capped][0] == "d2" and len(capped) == 3
    assert capped[1].doc_id in {"d1", "d3", "d4"} and capped[2].doc_id == "d9"
    assert [r.doc_id for r in labeled_examples(queries, qrels, 2, seed=0)] == [r.doc_id for r in capped]


def test_warmup_never_takes_every_step():
    from sptar.retrieval.trainer import warmup_steps

    assert warmup_steps(0.1, 1) == 0  # ceil(0.1) = 1 would run the only step at learning rate 0
    assert warmup_steps(0.1, 6) == 1 and warmup_steps(0.1, 30) == 3 and warmup_steps(0.0, 5) == 0
    assert warmup_steps(0.9, 2) == 1
    with pytest.raises(SptarError, match="0 optimizer steps"):
        warmup_steps(0.1, 0)


def test_equal_steps_for_every_system_and_a_one_step_run_trains(tiny_encoder, tmp_path):
    """train.steps gives wo-aug (7 labeled pairs) and sptar (+12 weak) the same optimizer steps;
    one step with warmup still changes the encoder (it ran at learning rate 0 before)."""
    from sentence_transformers import SentenceTransformer

    cfg = _config(tiny_encoder, "train.steps=5", "train.warmup_ratio=0.1")
    paths = paths_for(cfg, tmp_path / "data")
    _prepare(cfg, paths)
    summaries = {v: execute("train", cfg, paths, variant=v)["summary"] for v in ("wo-aug", "sptar")}
    assert summaries["wo-aug"]["steps"] == summaries["sptar"]["steps"] == 5
    assert summaries["wo-aug"]["labeled_pairs"] == 7 and summaries["sptar"]["weak_pairs"] == 12
    assert summaries["wo-aug"]["epochs"] == 2.5  # 7 pairs = 2 batches of 4: 5 steps, 2.5 epochs
    assert summaries["wo-aug"]["warmup_steps"] == 1
    one = _config(tiny_encoder, "train.steps=1", "train.warmup_ratio=0.1", "experiment=one")
    one_paths = paths_for(one, tmp_path / "data")
    execute("split", one, one_paths)
    summary = execute("train", one, one_paths, variant="wo-aug")["summary"]
    assert summary["steps"] == 1 and summary["warmup_steps"] == 0
    log = read_jsonl(one_paths.stage("train", "wo-aug") / "train_log.jsonl")
    assert log and all(row["step"] == 1 for row in log)
    texts = ["does vitamin d help bones", "salt raises blood pressure"]
    base = SentenceTransformer(str(tiny_encoder), device="cpu").encode(texts)
    trained = SentenceTransformer(str(one_paths.stage("train", "wo-aug") / "model"), device="cpu").encode(texts)
    assert not np.allclose(base, trained, atol=1e-6)


def test_two_stage_training_and_upsampled_labeled_pairs(tiny_encoder, tmp_path):
    """train.weak_steps: the weak pairs alone first, then the labeled pairs alone;
    train.labeled_repeat: each labeled pair that many times."""
    cfg = _config(tiny_encoder, "train.steps=3", "train.weak_steps=2", "train.labeled_repeat=2")
    paths = paths_for(cfg, tmp_path / "data")
    _prepare(cfg, paths)
    summary = execute("train", cfg, paths, variant="sptar")["summary"]
    assert (summary["steps"], summary["weak_steps"], summary["labeled_repeat"]) == (5, 2, 2)
    log = read_jsonl(paths.stage("train", "sptar") / "train_log.jsonl")
    phases = [(row["phase"], row["step"]) for row in log if "loss" in row]
    assert phases == [("weak", 1), ("weak", 2), ("labeled", 1), ("labeled", 2), ("labeled", 3)]
    one_stage = _config(tiny_encoder, "train.epochs=1", "train.labeled_repeat=3", "experiment=rep")
    rep_paths = paths_for(one_stage, tmp_path / "data")
    execute("split", one_stage, rep_paths)
    summary = execute("train", one_stage, rep_paths, variant="wo-aug")["summary"]
    assert summary["steps"] == -(-3 * 7 // 4)  # 7 labeled pairs, 3 times, in batches of 4


def test_max_weak_pairs_takes_nested_seeded_subsets():
    from sptar.retrieval.trainset import nested_subset

    ids = [f"gen-d{i}-0" for i in range(50)]
    small, large = nested_subset(ids, 10, seed=1), nested_subset(ids, 30, seed=1)
    assert len(small) == 10 and len(large) == 30 and set(small) < set(large)
    assert small == [q for q in ids if q in set(small)]  # in the weak set's own order
    assert nested_subset(ids, 10, seed=2) != small  # the seed draws another subset
    assert nested_subset(ids, None, seed=1) == ids == nested_subset(ids, 80, seed=1)
