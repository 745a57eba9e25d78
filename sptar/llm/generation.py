"""Generation's units of work and its resumable ``parts/`` folder: one :class:`Item` per query to
write (with its retries), the chunk files guarded by a fingerprint of what made them, and the
merge of the chunks into the weak set, in pool order, with its counts."""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sptar.config import Config
from sptar.errors import SptarError
from sptar.io.atomic import file_lock, remove_stale_temporaries
from sptar.io.formats import Corpus, iter_jsonl, read_json, write_json, write_jsonl
from sptar.outputs.weakset import write_weak_set
from sptar.run.chunks import Chunks
from sptar.text import clean_query

log = logging.getLogger(__name__)

PARTS = "parts"
LIKELIHOODS = ("ll_doc", "ll_nodoc")  # mean log-probability per token, with / without the document
FORMAT_VERSION = 2  # of the chunk records and the post-processing: bump when they change


@dataclass
class Item:
    """One query to write: document ``doc_id``, query number ``k``."""

    doc_id: str
    k: int
    doc_ids: list[int]  # token ids of the document block
    text: str = ""
    reason: str | None = "not generated"
    raw: str = ""
    logprob: float | None = None
    attempts: int = 0
    new_tokens: int = 0
    prompt_tokens: int = 0
    likelihoods: dict[str, float] = field(default_factory=dict)  # ll_doc, ll_nodoc (when scored)

    def record(self) -> dict[str, Any]:
        return {"doc_id": self.doc_id, "k": self.k, "text": self.text or None,
                "logprob": None if self.logprob is None else round(self.logprob, 6),
                "reason": self.reason, "raw": self.raw, "attempts": self.attempts,
                "new_tokens": self.new_tokens, "prompt_tokens": self.prompt_tokens,
                **{key: round(value, 6) for key, value in self.likelihoods.items()}}


def query_id(doc_id: str, k: int) -> str:
    return f"gen-{doc_id}-{k}"


def row_seed(seed: int, doc_id: str, k: int, attempt: int) -> int:
    """The sampling seed of one (document, query, attempt): independent of batches and shards."""
    digest = hashlib.sha256(f"{seed}\t{doc_id}\t{k}\t{attempt}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def generate_items(items: list[Item], generator, tokenizer, cfg: Config,
                   prefix_len: int) -> None:
    """Fill in every item: the first attempt as configured, empty ones re-sampled (retries).

    ``generator.generate`` gets all pending items at once (it batches them itself).
    """
    from sptar.llm.decoding import Sampling

    gen = cfg.generate
    first = Sampling(gen.sample, gen.temperature, gen.top_p)
    retry = Sampling(True, gen.temperature, gen.top_p)
    pending = items
    for attempt in range(gen.retries + 1):
        sampling = first if attempt == 0 else retry
        seeds = [row_seed(cfg.seed, it.doc_id, it.k, attempt) for it in pending]
        lines = generator.generate([it.doc_ids for it in pending], sampling,
                                   seeds if sampling.sample else None)
        for item, line in zip(pending, lines, strict=True):
            item.raw = tokenizer.decode(line.token_ids, skip_special_tokens=True)
            item.raw = re.split(r"[\r\n]", item.raw, maxsplit=1)[0]
            item.text, item.reason = clean_query(item.raw)
            item.logprob = line.mean_logprob if item.text else None
            item.attempts += 1
            item.new_tokens += len(line.token_ids)
            item.prompt_tokens += prefix_len + len(item.doc_ids)
        pending = [it for it in pending if not it.text]
        if not pending:
            break
    for item in pending:
        item.reason = f"{item.reason} after {item.attempts} attempt(s)"


def score_likelihoods(items: list[Item], generator, fmt, n_examples: int, batch_size: int) -> None:
    """``generate.score_without_doc``: each written query's mean log-probability per token
    (end of line included) after the prompt with its document, and with an empty document."""
    from sptar.llm.prompts import IGNORE_INDEX
    from sptar.llm.scoring import scores_after_prefix

    live = [item for item in items if item.text]
    if not live:
        return
    empty = fmt.doc_ids("", n_examples)
    for key, blocks in (("ll_doc", [item.doc_ids for item in live]), ("ll_nodoc", [empty] * len(live))):
        rows = []
        for block, item in zip(blocks, live, strict=True):
            target = fmt.target_ids(item.text)
            rows.append((list(block) + target, [IGNORE_INDEX] * len(block) + target))
        scores = scores_after_prefix(generator.model, generator.prefix_states(), generator.prefix_len,
                                     rows, generator.pad_id, generator.device, batch_size)
        for item, (nll, count) in zip(live, scores, strict=True):
            item.likelihoods[key] = -nll / max(count, 1)


