"""``manifest.json``: written last by every stage; its presence means the stage finished.

It records the stage's resolved config (the sections it depends on) and their hash, the hashes
of the upstream manifests it read, its summary counts, wall time, seed and package versions. A
stage whose manifest matches the current config and inputs is skipped.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from sptar.io.formats import read_json, sha256_file, write_json

VERSIONED_PACKAGES = ("sptar", "torch", "transformers", "peft", "sentence-transformers",
                      "faiss-cpu", "faiss-gpu-cu12", "bm25s", "rank-bm25", "beir",
                      "pytrec-eval-terrier", "numpy")
MANIFEST = "manifest.json"
LOG = "log.txt"  # the stage's log (sptar.run.stagelog): no output of the stage
_SHARD_LOG = re.compile(r"log-shard[0-9]+\.txt")


def log_name(shard: int = 0) -> str:
    """The log file of shard ``shard`` of a stage run as several processes (0: ``log.txt``)."""
    return f"log-shard{shard}.txt" if shard else LOG


def is_log(relative: Path) -> bool:
    """Whether ``relative`` (a path inside a stage folder) is one of the stage's logs."""
    return len(relative.parts) == 1 and (relative.name == LOG or bool(_SHARD_LOG.fullmatch(relative.name)))


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def outputs_digest(folder: Path) -> str:
    """A content hash of everything a stage wrote (its files, not its manifest, its logs or
    temporaries)."""
    digest = hashlib.sha256()
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST
                   and not is_log(p.relative_to(folder))
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    for file in files:
        digest.update(str(file.relative_to(folder)).encode() + b"\0")
        digest.update(sha256_file(file).encode())
    return digest.hexdigest()[:16]


def manifests(*folders: Path) -> list[Path]:
    """The manifests of finished stage folders: what a stage's ``upstream()`` lists."""
    return [folder / MANIFEST for folder in folders]


def input_key(path: str | Path) -> str:
    """An upstream manifest's key among a stage's inputs: its path inside the experiment's folder
    (``split/manifest.json``) or from the data root (``beir/<dataset>/manifest.json``), so that a
    run's folders keep their meaning when copied or linked into another experiment or data root
    (older manifests, keyed by the whole path, compare the same way)."""
    parts = Path(path).parts
    if not parts or parts[-1] != MANIFEST:
        return str(path)  # a source digest (a local corpus file), not a manifest
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "beir":
            return "/".join(parts[i:])
        if parts[i] == "runs" and i + 2 < len(parts):
            return "/".join(parts[i + 2:])
    return str(path)


def input_hashes(manifests: list[Path]) -> dict[str, str]:
    """What a stage read: each upstream stage's output digest (so an upstream re-run that writes
    the same files does not make the downstream stages run again)."""
    hashes = {}
    for path in manifests:
        recorded = read_json(path).get("outputs")
        hashes[input_key(path)] = recorded if isinstance(recorded, str) else sha256_file(path)[:16]
    return hashes


def is_fresh(folder: Path, config_hash: str, inputs: dict[str, str]) -> bool:
    path = folder / MANIFEST
    if not path.is_file():
        return False
    try:
        manifest = read_json(path)
    except Exception:
        return False
    recorded = manifest.get("inputs")
    if not isinstance(recorded, dict):
        return False
    return (manifest.get("config_hash") == config_hash
            and {input_key(key): value for key, value in recorded.items()} == inputs)


def write_manifest(folder: Path, *, stage: str, options: dict[str, Any], config: dict[str, Any],
                   config_hash: str, inputs: dict[str, str], seed: int, summary: dict[str, Any],
                   started: float, cpu_started: float | None = None) -> dict[str, Any]:
    """``started``: ``time.time()`` and ``cpu_started``: ``time.process_time()`` at the start.

    CPU seconds (all threads of this process) next to wall seconds tell a slow stage from a
    stage that waited for a busy machine; the load average says how busy it was.
    """
    finished = time.time()
    manifest = {
        "stage": stage,
        "options": options,
        "config_hash": config_hash,
        "config": config,
        "inputs": inputs,
        "outputs": outputs_digest(folder),
        "seed": seed,
        "summary": summary,
        "wall_time_s": round(finished - started, 3),
        "cpu_time_s": None if cpu_started is None else round(time.process_time() - cpu_started, 3),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(finished)),
        "versions": package_versions(),
    }
    write_json(folder / MANIFEST, manifest)
    return manifest


def read_manifest(folder: Path) -> dict[str, Any] | None:
    path = folder / MANIFEST
    return read_json(path) if path.is_file() else None
