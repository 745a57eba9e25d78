"""The stage registry and the one way every stage is executed.

A stage is a module with four functions:

- ``sections(**options)``: the config sections (or dotted keys) its output depends on;
- ``output_dir(paths, **options)``: the folder it writes (and its ``manifest.json``);
- ``upstream(cfg, paths, **options)``: the manifests of the earlier stages it reads;
- ``run(cfg, paths, **options) -> summary``: the work; returns counts for the manifest;
- optionally ``source_digests(cfg, **options)``: hashes of what else its output depends on:
  input files that no stage wrote, the int8 encoder's recipe.

:func:`execute` checks that the upstream stages finished, skips the stage when its manifest
matches the config and inputs, seeds, runs it, and writes the manifest last. While the stage
runs, its log goes to ``log.txt`` in its folder (:mod:`sptar.run.stagelog`). Stage modules
import heavy libraries (torch, ...) inside functions so the CLI starts fast.
"""

from __future__ import annotations

import importlib
import itertools
import logging
import random
import time
from pathlib import Path
from typing import Any

from sptar.config import Config
from sptar.errors import SptarError
from sptar.io.atomic import remove_stale_temporaries
from sptar.io.manifest import (
    MANIFEST,
    input_hashes,
    is_fresh,
    log_name,
    read_manifest,
    write_manifest,
)
from sptar.io.paths import Paths
from sptar.run.shards import resolve_shard
from sptar.run.stagelog import set_label, stage_log
from sptar.systems import SYSTEMS, TRAINED, WEAK_VARIANTS

log = logging.getLogger(__name__)

# stage name -> (module, {option: allowed values})
STAGES: dict[str, tuple[str, dict[str, tuple[str, ...]]]] = {  # in pipeline order
    "data": ("sptar.stages.data", {}),
    "split": ("sptar.stages.split", {}),
    "tune": ("sptar.stages.tune", {}),
    "generate": ("sptar.stages.generate", {"variant": WEAK_VARIANTS}),
    "filter": ("sptar.stages.filter", {"variant": WEAK_VARIANTS}),
    "export": ("sptar.stages.export", {"variant": WEAK_VARIANTS}),
    "train": ("sptar.stages.train", {"variant": TRAINED}),
    "evaluate": ("sptar.stages.evaluate", {"system": SYSTEMS}),
    "report": ("sptar.stages.report", {}),
}
# run-time flags a stage's run() also takes: they say how to run, never what the output is
RUN_FLAGS: dict[str, tuple[str, ...]] = {
    "generate": ("overwrite", "shard", "num_shards"),
    "evaluate": ("shard", "num_shards"),
}
# a run() that returns {PARTIAL: "why"} did its share only (e.g. one shard): no manifest yet
PARTIAL = "partial"


def paths_for(cfg: Config, root: str | Path | None = None) -> Paths:
    return Paths.for_experiment(cfg.experiment, cfg.dataset.name, root)


def seed_everything(seed: int) -> None:
    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return
    torch.manual_seed(seed)


def _check_options(stage: str, options: dict[str, Any]) -> None:
    allowed = STAGES[stage][1]
    for key, values in allowed.items():
        value = options.get(key)
        if value not in values:
            raise SptarError(f"sptar {stage}: --{key} must be one of {', '.join(values)}, got {value!r}"
                             f" (fix: e.g. sptar {stage} --{key} {values[0]})")
    extra = set(options) - set(allowed)
    if extra:
        raise SptarError(f"sptar {stage}: unexpected option(s) {sorted(extra)}")


