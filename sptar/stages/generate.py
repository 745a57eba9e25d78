"""Generate stage: weak queries for the unlabeled pool, with the soft prompt or the InPars prompt.

Variants:

- ``sptar``: the base LLM with the tuned soft prompt (``tune/adapter/``, its virtual tokens
  first) and the in-context examples the soft prompt filter chose (``tune/examples.json``).
- ``inpars``: the same LLM, no soft prompt, InPars' "vanilla" few-shot prompt with
  ``generate.inpars_examples`` pairs from the labeled prompt-train set (distinct queries,
  chosen by seed).

Reads: ``data/beir/<dataset>/corpus.jsonl``, ``split/`` (the unlabeled pool; prompt-train pairs
for ``inpars``), ``tune/`` (``sptar``).
Writes to ``data/runs/<experiment>/generate/<variant>/``:

- ``queries.jsonl``: BEIR queries with ids ``gen-<docid>-<k>`` and ``metadata``
  ``{"doc_id", "logprob" (mean log-probability of the generated tokens, end of line included),
  "variant"}``, in pool order;
- ``qrels/train.tsv``: each generated query -> its source document (score 1);
- ``dropped.jsonl``: ``{"query_id", "doc_id", "reason", "attempts", "raw"}`` for each query that
  stayed empty after ``generate.retries`` re-samplings;
- ``manifest.json``: counts, throughput (docs/s, generated and prompt tokens), examples used.

Decoding (:mod:`sptar.llm.decoding`): greedy unless ``generate.sample``; one line per query (stop at
the end of the line); the shared prefix's key/value cache is computed once. Post-processing as
SPTAR's: first line, strip an echo of the prompt label (``Relevant Query:``), cut a repeated tail.

Resuming and sharding: the documents, sorted by prompt length (longest first), are cut into
chunks of ``generate.chunk_size``; each chunk is written atomically as ``parts/chunk-NNNNNN.jsonl``
when done. A restarted run skips the chunks that exist, so nothing is generated twice or lost;
``parts/run.json`` records what the chunks were made with, and a run with another config (or
model, inputs, device) refuses to mix with them unless ``--overwrite``. Shard ``i`` of ``n``
(``--shard/--num-shards``, or ``$RANK``/``$WORLD_SIZE`` under torchrun/accelerate) does chunks
``c`` with ``c % n == i``: chunk contents and batches do not depend on the sharding, so the
output is the same byte for byte. Whichever process finds every chunk present when it finishes
(the last shard to end, or any later ``sptar generate`` run) merges them, in pool order, into
the final files, removes ``parts/``, and writes the manifest.
"""

from __future__ import annotations

import logging
import random
import shutil
import time
from pathlib import Path
from typing import Any

from sptar.config import Config
from sptar.errors import SptarError
from sptar.io.formats import (
    Corpus,
    doc_text,
)
from sptar.io.manifest import input_hashes, manifests
from sptar.io.paths import Paths
from sptar.llm.generation import (
    FORMAT_VERSION,
    Item,
    Workspace,
    generate_items,
    merge,
    plan_chunks,
    score_likelihoods,
)
from sptar.llm.prompts import prompt_format
from sptar.outputs.dataset import load_corpus
from sptar.outputs.fewshot import load_split, pool_file
from sptar.outputs.prompt import Prompt, load_prompt
from sptar.run.resources import check_disk_space, generated_bytes
from sptar.run.runner import PARTIAL
from sptar.run.shards import resolve_shard

log = logging.getLogger(__name__)



# ---------------------------------------------------------------- prompts


def inpars_examples(cfg: Config, paths: Paths, corpus: Corpus) -> Prompt:
    """``generate.inpars_examples`` prompt-train pairs, one per query, chosen by seed."""
    split = load_split(paths)
    wanted = cfg.generate.inpars_examples
    query_ids = sorted(split.prompt_train)
    if wanted > len(query_ids):
        raise SptarError(f"generate.inpars_examples is {wanted}, but the split has only"
                         f" {len(query_ids)} prompt-train queries (fix: lower it)")
    chosen = random.Random(cfg.seed).sample(query_ids, wanted)
    pairs = [(qid, sorted(split.prompt_train[qid])[0]) for qid in chosen]
    return Prompt("inpars", [(doc_text(corpus[did]), split.queries[qid]) for qid, did in pairs],
                  [[qid, did] for qid, did in pairs])


# ---------------------------------------------------------------- stage


def sections(variant: str) -> tuple[str, ...]:
    from sptar.config import GenerateConfig

    keys = [f"generate.{k}" for k in GenerateConfig.model_fields
            if not (variant == "sptar" and k == "inpars_examples")]
    return ("dataset.name", "seed", "device", "models.llm", "models.trust_remote_code", *keys)


def output_dir(paths: Paths, variant: str) -> Path:
    return paths.stage("generate", variant)


def upstream(cfg: Config, paths: Paths, variant: str) -> list[Path]:
    needed = manifests(paths.beir, paths.stage("split"))
    if variant == "sptar":
        needed += manifests(paths.stage("tune"))
    return needed


def fingerprint(cfg: Config, paths: Paths, variant: str, device: str) -> dict[str, Any]:
    """What the chunks depend on: config, upstream outputs, model weights, device kind."""
    from sptar.models import model_fingerprint, resolve_model

    return {
        "format": FORMAT_VERSION,
        "variant": variant,
        "config": cfg.section_hash(*sections(variant)),
        "inputs": input_hashes([Path(p) for p in upstream(cfg, paths, variant)]),
        "model": model_fingerprint(resolve_model(cfg.models.llm)),
        "device": device.split(":")[0],
    }


