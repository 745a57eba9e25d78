"""Data stage: materialise a BEIR dataset, validated, into ``data/beir/<name>/``.

Reads: ``<mirror>/<name>/`` when a mirror folder is configured (``dataset.mirror``, else the
``SPTAR_DATA_MIRROR`` environment variable), otherwise the official BEIR zip (downloaded only
when ``dataset.download`` is true, and checked against BEIR's published md5). With
``dataset.corpus`` set, a local corpus and labeled examples instead (see :mod:`sptar.io.own`).
Writes: ``data/beir/<name>/{corpus.jsonl, queries.jsonl, qrels/<split>.tsv, manifest.json}``.

Everything is validated before anything is written (malformed JSON, missing fields, duplicate
ids, qrels naming unknown ids, missing splits, non-UTF-8); the folder appears whole or not at all.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import urllib.request
import zipfile
from pathlib import Path

from sptar.config import Config
from sptar.errors import SptarError
from sptar.io.atomic import atomic_dir
from sptar.io.paths import Paths
from sptar.outputs.dataset import copy_dataset, corpus_file, dataset_files, load_beir, write_dataset
from sptar.run.resources import check_disk_space

log = logging.getLogger(__name__)

MIRROR_ENV = "SPTAR_DATA_MIRROR"
BEIR_URL = "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/{name}.zip"
# md5 of each official zip, as published in BEIR's README.
BEIR_MD5 = {
    "msmarco": "444067daf65d982533ea17ebd59501e4",
    "trec-covid": "ce62140cb23feb9becf6270d0d1fe6d1",
    "nfcorpus": "a89dba18a62ef92f7d323ec890a0d38d",
    "nq": "d4d3d2e48787a744b6f6e691ff534307",
    "hotpotqa": "f412724f78b0d91183a0e86805e16114",
    "fiqa": "17918ed23cd04fb15047f73e6c3bd9d9",
    "arguana": "8ad3e3c2a5867cdced806d6503f29b99",
    "webis-touche2020": "46f650ba5a527fc69e0a6521c5a23563",
    "cqadupstack": "4e41456d7df8ee7760a7f866133bda78",
    "quora": "18fb154900ba42a600f84b839c173167",
    "dbpedia-entity": "c2a39eb420a3164af735795df012ac2c",
    "scidocs": "38121350fc3a4d2f48850f6aff52e4a9",
    "fever": "5a818580227bfb4b35bb6fa46d9b6c03",
    "climate-fever": "8b66f0a9126c521bae2bde127b4dc99d",
    "scifact": "5f7d1de60b170fc8027bb7898e2efca1",
}


# ---------------------------------------------------------------- stage


def sections() -> tuple[str, ...]:
    return ("dataset.name", "dataset.corpus", "dataset.examples", "dataset.test_examples",
            "evaluate.test_split")


def output_dir(paths: Paths) -> Path:
    return paths.beir


def upstream(cfg: Config, paths: Paths) -> list[Path]:
    return []


def source_digests(cfg: Config) -> dict[str, str]:
    """The content hashes of a local corpus and examples: an edit there re-runs the stage."""
    from sptar.io.own import source_digests as digests

    return digests(cfg)


def run(cfg: Config, paths: Paths) -> dict:
    if cfg.dataset.corpus is not None:
        return _convert_local(cfg, paths)
    source = _find_source(cfg, paths)
    log.info("validating %s", source)
    dataset = load_beir(source)
    needed = [cfg.evaluate.test_split]
    needed += [name for name in (cfg.split.source_split, cfg.split.validation)
               if name not in ("auto", "rest", "none")]
    for name in needed:
        dataset.split(name)
    files = dataset_files(source, dataset.qrels)
    check_disk_space(paths.beir.parent, sum(f.stat().st_size for f in files), "the dataset copy")
    with atomic_dir(paths.beir) as tmp:
        copy_dataset(source, tmp, dataset.qrels)
    return {
        "source": str(source),
        "documents": len(dataset.corpus),
        "queries": len(dataset.queries),
        "splits": {name: {"queries": len(q), "judgements": sum(map(len, q.values()))}
                   for name, q in dataset.qrels.items()},
    }


def _convert_local(cfg: Config, paths: Paths) -> dict:
    from sptar.io.own import build_dataset

    local = build_dataset(cfg)
    with atomic_dir(paths.beir) as tmp:
        write_dataset(tmp, local.corpus, local.queries, local.qrels)
    if cfg.evaluate.test_split not in local.qrels:
        log.warning("no %s split (dataset.test_examples is not set): the pipeline makes training "
                    "data; sptar evaluate and sptar report will have nothing to evaluate",
                    cfg.evaluate.test_split)
    return {
        "source": cfg.dataset.corpus.path if cfg.dataset.corpus else None,
        "documents": len(local.corpus),
        "queries": len(local.queries),
        "splits": {name: {"queries": len(q), "judgements": sum(map(len, q.values()))}
                   for name, q in local.qrels.items()},
        **local.counts,
    }


def _find_source(cfg: Config, paths: Paths) -> Path:
    name = cfg.dataset.name
    mirror = cfg.dataset.mirror or os.environ.get(MIRROR_ENV)
    if mirror:
        folder = Path(mirror) / name
        if folder.is_dir():
            return folder
        if not cfg.dataset.download:
            raise SptarError(f"{folder}: dataset {name!r} not in the mirror folder"
                             f" (fix: check dataset.mirror / ${MIRROR_ENV}, or allow dataset.download)")
        log.warning("%s not found in mirror %s; downloading instead", name, mirror)
    if not cfg.dataset.download:
        raise SptarError(f"dataset {name!r}: no mirror configured and downloads are off"
                         f" (fix: set ${MIRROR_ENV} or dataset.mirror, or dataset.download: true)")
    return _download(name, paths.cache / "downloads")


def _download(name: str, folder: Path) -> Path:
    if name not in BEIR_MD5:
        raise SptarError(f"dataset {name!r} is not an official BEIR zip (known: "
                         f"{', '.join(sorted(BEIR_MD5))}) (fix: use a mirror folder for other data)")
    archive = folder / f"{name}.zip"
    if not archive.is_file():
        url = BEIR_URL.format(name=name)
        log.info("downloading %s", url)
        folder.mkdir(parents=True, exist_ok=True)
        partial = archive.with_suffix(".zip.part")
        try:
            with urllib.request.urlopen(url, timeout=60) as response, partial.open("wb") as out:
                shutil.copyfileobj(response, out, length=1 << 20)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            raise SptarError(f"{url}: download failed ({exc}) (fix: check the network, or set "
                             f"${MIRROR_ENV} to a folder holding {name}/)") from None
        os.replace(partial, archive)
    check_md5(archive, BEIR_MD5[name])
    extracted = folder / name
    if not corpus_file(extracted / name).is_file():
        with atomic_dir(extracted) as tmp:
            safe_extract(archive, tmp)
    return extracted / name


def check_md5(archive: Path, expected: str) -> None:
    digest = hashlib.md5(usedforsecurity=False)
    with archive.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    if digest.hexdigest() != expected:
        archive.unlink()
        raise SptarError(f"{archive}: md5 {digest.hexdigest()} differs from BEIR's published "
                         f"{expected}; the file was deleted (fix: download again)")


def safe_extract(archive: Path, target: Path) -> None:
    """Extract a zip, refusing any member that would land outside ``target``."""
    root = target.resolve()
    try:
        with zipfile.ZipFile(archive) as zipped:
            for member in zipped.infolist():
                destination = (root / member.filename).resolve()
                if destination != root and root not in destination.parents:
                    raise SptarError(f"{archive}: member {member.filename!r} would be written "
                                     "outside the extraction folder (fix: use a trusted archive)")
            zipped.extractall(root)
    except zipfile.BadZipFile as exc:
        raise SptarError(f"{archive}: not a valid zip ({exc}) (fix: delete it and download again)") from None
