"""The labeled pairs prompt tuning learns from and is scored on: their texts, the random example
pairs drawn for each prompt, the candidate example sets of the soft prompt filter, and the eval
and held-out sets (each pair with its own examples, drawn once by seed)."""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from sptar.config import Config
from sptar.errors import SptarError
from sptar.io.formats import doc_text
from sptar.io.paths import Paths
from sptar.llm.prompts import PromptFormat
from sptar.llm.scoring import Row
from sptar.outputs.dataset import load_corpus
from sptar.outputs.fewshot import PROMPT_EVAL, PROMPT_TRAIN, load_split
from sptar.outputs.prompt import Example

log = logging.getLogger(__name__)

Pair = tuple[str, str]  # (query id, doc id)


@dataclass
class TuneData:
    """The prompt-train and prompt-eval pairs with their texts."""

    train: list[Pair]
    eval: list[Pair]  # shuffled by seed
    texts: dict[Pair, Example] = field(repr=False)  # pair -> (document text, query)

    def examples(self, pairs: Sequence[Pair]) -> list[Example]:
        return [self.texts[pair] for pair in pairs]


def load_data(cfg: Config, paths: Paths) -> TuneData:
    split = load_split(paths)
    train, evals = split.pairs(PROMPT_TRAIN), split.pairs(PROMPT_EVAL)
    corpus = load_corpus(paths)
    missing = [did for _, did in train + evals if did not in corpus]
    if missing:
        raise SptarError(f"{paths.stage('split')}: document {missing[0]!r} is not in {paths.beir}"
                         " (fix: re-run `sptar split` after `sptar data`)")
    texts = {(qid, did): (doc_text(corpus[did]), split.queries[qid]) for qid, did in train + evals}
    random.Random(f"{cfg.seed}-tune-eval-order").shuffle(evals)
    return TuneData(train=train, eval=evals, texts=texts)


def check_data(cfg: Config, data: TuneData) -> None:
    """Fail before any model is loaded when the split cannot feed the configured tuning."""
    k = cfg.tune.n_examples
    queries = len({qid for qid, _ in data.train})
    if k and queries < k + 1:
        raise SptarError(f"tune.n_examples is {k}, but every training prompt needs {k} example pairs"
                         f" from other prompt-train queries and the split has {queries} prompt-train"
                         f" quer{'y' if queries == 1 else 'ies'} (fix: lower tune.n_examples or raise"
                         " split.n_prompt_train)")
    if not data.eval:
        raise SptarError("the split has no prompt-eval pairs (fix: raise split.n_prompt_eval)")


def draw_examples(rng: random.Random, pairs: Sequence[Pair], k: int,
                  exclude_query: str | None = None) -> tuple[Pair, ...]:
    """``k`` pairs of distinct queries (none of them ``exclude_query``), in random order."""
    picked: list[Pair] = []
    seen = {exclude_query}
    for pair in rng.sample(list(pairs), len(pairs)):
        if len(picked) == k:
            break
        if pair[0] not in seen:
            picked.append(pair)
            seen.add(pair[0])
    if len(picked) < k:
        raise SptarError(f"tune.n_examples is {k}, but only {len(picked)} prompt-train queries are"
                         " available as examples (fix: lower tune.n_examples)")
    return tuple(picked)


@dataclass
class ExampleDraw:
    """The example pairs of a training prompt (``tune.example_draw``): drawn afresh for every
    prompt (random), or one set drawn once by seed for every prompt (fixed, as SPTAR tunes; a
    spare pair stands in when a training pair would be its own example)."""

    pairs: Sequence[Pair]
    k: int
    fixed: tuple[Pair, ...] | None = None

    @classmethod
    def for_config(cls, cfg: Config, data: TuneData) -> ExampleDraw:
        if cfg.tune.example_draw == "random" or cfg.tune.n_examples == 0:
            return cls(data.train, cfg.tune.n_examples)
        spare = min(cfg.tune.n_examples + 1, len({qid for qid, _ in data.train}))
        rng = random.Random(f"{cfg.seed}-tune-fixed-examples")
        return cls(data.train, cfg.tune.n_examples, draw_examples(rng, data.train, spare))

    def __call__(self, rng: random.Random, pair: Pair | None = None) -> tuple[Pair, ...]:
        query = pair[0] if pair else None
        if self.fixed is None:
            return draw_examples(rng, self.pairs, self.k, exclude_query=query)
        return tuple(p for p in self.fixed if p[0] != query)[:self.k]


def sample_candidates(pairs: Sequence[Pair], k: int, n: int, seed: str) -> list[tuple[Pair, ...]]:
    """Up to ``n`` distinct example sets of ``k`` pairs (just the empty set when ``k`` is 0)."""
    if k == 0:
        return [()]
    rng = random.Random(seed)
    candidates: list[tuple[Pair, ...]] = []
    seen: set[frozenset[Pair]] = set()
    for _ in range(50 * n):
        candidate = draw_examples(rng, pairs, k)
        if frozenset(candidate) not in seen:
            seen.add(frozenset(candidate))
            candidates.append(candidate)
            if len(candidates) == n:
                break
    return candidates


@dataclass
class EvalSet:
    """Prompt-eval pairs, each with its own random example pairs (drawn once, by seed)."""

    pairs: list[Pair]
    random_examples: list[tuple[Pair, ...]]

    def rows(self, data: TuneData, fmt: PromptFormat, examples: Sequence[Pair] | None = None) -> list[Row]:
        """The scoring prompts: each pair's random examples, or ``examples`` for every pair."""
        shots = self.random_examples if examples is None else [tuple(examples)] * len(self.pairs)
        return [fmt.training_example(*data.texts[pair], data.examples(shot))
                for pair, shot in zip(self.pairs, shots, strict=True)]


def eval_sets(cfg: Config, data: TuneData) -> tuple[EvalSet, EvalSet]:
    """The eval set (early stopping, the filter, the figures) and the held-out set (no choice)."""
    rng = random.Random(f"{cfg.seed}-tune-eval-examples")
    n_eval = cfg.tune.eval_pairs or len(data.eval)
    wanted = cfg.tune.heldout_eval_pairs
    heldout = data.eval[n_eval:n_eval + wanted]
    if len(heldout) < wanted:
        log.warning("tune.heldout_eval_pairs is %d but only %d prompt-eval pairs are left after the"
                    " %d of tune.eval_pairs", wanted, len(heldout), n_eval)

    examples = ExampleDraw.for_config(cfg, data)

    def draw(pairs: list[Pair]) -> EvalSet:
        return EvalSet(pairs, [examples(rng) for _ in pairs])

    return draw(data.eval[:n_eval]), draw(heldout)