def run(cfg: Config, paths: Paths, variant: str, overwrite: bool = False,
        shard: int | None = None, num_shards: int | None = None) -> dict[str, Any]:
    from sptar.models import resolve_device

    shard, num_shards = resolve_shard(shard, num_shards)
    device = resolve_device(cfg.device)  # under torchrun: cuda:$LOCAL_RANK
    work = Workspace(output_dir(paths, variant))
    resumed = work.claim(fingerprint(cfg, paths, variant, device), bool(overwrite),
                         sole_writer=num_shards == 1)
    if resumed:
        log.info("%s: resuming, %d chunk(s) already done", work.parts, resumed)

    corpus = load_corpus(paths)
    prompt = load_prompt(paths) if variant == "sptar" else inpars_examples(cfg, paths, corpus)
    pool = load_split(paths).unlabeled
    missing = [d for d in pool if d not in corpus]
    if missing:
        raise SptarError(f"{pool_file(paths)}: document {missing[0]!r} is"
                         " not in the corpus (fix: re-run sptar split)")

    from sptar.models import load_tokenizer

    tokenizer = load_tokenizer(cfg.models.llm, cfg.models.trust_remote_code, cfg.models.download)
    fmt = prompt_format(prompt, tokenizer, cfg.generate.max_doc_tokens)
    doc_tokens = {d: fmt.doc_ids(doc_text(corpus[d]), len(prompt.examples)) for d in pool}
    chunks = plan_chunks(pool, doc_tokens, cfg.generate.chunk_size)
    parts = work.chunks(len(chunks))
    mine = parts.todo(shard, num_shards)
    stats: dict[str, Any] = {"chunks": len(mine), "docs": sum(len(chunks[c]) for c in mine)}
    if mine:
        gen = cfg.generate
        check_disk_space(work.folder, generated_bytes(stats["docs"], gen.queries_per_doc,
                                                      gen.max_new_tokens), "the generated queries")
        stats.update(_generate_chunks(cfg, work, chunks, mine, doc_tokens, prompt, device, fmt,
                                      shard, num_shards, f"generate {variant}"))
    with parts.merging() as complete:
        if not complete:
            return {PARTIAL: f"shard {shard}/{num_shards} finished its chunks; "
                              f"{parts.missing()} of {len(chunks)} chunk(s) still missing "
                              "(the last shard to finish, or any later run, merges)"}
        summary = merge(work, len(chunks), pool, corpus, variant)
        shutil.rmtree(work.parts)
    summary["this_run"] = stats
    summary["shards"] = num_shards
    summary["prompt"] = {"style": prompt.style, "examples": prompt.example_ids,
                         "prefix_tokens": summary.pop("prefix_tokens"),
                         "soft_prompt": prompt.adapter is not None, "limits": prompt.limits}
    return summary


def example_ngrams(fmt, prompt: Prompt, n: int) -> list[list[int]]:
    """Every run of ``n`` tokens of the in-context examples' queries (``generate.ban_example_ngrams``;
    none when ``n`` is 0)."""
    if not n:
        return []
    found = []
    for _, query in prompt.examples:
        ids = fmt.query_ids(query)
        found += [ids[i:i + n] for i in range(len(ids) - n + 1)]
    return found


def _generate_chunks(cfg: Config, work: Workspace, chunks: list[list[str]], mine: list[int],
                     doc_tokens: dict[str, list[int]], prompt: Prompt, device: str, fmt,
                     shard: int, num_shards: int, what: str) -> dict[str, Any]:
    from tqdm.auto import tqdm

    from sptar.llm.engines import open_engine
    from sptar.models import load_tokenizer

    tokenizer = load_tokenizer(cfg.models.llm, cfg.models.trust_remote_code, cfg.models.download)
    total = sum(len(chunks[c]) for c in mine)
    part = f" [{shard}/{num_shards}]" if num_shards > 1 else ""
    label = f"generate {prompt.style}{part}"
    prefix_ids = fmt.prefix_ids(prompt.examples)
    widest = max(len(doc_tokens[doc]) for c in mine for doc in chunks[c])
    banned = example_ngrams(fmt, prompt, cfg.generate.ban_example_ngrams)
    started, new_tokens = time.perf_counter(), 0
    with open_engine(cfg, prompt, prefix_ids, widest, device, banned, what) as (generator, rows), \
            tqdm(total=total, desc=f"weak queries{part}", unit="doc") as bar:
        for number in mine:
            chunk_start = time.perf_counter()
            items = [Item(doc, k, doc_tokens[doc]) for doc in chunks[number]
                     for k in range(cfg.generate.queries_per_doc)]
            generate_items(items, generator, tokenizer, cfg, generator.prefix_len)
            if cfg.generate.score_without_doc:
                score_likelihoods(items, generator, fmt, len(prompt.examples), rows)
            seconds = time.perf_counter() - chunk_start
            header = {"chunk": number, "docs": len(chunks[number]), "seconds": round(seconds, 3),
                      "prefix_tokens": generator.prefix_len}
            work.write_chunk(number, header, items)
            new_tokens += sum(item.new_tokens for item in items)
            elapsed = time.perf_counter() - started
            bar.set_postfix(tok_s=f"{new_tokens / elapsed:.1f}", refresh=False)  # shown by the update
            bar.update(len(chunks[number]))
    elapsed = time.perf_counter() - started
    log.info("%s: %d docs in %.1f s (%.2f docs/s, %d new tokens)", label, total, elapsed,
             total / elapsed, new_tokens)
    return {"seconds": round(elapsed, 3), "docs_per_s": round(total / elapsed, 4),
            "new_tokens": new_tokens, "rows_at_once": rows}


