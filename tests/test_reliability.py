"""Interruptions, determinism and offline runs, on the whole tiny pipeline with tiny models.

- Every stage is killed with SIGKILL in a separate process (see :mod:`tests.zygote`) at a
  random write (right before or after one of its ``os.replace`` calls) and, for the longer
  stages, once more at a random time; then it is re-run. The killed stage never has a manifest,
  the re-run leaves no temporaries, resumes where the stage resumes (generation chunks, the
  embedding cache) and its outputs equal those of an uninterrupted run.
- An uninterrupted run in this process gives the same outputs as one run stage by stage in
  fresh processes: byte for byte (timings aside), training metrics to 4 decimals, and the same
  config hashes, seeds and package versions in the manifests.
- The runs in fresh processes have the network blocked and ``HF_HUB_OFFLINE`` unset: the
  default config needs no network, and a Hugging Face id that is not in the local cache is an
  error without any attempt to reach the hub (unless ``models.download``).

``SPTAR_KILL_SEED=n`` repeats a run's random kill points; ``SPTAR_KILL_POINTS=all`` tries every
write of every stage (slow); ``SPTAR_KILL_REPORT=file.json`` writes what was tried.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import time
from pathlib import Path

import pytest

from sptar.config import load_config
from sptar.io.formats import read_json
from sptar.io.manifest import is_log
from sptar.run.runner import execute, paths_for
from sptar.stages.report import render_markdown
from tests.test_generate import _one_thread, tiny_llm  # noqa: F401  fixtures (see below)
from tests.zygote import Zygote

from .conftest import ROOT

STAGES = [("data", {}), ("split", {}), ("tune", {}), ("generate", {"variant": "sptar"}),
          ("filter", {"variant": "sptar"}), ("train", {"variant": "sptar"}),
          ("evaluate", {"system": "bm25"}), ("evaluate", {"system": "zero-shot"}),
          ("evaluate", {"system": "sptar"}), ("report", {})]
OVERRIDES = ["report.systems=[bm25, zero-shot, sptar]", "train.hard_negatives=1",
             "filter.steps=[{dedup: {}}, {length: {min_words: 1}}, {logprob_topn: {fraction: 0.9}}]"]
TIMED_KILLS = {"tune", "generate/sptar", "train/sptar", "evaluate/zero-shot", "evaluate/sptar"}
VOLATILE = re.compile(r"second|runtime|timings|wall_time|_at$")  # keys that hold timings


def _label(stage: str, options: dict[str, str]) -> str:
    return "/".join([stage, *options.values()])


# _one_thread (autouse): torch runs on one thread here, as in the fresh processes (same sums)


@pytest.fixture(scope="module")
def models(tiny_llm, tiny_encoder):  # noqa: F811
    return [f"models.llm={tiny_llm}", f"models.encoder={tiny_encoder}"]


@pytest.fixture(scope="module")
def zygote(tmp_path_factory):
    server = Zygote(tmp_path_factory.mktemp("zygote"), ROOT)
    yield server
    server.close()


def _argv(stage: str, options: dict[str, str], sets: list[str]) -> list[str]:
    argv = [stage, *(arg for key, value in options.items() for arg in (f"--{key}", value))]
    return [*argv, "--config", "tiny", "--quiet", *(arg for item in sets for arg in ("--set", item))]


def _folder(paths, stage: str, options: dict[str, str]) -> Path:
    return paths.beir if stage == "data" else paths.stage(stage, *options.values())


def snapshot(folder: Path) -> dict[str, object]:
    """Every output file of a stage (not its manifest or log): its sha256, or (a JSON file
    holding timings) its content without them; ``report.md`` must be exactly what
    ``report.json`` renders to."""
    files: dict[str, object] = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if not path.is_file() or path.name == "manifest.json" or is_log(rel) or \
                any(part.startswith(".") for part in rel.parts):
            continue
        raw = path.read_bytes()
        files[str(rel)] = hashlib.sha256(raw).hexdigest()
        if path.suffix in (".json", ".jsonl"):
            text = raw.decode()
            rows = [json.loads(text)] if path.suffix == ".json" else \
                [json.loads(line) for line in text.splitlines() if line.strip()]
            stable = [_stable(row) for row in rows]
            if stable != rows:
                files[str(rel)] = stable
        if path.name == "report.md":
            files[str(rel)] = raw.decode() == render_markdown(read_json(folder / "report.json"))
    return files


def _stable(value):
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items() if not VOLATILE.search(k)}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    return value


def _leftovers(paths) -> list[str]:
    """Temporaries of killed writes anywhere under the data root."""
    return [str(p.relative_to(paths.root)) for p in paths.root.rglob(".*")
            if p.name.endswith(".tmp") or ".old-" in p.name]


@pytest.fixture(scope="module")
def reference(zygote, models, tmp_path_factory):
    """Every stage run uninterrupted, each in a fresh process: ``(paths, {label: Outcome})``."""
    root = tmp_path_factory.mktemp("reference") / "data"
    sets = [*models, *OVERRIDES]
    outcomes = {}
    for stage, options in STAGES:
        outcome = zygote.run(_argv(stage, options, sets), {"SPTAR_DATA_DIR": str(root)})
        assert outcome.code == 0, f"{_label(stage, options)} failed:\n{zygote.tail()}"
        outcomes[_label(stage, options)] = outcome
    return paths_for(load_config("tiny", sets), root), outcomes


# ---------------------------------------------------------------- network


def test_the_default_pipeline_needs_no_network(reference, zygote, tmp_path):
    assert zygote.network_attempts() == []
    env = {"SPTAR_DATA_DIR": str(tmp_path / "data")}
    assert zygote.run(_argv("data", {}, []), env).code == 0
    hub_id = ["models.encoder=no-such-org/no-such-model"]
    refused = zygote.run(_argv("evaluate", {"system": "zero-shot"}, hub_id), env)
    assert refused.code == 2 and zygote.network_attempts() == []  # not in the cache: an error


# ---------------------------------------------------------------- interruptions


def _write_kills(replaces: int) -> list[dict]:
    """Right before each os.replace (the last one writes the manifest), or right after one."""
    return [{"kill": {"replace": n, "when": "before"}} for n in range(1, replaces + 1)] + \
           [{"kill": {"replace": n, "when": "after"}} for n in range(1, replaces)]


def _plans(label: str, reference, rng: random.Random, everywhere: bool) -> list[list[dict]]:
    """Lists of kills, each list applied in turn before one re-run (so far one kill each): by
    default a random write kill and (longer stages) a kill at a random time of a fresh run;
    with ``everywhere``, every write kill and nine evenly spaced times."""
    writes, seconds = _write_kills(reference.replaces), reference.seconds
    if label not in TIMED_KILLS:
        times = []
    elif everywhere:
        times = [{"delay": round(seconds * f / 10, 3)} for f in range(1, 10)]
    else:
        times = [{"delay": round(rng.uniform(0, seconds), 3)}]
    return [[kill] for kill in (writes if everywhere else [rng.choice(writes)]) + times]


def _describe(kill: dict) -> str:
    if "delay" in kill:
        return f"at {kill['delay']} s"
    return f"{kill['kill']['when']} os.replace #{kill['kill']['replace']}"


def _reset(paths, stage: str, folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    if stage == "evaluate":
        shutil.rmtree(paths.cache / "embeddings", ignore_errors=True)


def _resumable(paths, folder: Path) -> int:
    """Finished pieces a re-run can keep: generation chunks, embedding-cache chunks."""
    return len(list((folder / "parts").glob("chunk-*"))) + \
        len(list((paths.cache / "embeddings").glob("*/chunk-*.npy")))


def test_every_stage_killed_anywhere_reruns_to_the_uninterrupted_outputs(reference, zygote, models,
                                                                          tmp_path):
    ref_paths, ref_outcomes = reference
    seed = int(os.environ.get("SPTAR_KILL_SEED", time.time_ns() % 100_000))
    everywhere = os.environ.get("SPTAR_KILL_POINTS") == "all"
    rng = random.Random(seed)
    sets = [*models, *OVERRIDES]
    cfg = load_config("tiny", sets)
    paths = paths_for(cfg, tmp_path / "data")
    env = {"SPTAR_DATA_DIR": str(paths.root)}
    tried = []
    for stage, options in STAGES:
        label = _label(stage, options)
        folder = _folder(paths, stage, options)
        for plan in _plans(label, ref_outcomes[label], rng, everywhere):
            _reset(paths, stage, folder)
            where, outcomes, pieces = f"{label} (seed {seed}):", [], []
            for kill in plan:
                outcome = zygote.run(_argv(stage, options, sets), env, **kill)
                where += f" {'killed' if outcome.killed else 'finished'} {_describe(kill)};"
                assert outcome.killed or "delay" in kill, f"{where} {outcome}\n{zygote.tail()}"
                assert outcome.killed != (folder / "manifest.json").exists(), where
                outcomes.append(outcome.killed)
                pieces.append(_resumable(paths, folder))
            manifest = execute(stage, cfg, paths, **options)
            assert snapshot(folder) == snapshot(_folder(ref_paths, stage, options)), where
            assert _leftovers(paths) == [], where
            if stage == "generate" and outcomes[-1]:  # resumed: no chunk generated twice
                summary = manifest["summary"]
                assert summary["this_run"]["chunks"] == summary["chunks"] - pieces[-1], where
            tried.append({"stage": label, "kills": [_describe(k) for k in plan],
                          "killed": outcomes, "resumable_pieces": pieces, "outputs_equal": True})
    if os.environ.get("SPTAR_KILL_REPORT"):
        Path(os.environ["SPTAR_KILL_REPORT"]).write_text(json.dumps(
            {"seed": seed, "tried": tried}, indent=1))


# ---------------------------------------------------------------- determinism


DETERMINISTIC = ("data", "split", "generate/sptar", "filter/sptar", "evaluate/bm25",
                 "evaluate/zero-shot")


def test_same_config_and_seed_give_the_same_outputs(reference, models, tmp_path):
    """An uninterrupted run here equals the reference run made stage by stage in fresh processes."""
    ref_paths, _ = reference
    cfg = load_config("tiny", [*models, *OVERRIDES])
    paths = paths_for(cfg, tmp_path / "data")
    for stage, options in STAGES:
        label = _label(stage, options)
        manifest = execute(stage, cfg, paths, **options)
        ref_folder = _folder(ref_paths, stage, options)
        reference_manifest = read_json(ref_folder / "manifest.json")
        assert snapshot(_folder(paths, stage, options)) == snapshot(ref_folder), label
        for key in ("config_hash", "config", "seed", "versions", "options"):
            assert manifest[key] == reference_manifest[key], (label, key)
        if label in DETERMINISTIC:  # no timings in these outputs: the digests agree as well
            assert manifest["outputs"] == reference_manifest["outputs"], label
    assert {"torch", "transformers", "sentence-transformers", "peft", "numpy"} <= set(manifest["versions"])
    train = read_json(paths.stage("train", "sptar") / "manifest.json")["summary"]
    ref_train = read_json(ref_paths.stage("train", "sptar") / "manifest.json")["summary"]
    assert train["seed"] == ref_train["seed"] == cfg.seed
    assert round(train["train_loss"], 4) == round(ref_train["train_loss"], 4)
    metrics = read_json(paths.stage("evaluate", "sptar") / "test" / "metrics.json")
    ref_metrics = read_json(ref_paths.stage("evaluate", "sptar") / "test" / "metrics.json")
    assert {k: round(v, 4) for k, v in metrics.items()} == {k: round(v, 4) for k, v in ref_metrics.items()}
