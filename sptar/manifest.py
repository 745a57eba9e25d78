"""``manifest.json``: written last by every stage; its presence means the stage finished.

It records the stage's resolved config (the sections it depends on) and their hash, the hashes
of the upstream manifests it read, its summary counts, wall time, seed and package versions. A
stage whose manifest matches the current config and inputs is skipped.
"""

from __future__ import annotations

import platform
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from sptar.formats import read_json, sha256_file, write_json

VERSIONED_PACKAGES = ("sptar", "torch", "transformers", "peft", "sentence-transformers",
                      "faiss-cpu", "faiss-gpu-cu12", "bm25s", "rank-bm25", "beir",
                      "pytrec-eval-terrier", "numpy")
MANIFEST = "manifest.json"


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def input_hashes(manifests: list[Path]) -> dict[str, str]:
    return {str(path): sha256_file(path)[:16] for path in manifests}


def is_fresh(folder: Path, config_hash: str, inputs: dict[str, str]) -> bool:
    path = folder / MANIFEST
    if not path.is_file():
        return False
    try:
        manifest = read_json(path)
    except Exception:
        return False
    return manifest.get("config_hash") == config_hash and manifest.get("inputs") == inputs


def write_manifest(folder: Path, *, stage: str, options: dict[str, Any], config: dict[str, Any],
                   config_hash: str, inputs: dict[str, str], seed: int, summary: dict[str, Any],
                   started: float) -> dict[str, Any]:
    finished = time.time()
    manifest = {
        "stage": stage,
        "options": options,
        "config_hash": config_hash,
        "config": config,
        "inputs": inputs,
        "seed": seed,
        "summary": summary,
        "wall_time_s": round(finished - started, 3),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(finished)),
        "versions": package_versions(),
    }
    write_json(folder / MANIFEST, manifest)
    return manifest


def read_manifest(folder: Path) -> dict[str, Any] | None:
    path = folder / MANIFEST
    return read_json(path) if path.is_file() else None
