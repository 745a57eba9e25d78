"""The training teacher of ``train.loss: margin_mse``: the LLM's query likelihood
``log P(query | document)`` (the ql-rerank scorer, :func:`sptar.llm.reranking.open_scorer`) of
every (query, document) pair a training set needs, cached so that a rerun scores nothing twice.

The cache is ``data/cache/teacher/<key>/``; the key covers what a score depends on: the LLM's
weights, the soft prompt (the tune manifest's hash, or ``untuned``), the scorer's document budget
and effective precision, and :data:`FORMAT`. It holds part files ``part-<pid>-<n>.jsonl``, one
line ``{"doc": id, "query": text, "score": float}`` per pair, each part written whole
(atomically) after :data:`PART_DOCS` documents: a killed run loses at most the documents it was
scoring, runs side by side (the curve's jobs) never write the same file, and a reader takes the
union of the parts. The work is grouped by document: each document runs once on the scorer's
prefix cache, then every query that needs it.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import re
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from sptar.config import Config
from sptar.errors import SptarError
from sptar.io.atomic import atomic_write
from sptar.io.formats import sha256_file
from sptar.io.manifest import MANIFEST
from sptar.io.paths import Paths

log = logging.getLogger(__name__)

FORMAT = 1  # bump when a score's meaning changes: old parts then live under another key
PART_DOCS = 32  # documents per part file: what a kill can lose
Pair = tuple[str, str]  # (query text, document id)


def teacher_key(cfg: Config, paths: Paths, tuned: bool) -> str:
    """The cache key of the teacher's scores (see the module's docstring)."""
    from sptar.models import effective_precision, model_fingerprint, resolve_device, resolve_model

    prompt = sha256_file(paths.stage("tune") / MANIFEST)[:16] if tuned else "untuned"
    parts = {"format": FORMAT, "llm": model_fingerprint(resolve_model(cfg.models.llm)),
             "prompt": prompt, "max_doc_tokens": cfg.rerank.max_doc_tokens,
             "precision": effective_precision(resolve_device(cfg.device), cfg.rerank.precision)}
    blob = json.dumps(parts, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def read_cache(folder: Path) -> dict[Pair, float]:
    """Every score in ``folder``'s part files (none when it does not exist)."""
    scores: dict[Pair, float] = {}
    for part in sorted(folder.glob("part-*.jsonl")):
        with part.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                try:
                    row = json.loads(line)
                    scores[(row["query"], row["doc"])] = float(row["score"])
                except (ValueError, KeyError, TypeError) as exc:
                    raise SptarError(f"{part}:{number}: not a teacher score line ({exc}) (fix: "
                                     f"delete {part}; its pairs are scored again)") from exc
    return scores


def _remove_dead_writers_leftovers(folder: Path) -> None:
    """The temporary files of part writes whose process is gone (killed half-way)."""
    for leftover in folder.glob(".part-*.tmp"):
        match = re.match(r"\.part-(\d+)-", leftover.name)
        if match and not _alive(int(match.group(1))):
            leftover.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def teacher_scores(cfg: Config, paths: Paths, pairs: Iterable[Pair], documents: Mapping[str, str],
                   tuned: bool) -> tuple[dict[Pair, float], dict[str, Any]]:
    """``(score of each pair, counts)``: the cached scores, the missing ones scored and cached."""
    folder = paths.cache / "teacher" / teacher_key(cfg, paths, tuned)
    folder.mkdir(parents=True, exist_ok=True)
    _remove_dead_writers_leftovers(folder)
    wanted = set(pairs)
    known = read_cache(folder)
    by_doc: dict[str, list[str]] = {}
    for query, did in sorted(wanted - set(known), key=lambda pair: (pair[1], pair[0])):
        by_doc.setdefault(did, []).append(query)
    scored = sum(map(len, by_doc.values()))
    log.info("teacher (%s): %d pairs, %d cached in %s, %d to score over %d documents",
             "tuned" if tuned else "untuned", len(wanted), len(wanted) - scored, folder, scored,
             len(by_doc))
    started = time.perf_counter()
    if by_doc:
        known.update(_score(cfg, paths, tuned, by_doc, documents, folder))
    seconds = time.perf_counter() - started
    counts = {"teacher": "tuned" if tuned else "untuned", "cache": str(folder),
              "pairs": len(wanted), "pairs_scored": scored, "pairs_cached": len(wanted) - scored,
              "documents_scored": len(by_doc), "seconds": round(seconds, 2),
              "seconds_per_pair": round(seconds / scored, 4) if scored else None}
    return {pair: known[pair] for pair in wanted}, counts


def _score(cfg: Config, paths: Paths, tuned: bool, by_doc: dict[str, list[str]],
           documents: Mapping[str, str], folder: Path) -> dict[Pair, float]:
    from tqdm.auto import tqdm

    from sptar.llm.reranking import open_scorer

    out: dict[Pair, float] = {}
    docs = iter(by_doc.items())
    bar = tqdm(total=len(by_doc), desc="teacher scoring", unit="doc")
    with open_scorer(cfg, paths, tuned) as scorer:
        for number in itertools.count():
            group = list(itertools.islice(docs, PART_DOCS))
            if not group:
                break
            lines = []
            for did, queries in group:
                for query, score in zip(queries, scorer.scores(documents[did], queries), strict=True):
                    out[(query, did)] = score
                    lines.append(json.dumps({"doc": did, "query": query, "score": score}) + "\n")
                bar.update(1)
            with atomic_write(folder / f"part-{os.getpid()}-{time.time_ns()}-{number}.jsonl") as handle:
                handle.writelines(lines)
    bar.close()
    return out
