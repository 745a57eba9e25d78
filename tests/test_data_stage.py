"""The data stage copies a validated dataset, or fails leaving nothing half-copied."""

from __future__ import annotations

import json
import shutil
import zipfile

import pytest

from sptar.errors import SptarError
from sptar.outputs.dataset import load_beir
from sptar.run.runner import execute, paths_for
from sptar.stages.data import check_md5, safe_extract

from .conftest import FIXTURES


def test_copies_from_mirror_and_writes_manifest(tiny_cfg, tiny_paths):
    manifest = execute("data", tiny_cfg(), tiny_paths)
    assert manifest["summary"]["documents"] == 36
    assert manifest["summary"]["splits"]["test"] == {"queries": 5, "judgements": 5}
    assert (tiny_paths.beir / "manifest.json").is_file()
    dataset = load_beir(tiny_paths.beir)
    assert set(dataset.qrels) == {"train", "test"}
    again = execute("data", tiny_cfg(), tiny_paths)  # up to date: skipped, same manifest
    assert again["finished_at"] == manifest["finished_at"]


def _broken_mirror(tmp_path, edit):
    mirror = tmp_path / "mirror"
    shutil.copytree(FIXTURES / "beir" / "tiny", mirror / "tiny")
    edit(mirror / "tiny")
    return mirror


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.joinpath("corpus.jsonl").write_text(
        d.joinpath("corpus.jsonl").read_text() + '{"_id": "d99", "text": \n'), "corpus.jsonl:37: malformed JSON"),
    (lambda d: d.joinpath("qrels", "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\nq10\tzzz\t1\n"), "test.tsv:2: unknown document id 'zzz'"),
    (lambda d: d.joinpath("qrels", "test.tsv").unlink(), "split 'test' does not exist"),
    (lambda d: d.joinpath("queries.jsonl").write_bytes(b'{"_id": "q1", "text": "\xff"}\n'),
     "queries.jsonl:1: not valid UTF-8"),
])
def test_bad_dataset_fails_cleanly_and_keeps_previous_copy(tmp_path, tiny_cfg, monkeypatch, edit,
                                                           message):
    cfg = tiny_cfg()
    paths = paths_for(cfg, tmp_path / "data")
    execute("data", cfg, paths)
    before = (paths.beir / "corpus.jsonl").read_bytes()
    mirror = _broken_mirror(tmp_path, edit)
    bad = tiny_cfg(f"dataset.mirror={mirror.relative_to(tmp_path)}")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SptarError, match=message):
        execute("data", bad, paths_for(bad, tmp_path / "data"), force=True)
    # the earlier good copy is intact and no temporary folder is left behind
    assert (paths.beir / "corpus.jsonl").read_bytes() == before
    assert sorted(p.name for p in paths.beir.parent.iterdir()) == ["tiny"]


def test_no_mirror_and_no_download_is_a_clear_error(tmp_path, tiny_cfg, monkeypatch):
    monkeypatch.delenv("SPTAR_DATA_MIRROR", raising=False)
    cfg = tiny_cfg("dataset.mirror=null", "dataset.download=false")
    with pytest.raises(SptarError, match="no mirror configured and downloads are off"):
        execute("data", cfg, paths_for(cfg, tmp_path / "data"))


def test_zip_slip_is_refused(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("scifact/corpus.jsonl", json.dumps({"_id": "a", "text": "b"}))
        zipped.writestr("../../escaped.txt", "gotcha")
    target = tmp_path / "out"
    target.mkdir()
    with pytest.raises(SptarError, match="outside the extraction folder"):
        safe_extract(archive, target)
    assert not (tmp_path / "escaped.txt").exists()
    assert list(target.iterdir()) == []


def test_md5_mismatch_deletes_the_download(tmp_path):
    archive = tmp_path / "scifact.zip"
    archive.write_bytes(b"not the real zip")
    with pytest.raises(SptarError, match="differs from BEIR's published"):
        check_md5(archive, "5f7d1de60b170fc8027bb7898e2efca1")
    assert not archive.exists()
