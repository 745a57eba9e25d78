"""A STAND-IN weak set (no LLM involved) for filter benchmarks and trial runs of ``sptar filter``.

It mixes the dataset's real train queries (claims written by people, with their first judged
document; at most half of the set) with the kinds of query a small LLM writes badly: verbatim title copies, verbatim
first-sentence copies, near-duplicates of another query for the same document, and 2-word
fragments. Mean log-probabilities are drawn per kind from a seeded normal distribution (copies
high, as language models score copied text; they are NOT model scores). No document judged in
the evaluation split is used.

    python benchmarks/standin_weak.py --config scifact-quick   # writes generate/{sptar,inpars}/

writes ``data/runs/<experiment>/generate/<variant>/`` in the generate stage's format, with a
manifest marked ``"stand_in": true`` (a real ``sptar generate`` run replaces it).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# kind -> (share of what the claims leave, mean and sd of the fake mean log-probability)
KINDS = {"claim": (None, -2.2, 0.4), "title": (0.4, -0.9, 0.3), "sentence": (0.2, -1.1, 0.3),
         "near_duplicate": (0.25, -2.2, 0.4), "fragment": (0.15, -1.6, 0.4)}


def _first_sentence(text: str, max_words: int = 40) -> str:
    sentence = re.split(r"(?<=[.!?])\s+", text.strip(), maxsplit=1)[0]
    return " ".join(sentence.split()[:max_words])


def _near_duplicate(text: str, rng: random.Random) -> str:
    words = text.rstrip(".").split()
    if len(words) > 4:
        del words[rng.randrange(1, len(words))]
    return " ".join(words).lower()


def standin_rows(dataset, n: int = 2000, seed: int = 0, source_split: str = "train",
                 eval_split: str = "test") -> list[dict]:
    """Up to ``n`` rows ``{"query_id", "doc_id", "text", "logprob", "kind"}``, in corpus order."""
    rng = random.Random(seed)
    held_out = {d for docs in dataset.qrels.get(eval_split, {}).values() for d in docs}
    claims = [(dataset.queries[q], min(docs)) for q, docs in sorted(dataset.qrels[source_split].items())
              if min(docs) not in held_out]
    claims = rng.sample(claims, min(len(claims), n // 2))
    rest = n - len(claims)
    count = {kind: int(rest * share) for kind, (share, _, _) in KINDS.items() if share}
    count["fragment"] = rest - count["title"] - count["sentence"] - count["near_duplicate"]
    pool = [d for d in dataset.corpus if d not in held_out and dataset.corpus[d]["title"].strip()]
    picked: list[tuple[str, str, str]] = [("claim", text, doc) for text, doc in claims]
    needed = count["title"] + count["sentence"] + count["fragment"]
    if needed > len(pool):  # a small pool (most documents judged in the evaluation split)
        for kind in ("title", "sentence", "fragment"):
            count[kind] = count[kind] * len(pool) // needed
    docs = rng.sample(pool, count["title"] + count["sentence"] + count["fragment"])
    for kind, text_of in (("title", lambda d: dataset.corpus[d]["title"]),
                          ("sentence", lambda d: _first_sentence(dataset.corpus[d]["text"])),
                          ("fragment", lambda d: " ".join(dataset.corpus[d]["title"].split()[:2]))):
        picked += [(kind, text_of(d), d) for d in docs[:count[kind]]]
        docs = docs[count[kind]:]
    for text, doc in rng.choices(claims, k=count["near_duplicate"]):
        picked.append(("near_duplicate", _near_duplicate(text, rng), doc))
    order = {d: i for i, d in enumerate(dataset.corpus)}
    picked.sort(key=lambda item: order[item[2]])
    rows, per_doc = [], {}
    for kind, text, doc in picked:
        k = per_doc[doc] = per_doc.get(doc, -1) + 1
        _, mean, sd = KINDS[kind]
        rows.append({"query_id": f"gen-{doc}-{k}", "doc_id": doc, "text": text,
                     "logprob": round(rng.gauss(mean, sd), 4), "kind": kind})
    return rows


def write_generated(folder: Path, rows: list[dict], variant: str) -> None:
    """Write rows as ``sptar generate`` does (queries.jsonl, qrels/train.tsv, manifest.json)."""
    from sptar.io.formats import write_json, write_qrels, write_queries

    write_queries(folder / "queries.jsonl", {r["query_id"]: r["text"] for r in rows},
                  {r["query_id"]: {"doc_id": r["doc_id"], "logprob": r["logprob"], "variant": variant}
                   for r in rows})
    write_qrels(folder / "qrels" / "train.tsv", {r["query_id"]: {r["doc_id"]: 1} for r in rows})
    kinds = {kind: sum(r["kind"] == kind for r in rows) for kind in KINDS}
    write_json(folder / "manifest.json", {"stage": "generate", "stand_in": True,
                                          "summary": {"queries": len(rows), "kinds": kinds}})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="scifact-quick")
    parser.add_argument("--n", type=int, default=2000)
    args = parser.parse_args()
    from sptar.config import load_config
    from sptar.outputs.dataset import load_beir
    from sptar.run.runner import execute, paths_for

    cfg = load_config(args.config)
    paths = paths_for(cfg)
    execute("data", cfg, paths)
    dataset = load_beir(paths.beir)
    for seed, variant in enumerate(("sptar", "inpars")):
        rows = standin_rows(dataset, args.n, seed=seed, eval_split=cfg.evaluate.test_split)
        folder = paths.stage("generate", variant)
        write_generated(folder, rows, variant)
        print(json.dumps({"variant": variant, "folder": str(folder), "queries": len(rows)}))


if __name__ == "__main__":
    main()
