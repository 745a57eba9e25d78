"""train.loss margin_mse: the teacher's margins are the ql-rerank scorer's, every training row
gets them, the scores are cached so that a rerun scores nothing, a killed writer's leftovers
and a broken part are handled, and the teacher's settings enter the stage's inputs."""

from __future__ import annotations

import json

import pytest

from sptar.config import load_config
from sptar.errors import SptarError
from sptar.io.formats import doc_text, read_corpus, read_json, read_jsonl
from sptar.llm.teacher import read_cache, teacher_key, teacher_scores
from sptar.outputs.fewshot import load_split
from sptar.run.runner import execute
from sptar.stages import train
from tests.conftest import write_weak_set
from tests.test_generate import setup, tiny_adapter, tiny_llm  # noqa: F401  (fixtures)

DISTILL = ("train.loss=margin_mse", "train.hard_negatives=1", "train.steps=2",
           "train.batch_size=4", "rerank.max_doc_tokens=12")


@pytest.fixture
def distill(setup, tiny_encoder):  # noqa: F811
    """``make(root, *overrides) -> (cfg, paths)``: the setup fixture's stages plus a hand-made
    sptar weak set (document titles), for a margin-MSE train run on the tiny encoder."""

    def make(root: str = "a", *overrides: str):
        cfg, paths = setup(root, f"models.encoder={tiny_encoder}", *DISTILL, *overrides)
        corpus = read_corpus(paths.beir / "corpus.jsonl")
        pool = load_split(paths).unlabeled[:6]
        write_weak_set(paths, "sptar", {f"gen-{d}-0": (corpus[d]["title"].lower(), d) for d in pool})
        return cfg, paths

    return make


def test_margins_are_the_teachers_and_a_rerun_scores_nothing(distill):
    from sptar.llm.reranking import open_scorer

    cfg, paths = distill("a", "train.teacher_scale=2.0")
    execute("train", cfg, paths, variant="sptar")
    folder = paths.stage("train", "sptar")
    summary = read_json(folder / "manifest.json")["summary"]
    teacher = summary["teacher"]
    assert summary["loss"] == "margin_mse" and teacher["teacher"] == "tuned"
    assert teacher["pairs_scored"] == teacher["pairs"] > 0 and teacher["pairs_cached"] == 0
    rows = [row for row in read_jsonl(folder / "pairs.jsonl") if row["source"] != "dev"]
    assert rows and all(len(row["margins"]) == len(row["negatives"]) == 1 for row in rows)

    corpus = read_corpus(paths.beir / "corpus.jsonl")
    row = next(r for r in rows if r["source"] == "weak")
    with open_scorer(cfg, paths, tuned=True) as scorer:  # the ql-rerank scorer, pair by pair
        positive = scorer.scores(doc_text(corpus[row["doc_id"]]), [row["query"]])[0]
        negative = scorer.scores(doc_text(corpus[row["negatives"][0]]), [row["query"]])[0]
    assert row["margins"][0] == pytest.approx(2.0 * (positive - negative), abs=1e-4)

    again = execute("train", cfg, paths, variant="sptar", force=True)["summary"]["teacher"]
    assert again["pairs_scored"] == 0 and again["pairs_cached"] == teacher["pairs"]
    again_rows = [r for r in read_jsonl(folder / "pairs.jsonl") if r["source"] != "dev"]
    assert [r["margins"] for r in again_rows] == [r["margins"] for r in rows]


def test_the_loss_changes_the_model_and_the_untuned_teacher_has_its_own_cache(distill):
    import torch
    from sentence_transformers import SentenceTransformer

    cfg, paths = distill("b")
    hard = load_config("tiny", [f"models.llm={cfg.models.llm}",
                                        f"models.encoder={cfg.models.encoder}",
                                        *(o for o in DISTILL if "loss" not in o)])
    execute("train", cfg, paths, variant="sptar")
    distilled = SentenceTransformer(str(paths.stage("train", "sptar") / "model")).state_dict()
    execute("train", hard, paths, variant="sptar")
    assert "teacher" not in read_json(paths.stage("train", "sptar") / "manifest.json")["summary"]
    plain = SentenceTransformer(str(paths.stage("train", "sptar") / "model")).state_dict()
    assert any(not torch.equal(distilled[k], plain[k]) for k in distilled)

    untuned = load_config("tiny", [f"models.llm={cfg.models.llm}",
                                           f"models.encoder={cfg.models.encoder}", *DISTILL,
                                           "train.teacher=untuned"])
    assert teacher_key(untuned, paths, False) != teacher_key(cfg, paths, True)
    summary = execute("train", untuned, paths, variant="sptar")["summary"]["teacher"]
    assert summary["teacher"] == "untuned" and summary["pairs_scored"] == summary["pairs"]


def test_the_cache_survives_a_killed_writer_and_names_a_broken_part(distill, tmp_path):
    cfg, paths = distill("c")
    corpus = read_corpus(paths.beir / "corpus.jsonl")
    ids = sorted(corpus)[:3]
    documents = {did: doc_text(corpus[did]) for did in ids}
    pairs = {("some query", did) for did in ids}
    scores, counts = teacher_scores(cfg, paths, pairs, documents, tuned=False)
    folder = paths.cache / "teacher" / teacher_key(cfg, paths, False)
    assert counts["pairs_scored"] == 3 and read_cache(folder) == scores
    leftover = folder / ".part-999999999-1-0.jsonl.abc.tmp"  # a killed writer's, never renamed
    leftover.write_text('{"doc": "x", "que')
    more = pairs | {("another query", ids[0])}
    _, counts = teacher_scores(cfg, paths, more, documents, tuned=False)
    assert counts["pairs_scored"] == 1 and not leftover.exists()
    broken = folder / "part-1-1-0.jsonl"
    broken.write_text(json.dumps({"doc": ids[0]}) + "\n")
    with pytest.raises(SptarError, match=r"part-1-1-0\.jsonl:1: not a teacher score line.*delete"):
        teacher_scores(cfg, paths, pairs, documents, tuned=False)


def test_teacher_settings_enter_the_train_stage_only_when_distilling(tiny_cfg):
    plain = tiny_cfg()
    assert train.source_digests(plain, "sptar") == {}
    assert train.source_digests(tiny_cfg("rerank.max_doc_tokens=99"), "sptar") == {}
    distilled = tiny_cfg("train.loss=margin_mse", "train.hard_negatives=1")
    other = tiny_cfg("train.loss=margin_mse", "train.hard_negatives=1", "rerank.max_doc_tokens=99")
    assert train.source_digests(distilled, "sptar") != train.source_digests(other, "sptar")
    names = train.sections("sptar")
    assert plain.section_hash(*names) == tiny_cfg("train.teacher_scale=1.0").section_hash(*names)
    assert plain.section_hash(*names) != distilled.section_hash(*names)
    with pytest.raises(SptarError, match="hard_negatives"):
        tiny_cfg("train.loss=margin_mse", "train.hard_negatives=0")