def plan(cfg: Config, paths: Paths) -> list[dict[str, Any]]:
    """A dry run: every stage with each of its options resolved without running anything or
    loading a model: the config it depends on (a missing key fails here), its hash, its folder,
    the manifests it needs, and its state (``done``, ``stale`` or ``not run``)."""
    from sptar.models import ALIASES, resolve_model

    for name in (cfg.models.llm, cfg.models.encoder):
        if name not in ALIASES:  # aliases resolve by converting or finding weights: not here
            resolve_model(name)
    rows = []
    for stage, (module_name, options) in STAGES.items():
        module = importlib.import_module(module_name)
        for values in itertools.product(*options.values()):
            chosen = dict(zip(options, values, strict=True))
            names = module.sections(**chosen)
            config_hash = cfg.section_hash(*names)
            folder = module.output_dir(paths, **chosen)
            needed = [Path(p) for p in module.upstream(cfg, paths, **chosen)]
            state = "not run"
            if (folder / MANIFEST).is_file():
                ready = all(p.is_file() for p in needed)
                inputs = _inputs(module, cfg, needed, chosen) if ready else {}
                state = "done" if ready and is_fresh(folder, config_hash, inputs) else "stale"
            rows.append({"stage": stage, "options": chosen, "sections": list(names),
                         "config_hash": config_hash, "folder": str(folder),
                         "upstream": [str(p) for p in needed], "state": state})
    return rows


def _inputs(module, cfg: Config, needed: list[Path], options: dict[str, Any]) -> dict[str, str]:
    """What a stage's manifest records it read: the upstream manifests' hashes and the stage's
    own ``source_digests``."""
    inputs = input_hashes(needed)
    if hasattr(module, "source_digests"):
        inputs.update(module.source_digests(cfg, **options))
    return inputs


def execute(stage: str, cfg: Config, paths: Paths, *, force: bool = False,
            flags: dict[str, Any] | None = None, **options: Any) -> dict[str, Any]:
    """Run one stage unless its manifest is up to date; return its manifest.

    ``flags`` are the stage's :data:`RUN_FLAGS` (passed to ``run``, not part of the manifest).
    """
    if stage not in STAGES:
        raise SptarError(f"unknown stage {stage!r} (fix: one of {', '.join(STAGES)})")
    _check_options(stage, options)
    flags = {key: value for key, value in (flags or {}).items() if value is not None}
    unknown = set(flags) - set(RUN_FLAGS.get(stage, ()))
    if unknown:
        raise SptarError(f"sptar {stage}: unexpected flag(s) {sorted(unknown)}")
    module = importlib.import_module(STAGES[stage][0])
    folder = module.output_dir(paths, **options)
    needed = [Path(p) for p in module.upstream(cfg, paths, **options)]
    missing = [p for p in needed if not p.is_file()]
    if missing:
        raise SptarError(f"{missing[0]}: an earlier stage has not finished"
                         f" (fix: run the stage that writes {missing[0].parent} first, e.g. make all)")
    names = module.sections(**options)
    config_hash = cfg.section_hash(*names)
    inputs = _inputs(module, cfg, needed, options)
    label = " ".join([stage, *(str(v) for v in options.values())])
    set_label(label)
    if not force and is_fresh(folder, config_hash, inputs):
        log.info("%s: up to date (%s), skipped", label, folder / MANIFEST,
                 extra={"status": "up to date, skipped"})
        return read_manifest(folder) or {}
    (folder / MANIFEST).unlink(missing_ok=True)  # a re-run never leaves an old manifest behind
    if not RUN_FLAGS.get(stage):  # a stage run as several processes (shards) cleans up itself
        remove_stale_temporaries(folder, recursive=True)  # what a killed run was writing
        remove_stale_temporaries(folder.parent, folder.name)
    shard, _ = resolve_shard(flags.get("shard"), flags.get("num_shards"))
    with stage_log(folder, log_name(shard)) as log_file:
        log.info("%s: running -> %s", label, folder, extra={"status": f"started, full log: {log_file}"})
        seed_everything(cfg.seed)
        started, cpu_started = time.time(), time.process_time()
        summary = module.run(cfg, paths, **options, **flags) or {}
        if summary.get(PARTIAL):
            log.info("%s: %s; no manifest written yet", label, summary[PARTIAL],
                     extra={"status": f"{summary[PARTIAL]}; no manifest written yet"})
            return summary
        manifest = write_manifest(folder, stage=stage, options=options, config=cfg.sections(*names),
                                  config_hash=config_hash, inputs=inputs, seed=cfg.seed,
                                  summary=summary, started=started,
                                  cpu_started=cpu_started)
        seconds = manifest["wall_time_s"]
        log.info("%s: done in %.1f s", label, seconds, extra={"status": f"done in {seconds:.1f} s"})
    return manifest
