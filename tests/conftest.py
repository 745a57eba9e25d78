"""Shared fixtures: the repo root as working directory, tiny configs, a scifact slice."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

from sptar.config import load_config
from sptar.run.runner import paths_for

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def _at_repo_root(monkeypatch):
    monkeypatch.chdir(ROOT)


@pytest.fixture
def tiny_cfg():
    def make(*overrides: str):
        return load_config("tiny", list(overrides))
    return make


@pytest.fixture
def tiny_paths(tmp_path, tiny_cfg):
    """Paths of the tiny pipeline under a temporary data root."""
    return paths_for(tiny_cfg(), tmp_path / "data")


def shared_mirror() -> Path | None:
    candidates = [os.environ.get("SPTAR_DATA_MIRROR"), str(ROOT.parent / "shared" / "datasets")]
    for candidate in candidates:
        if candidate and (Path(candidate) / "scifact" / "corpus.jsonl").is_file():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def scifact_slice(tmp_path_factory) -> Path:
    """A real slice of SciFact: 60 test + 80 train queries, their documents, 400 others.

    Returned as a mirror folder holding ``scifact-slice/``.
    """
    mirror = shared_mirror()
    if mirror is None:
        pytest.skip("SciFact mirror not found (set SPTAR_DATA_MIRROR to ../shared/datasets)")
    source = mirror / "scifact"
    rng = random.Random(0)
    qrels = {}
    for split in ("train", "test"):
        rows = (source / "qrels" / f"{split}.tsv").read_text().splitlines()[1:]
        for row in rows:
            qid, did, score = row.strip().split("\t")
            qrels.setdefault(split, {}).setdefault(qid, {})[did] = score
    keep_queries = {split: dict(rng.sample(sorted(qrels[split].items()), n))
                    for split, n in (("train", 80), ("test", 60))}
    judged = {did for split in keep_queries.values() for docs in split.values() for did in docs}
    corpus_lines = (source / "corpus.jsonl").read_text(encoding="utf-8").splitlines()
    others = [line for line in corpus_lines if json.loads(line)["_id"] not in judged]
    chosen = set(rng.sample(range(len(others)), 400))
    target = tmp_path_factory.mktemp("mirror") / "scifact-slice"
    (target / "qrels").mkdir(parents=True)
    with (target / "corpus.jsonl").open("w", encoding="utf-8") as out:
        for line in corpus_lines:
            if json.loads(line)["_id"] in judged:
                out.write(line + "\n")
        for index in sorted(chosen):
            out.write(others[index] + "\n")
    wanted = {qid for split in keep_queries.values() for qid in split}
    with (target / "queries.jsonl").open("w", encoding="utf-8") as out:
        for line in (source / "queries.jsonl").read_text(encoding="utf-8").splitlines():
            if json.loads(line)["_id"] in wanted:
                out.write(line + "\n")
    for split, queries in keep_queries.items():
        with (target / "qrels" / f"{split}.tsv").open("w") as out:
            out.write("query-id\tcorpus-id\tscore\n")
            for qid, docs in queries.items():
                for did, score in docs.items():
                    out.write(f"{qid}\t{did}\t{score}\n")
    return target.parent


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory) -> Path:
    """A randomly initialised 2-layer BERT (hidden size 32) with the MiniLM tokenizer, saved as
    a sentence-transformers folder (mean pooling)."""
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import AutoTokenizer, BertConfig, BertModel

    from sptar.models import resolve_model

    folder = tmp_path_factory.mktemp("tiny-encoder")
    tokenizer = AutoTokenizer.from_pretrained(resolve_model("all-minilm-l6-v2"))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)
    BertModel(config).save_pretrained(folder / "hf")
    tokenizer.save_pretrained(folder / "hf")
    SentenceTransformer(str(folder / "hf"), device="cpu").save(str(folder / "st"))
    return folder / "st"


def write_weak_set(paths, variant: str, pairs: dict[str, tuple[str, str]]) -> None:
    """A hand-made filtered weak set as the filter stage writes it: ``{query id: (text, doc id)}``."""
    from sptar.io.formats import write_json
    from sptar.outputs.weakset import write_weak_set

    folder = paths.stage("filter", variant)
    write_weak_set(folder, {qid: text for qid, (text, _) in pairs.items()},
                   {qid: {"doc_id": did, "variant": variant} for qid, (_, did) in pairs.items()},
                   {qid: did for qid, (_, did) in pairs.items()}, [])
    write_json(folder / "manifest.json", {"stage": "filter", "options": {"variant": variant},
                                          "summary": {"kept": len(pairs)}, "wall_time_s": 0.1})