@dataclass
class Workspace:
    """``parts/`` of one variant: the run fingerprint and one JSONL file per finished chunk."""

    folder: Path
    parts: Path = field(init=False)

    def __post_init__(self) -> None:
        self.parts = self.folder / PARTS

    @property
    def lock(self) -> Path:
        return self.folder / f".{PARTS}.lock"

    def chunk(self, number: int) -> Path:
        return self.parts / f"chunk-{number:06d}.jsonl"

    def chunks(self, count: int) -> Chunks:
        return Chunks(count, self.chunk, self.lock)

    def claim(self, fingerprint: dict[str, Any], overwrite: bool, sole_writer: bool) -> int:
        """Check ``parts/run.json`` against ``fingerprint`` (or start it); return chunks present."""
        run_file = self.parts / "run.json"
        with file_lock(self.lock):
            if run_file.is_file():
                old = read_json(run_file)
                if old != fingerprint:
                    changed = sorted(k for k in set(old) | set(fingerprint) if old.get(k) != fingerprint.get(k))
                    if not overwrite:
                        raise SptarError(
                            f"{self.parts}: unfinished output of an earlier run with another"
                            f" {', '.join(changed)} (fix: restore that config to resume, or pass"
                            " --overwrite to discard it)")
                    log.warning("discarding %s (made with another %s)", self.parts, ", ".join(changed))
                    shutil.rmtree(self.parts)
            elif self.parts.is_dir():
                shutil.rmtree(self.parts)  # chunks without a fingerprint cannot be trusted
            if sole_writer:
                remove_stale_temporaries(self.folder, recursive=True)
            if not run_file.is_file():
                write_json(run_file, fingerprint)
            return len(list(self.parts.glob("chunk-*.jsonl")))

    def write_chunk(self, number: int, header: dict[str, Any], items: Sequence[Item]) -> None:
        write_jsonl(self.chunk(number), [header, *(item.record() for item in items)])

    def read_chunks(self, count: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        headers, records = [], []
        for number in range(count):
            rows = iter_jsonl(self.chunk(number))
            headers.append(next(rows)[1])
            records.extend(row for _, row in rows)
        return headers, records


def plan_chunks(doc_ids: Sequence[str], doc_tokens: dict[str, list[int]],
                chunk_size: int) -> list[list[str]]:
    """Documents sorted by prompt length (longest first, then id), cut into chunks."""
    ordered = sorted(doc_ids, key=lambda d: (-len(doc_tokens[d]), d))
    return [ordered[i:i + chunk_size] for i in range(0, len(ordered), chunk_size)]


def merge(work: Workspace, count: int, pool: list[str], corpus: Corpus,
          variant: str) -> dict[str, Any]:
    """Write the final files from the chunks, in pool order; return the summary counts."""
    headers, records = work.read_chunks(count)
    by_key = {(r["doc_id"], r["k"]): r for r in records}
    per_doc: dict[str, list[dict[str, Any]]] = {}
    for record in by_key.values():
        per_doc.setdefault(record["doc_id"], []).append(record)
    if set(per_doc) != set(pool) or len(by_key) != len(records):
        raise SptarError(f"{work.parts}: the chunks do not cover the pool exactly once"
                         " (fix: re-run with --overwrite)")
    queries, metadata, source, dropped = {}, {}, {}, []
    for doc_id in pool:
        for record in sorted(per_doc[doc_id], key=lambda r: r["k"]):
            qid = query_id(doc_id, record["k"])
            if record["text"]:
                queries[qid] = record["text"]
                metadata[qid] = {"doc_id": doc_id, "logprob": record["logprob"], "variant": variant,
                                 **{key: record[key] for key in LIKELIHOODS if key in record}}
                source[qid] = doc_id
            else:
                dropped.append({"query_id": qid, "doc_id": doc_id, "reason": record["reason"],
                                "attempts": record["attempts"], "raw": record["raw"]})
    write_weak_set(work.folder, queries, metadata, source, dropped)
    return _summary(headers, records, queries, metadata, dropped, corpus)


def _summary(headers, records, queries, metadata, dropped, corpus) -> dict[str, Any]:
    seconds = sum(h["seconds"] for h in headers)
    docs = sum(h["docs"] for h in headers)
    new_tokens = sum(r["new_tokens"] for r in records)
    seen: set[str] = set()
    duplicates = title_copies = 0
    for qid, text in queries.items():
        folded = " ".join(text.lower().split())
        duplicates += folded in seen
        seen.add(folded)
        title = " ".join(corpus[metadata[qid]["doc_id"]].get("title", "").lower().split())
        title_copies += bool(title) and folded.strip(" .?") == title.strip(" .?")
    logprobs = [m["logprob"] for m in metadata.values()]
    return {
        "documents": docs,
        "queries": len(queries),
        "dropped": len(dropped),
        "retried": sum(r["attempts"] > 1 for r in records),
        "empty_first_attempt": sum(r["attempts"] > 1 or not r["text"] for r in records),
        "duplicate_queries": duplicates,
        "title_copies": title_copies,
        "mean_logprob": round(sum(logprobs) / len(logprobs), 4) if logprobs else None,
        "generation_seconds": round(seconds, 3),
        "docs_per_s": round(docs / seconds, 4) if seconds else None,
        "new_tokens": new_tokens,
        "new_tokens_per_s": round(new_tokens / seconds, 2) if seconds else None,
        "prompt_tokens": sum(r["prompt_tokens"] for r in records),
        "prefix_tokens": headers[0]["prefix_tokens"] if headers else 0,
        "mean_query_words": round(sum(len(t.split()) for t in queries.values()) / len(queries), 2)
        if queries else 0,
        "chunks": len(headers),
    }
