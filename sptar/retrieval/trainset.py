"""The training set of a variant, built once for the train and the export stages: the labeled
pairs, the filtered weak pairs, the documents judged relevant to each query (never negatives),
BM25-mined hard negatives (``train.hard_negatives``), and the check that weak and labeled query
ids never clash."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from sptar.config import Config
from sptar.errors import SptarError
from sptar.io.formats import Corpus, Qrels
from sptar.io.paths import Paths
from sptar.outputs.fewshot import FewShotSplit, labeled_files, load_split
from sptar.outputs.weakset import WeakSet, read_weak_set, weak_set_files

LABELED, WEAK, DEV = "labeled", "weak", "dev"


@dataclass
class Example:
    """One training row: a query, one relevant document and (optionally) hard negatives."""

    query_id: str
    query: str
    doc_id: str
    source: str  # "labeled", "weak" or "dev"
    negatives: list[str] = field(default_factory=list)
    margins: list[float] | None = None  # train.loss margin_mse: the teacher's, one per negative


@dataclass
class TrainingData:
    """Everything the trainer sees, and what it must never see as a negative."""

    train: list[Example]
    dev: list[Example]
    judged: dict[str, set[str]]  # query id -> documents judged relevant (never negatives)
    files: list[str]  # every file read to build it
    split: FewShotSplit
    weak: WeakSet | None  # the variant's filtered weak set (None: wo-aug)

    def count(self, source: str) -> int:
        return sum(1 for row in self.train + self.dev if row.source == source)


# ---------------------------------------------------------------- training data


def labeled_examples(queries: dict[str, str], qrels: list[Qrels], max_per_query: int | None,
                     seed: int) -> list[Example]:
    """(query, positive) rows of the labeled qrels; with a cap per query, the most relevant
    documents are kept (a seeded random choice among equally relevant ones)."""
    rng = random.Random(seed)
    rows = []
    for part in qrels:
        for query_id, docs in part.items():
            chosen = sorted(docs)
            if max_per_query is not None and len(chosen) > max_per_query:
                rng.shuffle(chosen)
                chosen = sorted(chosen, key=lambda did: -docs[did])[:max_per_query]
            rows += [Example(query_id, queries[query_id], did, LABELED) for did in chosen]
    return rows


def judged_relevant(split: FewShotSplit) -> dict[str, set[str]]:
    """Documents judged relevant to each labeled query, in any split (the split stage's
    ``qrels/judged.tsv``): never a negative for that query."""
    return {qid: {did for did, score in docs.items() if score > 0}
            for qid, docs in split.judged.items()}


def carve_dev(rows: list[Example], fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """Hold out ``fraction`` of the labeled queries (all their pairs) as the dev set."""
    if fraction <= 0:
        return rows, []
    query_ids = sorted({row.query_id for row in rows})
    n_dev = round(len(query_ids) * fraction)
    if n_dev < 1 or n_dev >= len(query_ids):
        raise SptarError(f"train.dev_fraction {fraction} of {len(query_ids)} labeled queries leaves "
                         f"{n_dev} dev queries (fix: choose a fraction that keeps at least one query "
                         "on each side, or 0 for no model selection)")
    dev_ids = set(random.Random(seed).sample(query_ids, n_dev))
    train = [row for row in rows if row.query_id not in dev_ids]
    dev = [Example(row.query_id, row.query, row.doc_id, DEV) for row in rows if row.query_id in dev_ids]
    return train, dev


def build_training_data(cfg: Config, paths: Paths, variant: str, corpus: Corpus,
                        dev_fraction: float | None = None) -> TrainingData:
    """The labeled pairs (capped by ``train.max_pairs_per_query``; ``dev_fraction`` of their
    queries held out, default ``train.dev_fraction``) plus, for ``inpars`` / ``sptar``, the
    variant's filtered weak pairs; and every document judged relevant to each query."""
    split = load_split(paths)
    tc = cfg.train
    files = [str(path) for path in labeled_files(paths)]
    labeled = labeled_examples(split.queries, [split.prompt_train, split.prompt_eval],
                               tc.max_pairs_per_query, train_seed(cfg))
    train, dev = carve_dev(labeled, tc.dev_fraction if dev_fraction is None else dev_fraction,
                           train_seed(cfg))
    weak = None
    if variant != "wo-aug":
        folder = paths.stage("filter", variant)
        weak = read_weak_set(folder, corpus)
        files += [str(path) for path in weak_set_files(folder)]
        clash = set(weak.queries) & set(split.queries)
        if clash:
            raise SptarError(f"{weak.queries_file}: weak query id {sorted(clash)[0]!r} is also a "
                             "labeled query id (fix: weak queries need their own ids, gen-<docid>-<k>)")
        chosen = nested_subset(list(weak.queries), tc.max_weak_pairs, train_seed(cfg))
        train += [Example(qid, weak.queries[qid], weak.source[qid], WEAK) for qid in chosen]
    judged = judged_relevant(split)
    for row in train + dev:
        judged.setdefault(row.query_id, set()).add(row.doc_id)
    return TrainingData(train, dev, judged, files, split, weak)


def nested_subset(query_ids: list[str], limit: int | None, seed: int) -> list[str]:
    """``train.max_weak_pairs``: the first ``limit`` ids of one seeded order of ``query_ids``, in
    their own order; with the same seed a smaller limit takes a subset of a larger one's ids."""
    if limit is None or limit >= len(query_ids):
        return query_ids
    order = sorted(query_ids)
    random.Random(f"weak-subset-{seed}").shuffle(order)
    keep = set(order[:limit])
    return [qid for qid in query_ids if qid in keep]


def add_hard_negatives(cfg: Config, data: TrainingData, corpus: Corpus, searcher) -> None:
    """``train.hard_negatives`` BM25-mined negatives for every training row (not the dev rows)."""
    if cfg.train.hard_negatives:
        mine_hard_negatives(data.train, corpus, searcher, data.judged, cfg.train.hard_negatives,
                            cfg.train.hard_negative_depth, train_seed(cfg))


def train_seed(cfg: Config) -> int:
    return cfg.train.seed if cfg.train.seed is not None else cfg.seed


def mine_hard_negatives(rows: list[Example], corpus: Corpus, searcher, judged: dict[str, set[str]],
                        n: int, depth: int, seed: int) -> None:
    """Give each row ``n`` negatives, drawn (seeded) from BM25's top ``depth`` documents for its
    query that are not judged relevant to it; when BM25 finds too few, random unjudged documents
    fill up."""
    queries = {row.query_id: row.query for row in rows}
    most_judged = max((len(docs) for docs in judged.values()), default=0)
    ranked = searcher.search(queries, top_k=depth + most_judged + 1)
    rng = random.Random(seed)
    doc_ids = list(corpus)
    for row in rows:
        excluded = judged.get(row.query_id, set()) | {row.doc_id}
        hits = sorted(ranked.get(row.query_id, {}).items(), key=lambda item: (-item[1], item[0]))
        pool = [did for did, _ in hits if did not in excluded][:depth]
        chosen = set(rng.sample(pool, min(n, len(pool))))
        negatives = [did for did in pool if did in chosen]  # in BM25 rank order
        while len(negatives) < n:
            candidate = rng.choice(doc_ids)
            if candidate not in excluded and candidate not in negatives:
                negatives.append(candidate)
        row.negatives = negatives
