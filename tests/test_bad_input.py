"""Every bad input the user can give, through the CLI: one line naming the file (line, key) and
the fix, exit code 2, no traceback, and nothing written by the stage that refused it.

One table, one case per kind of mistake: the dataset files (via ``sptar data``), the pipeline
config, model names, the split, the order of stages, and downloaded zips.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import urllib.request
import zipfile
from pathlib import Path

import pytest

import sptar.stages.data
from sptar.cli import main

from .conftest import FIXTURES

DOC = '{"_id": "d99", "title": "T", "text": "x"}'


def _append(name: str, text: str | bytes):
    def edit(folder: Path) -> None:
        with (folder / name).open("ab") as handle:
            handle.write(text if isinstance(text, bytes) else text.encode())
    return edit


def _write(name: str, content: str | bytes):
    def edit(folder: Path) -> None:
        path = folder / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return edit


def _delete(name: str):
    return lambda folder: (folder / name).unlink()


def _no_qrels(folder: Path) -> None:
    shutil.rmtree(folder / "qrels")


# id -> (edit of a copy of the tiny dataset, expected start of the message, a fragment after it)
DATASET_CASES = {
    "corpus malformed JSON": (_append("corpus.jsonl", '{"_id": "d99", "text": \n'),
                              "corpus.jsonl:37: malformed JSON", "fix: make every line one JSON object"),
    "corpus line not an object": (_append("corpus.jsonl", "[1, 2]\n"),
                                  "corpus.jsonl:37: expected a JSON object, got list", "fix:"),
    "corpus missing _id": (_append("corpus.jsonl", '{"title": "t", "text": "x"}\n'),
                           "corpus.jsonl:37: missing field '_id'", "fix: give every line an '_id'"),
    "corpus missing text": (_append("corpus.jsonl", '{"_id": "d99", "title": "t"}\n'),
                            "corpus.jsonl:37: missing field 'text'", "fix:"),
    "corpus id not a string": (_append("corpus.jsonl", '{"_id": ["d99"], "text": "x"}\n'),
                               "corpus.jsonl:37: '_id' must be a string, got list", "fix:"),
    "corpus text not a string": (_append("corpus.jsonl", '{"_id": "d99", "text": 5}\n'),
                                 "corpus.jsonl:37: 'text' must be a string, got int", "fix:"),
    "corpus empty text": (_append("corpus.jsonl", '{"_id": "d99", "title": " ", "text": ""}\n'),
                          "corpus.jsonl:37: document 'd99' has empty title and text", "fix:"),
    "corpus duplicate id": (_append("corpus.jsonl", '{"_id": "d07", "text": "again"}\n'),
                            "corpus.jsonl:37: duplicate document id 'd07'",
                            "fix: make document ids unique"),
    "corpus not UTF-8": (_append("corpus.jsonl", b'{"_id": "d99", "text": "caf\xe9"}\n'),
                         "corpus.jsonl:37: not valid UTF-8", "fix: re-encode the file as UTF-8"),
    "corpus empty file": (_write("corpus.jsonl", "\n\n"), "corpus.jsonl: file is empty", "fix:"),
    "corpus missing file": (_delete("corpus.jsonl"), "corpus.jsonl: file not found", "fix:"),
    "queries empty text": (_append("queries.jsonl", '{"_id": "q99", "text": "  "}\n'),
                           "queries.jsonl:15: query 'q99' has empty text", "fix:"),
    "queries duplicate id": (_append("queries.jsonl", '{"_id": "q03", "text": "again"}\n'),
                             "queries.jsonl:15: duplicate query id 'q03'", "fix:"),
    "queries not UTF-8": (_write("queries.jsonl", b'{"_id": "q1", "text": "\xff"}\n'),
                          "queries.jsonl:1: not valid UTF-8", "fix:"),
    "qrels wrong header": (_write("qrels/test.tsv", "q10\td11\t1\n"),
                           "qrels/test.tsv:1: wrong header 'q10\\td11\\t1'",
                           "fix: the first line must be 'query-id<TAB>corpus-id<TAB>score'"),
    "qrels unknown query id": (_append("qrels/test.tsv", "q99\td11\t1\n"),
                               "qrels/test.tsv:7: unknown query id 'q99'", "fix: add the query"),
    "qrels unknown document id": (_append("qrels/test.tsv", "q10\tzzz\t1\n"),
                                  "qrels/test.tsv:7: unknown document id 'zzz'", "fix: add the document"),
    "qrels two fields": (_append("qrels/train.tsv", "q01\td01\n"),
                         "qrels/train.tsv:12: expected 3 tab-separated fields, got 2", "fix:"),
    "qrels score not an integer": (_append("qrels/test.tsv", "q10\td12\thigh\n"),
                                   "qrels/test.tsv:7: score 'high' is not an integer", "fix:"),
    "qrels duplicate judgement": (_append("qrels/test.tsv", "q10\td11\t2\n"),
                                  "qrels/test.tsv:7: duplicate judgement ('q10', 'd11')", "fix:"),
    "evaluation split missing": (_delete("qrels/test.tsv"),
                                 "qrels/test.tsv: split 'test' does not exist (has: train)",
                                 "fix: name an existing split"),
    "no qrels at all": (_no_qrels, "qrels: no qrels/<split>.tsv files", "fix:"),
}


@pytest.fixture
def cli(tmp_path, monkeypatch, capsys):
    """``cli(*argv) -> (exit code, error line)`` with the tiny pipeline, a data root and a mirror
    under ``tmp_path``; every error must be exactly one ``sptar: error:`` line, no traceback."""
    monkeypatch.setenv("SPTAR_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("SPTAR_DATA_MIRROR", str(tmp_path / "mirror"))
    shutil.copytree(FIXTURES / "beir" / "tiny", tmp_path / "mirror" / "tiny")

    def run(*argv: str) -> tuple[int, str]:
        if "--config" not in argv:
            argv = (*argv, "--config", "tiny", "--set", "dataset.mirror=null")
        code = main(list(argv))
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.startswith("sptar: error: ")]
        assert "Traceback" not in err
        assert len(lines) == (code != 0), err
        return code, lines[0].removeprefix("sptar: error: ") if lines else ""

    return run


@pytest.mark.parametrize("case", list(DATASET_CASES))
def test_bad_dataset_file(cli, tmp_path, case):
    edit, start, fragment = DATASET_CASES[case]
    edit(tmp_path / "mirror" / "tiny")
    code, message = cli("data")
    assert code == 2
    assert message.startswith(f"{tmp_path / 'mirror' / 'tiny'}/{start}"), message
    assert fragment in message
    assert not (tmp_path / "data" / "beir").exists()  # nothing copied, not even in part


def test_crlf_and_a_byte_order_mark_are_fine(cli, tmp_path):
    folder = tmp_path / "mirror" / "tiny"
    for path in [folder / "corpus.jsonl", folder / "queries.jsonl", *folder.glob("qrels/*.tsv")]:
        text = path.read_text(encoding="utf-8").replace("\n", "\r\n")
        path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert cli("data") == (0, "")
    assert cli("split") == (0, "")


CONFIG_CASES = {  # id -> (YAML text or None, --set overrides, expected start, fragment)
    "unknown key": ("dataset:\n  name: tiny\nsplit:\n  n_prompt_tran: 6\n", [],
                    "{path}:4: key 'split.n_prompt_tran': unknown key", "fix: remove it"),
    "wrong type": ("dataset:\n  name: tiny\nsplit:\n  n_prompt_train: many\n", [],
                   "{path}:4: key 'split.n_prompt_train': Input should be a valid integer",
                   "fix: correct the value"),
    "out of range": ("dataset:\n  name: tiny\nbm25:\n  b: 1.5\n", [],
                     "{path}:4: key 'bm25.b': Input should be less than or equal to 1", "fix:"),
    "missing required key": ("seed: 3\n", [], "{path}: key 'dataset': missing required key",
                             "fix: add it"),
    "not valid YAML": ("dataset:\n  name: a\n  - b\n", [], "{path}:3: not valid YAML", "fix:"),
    "not a mapping": ("- dataset\n- split\n", [], "{path}: expected a mapping of sections", "fix:"),
    "not UTF-8": (b"dataset:\n  name: caf\xe9\n", [], "{path}: not valid UTF-8", "fix:"),
    "bad device": ("dataset:\n  name: tiny\ndevice: gpu\n", [],
                   "{path}:3: key 'device': Value error, device must be auto", "fix:"),
    "absolute mirror path": ("dataset:\n  name: tiny\n  mirror: /etc\n", [],
                             "{path}:3: key 'dataset.mirror': Value error, dataset.mirror must be"
                             " relative", "fix:"),
    "dataset name escapes data/": ("dataset:\n  name: ../x\n", [],
                                   "{path}:2: key 'dataset.name': Value error, dataset name '../x'"
                                   " must be a plain name", "not a path"),
    "absolute dataset name": ("dataset:\n  name: /etc/passwd\n", [],
                              "{path}:2: key 'dataset.name': Value error, dataset name"
                              " '/etc/passwd' must be a plain name", "fix:"),
    "experiment name escapes data/": (None, ["experiment=../../tmp/x"],
                                      "--set experiment: key 'experiment': Value error, experiment"
                                      " '../../tmp/x' must be a plain name", "fix:"),
    "override without =": (None, ["split.n_prompt_train"],
                           "--set 'split.n_prompt_train': expected section.key=value", "fix:"),
    "override of an unknown key": (None, ["split.nope=1"],
                                   "--set split.nope: key 'split.nope': unknown key", "fix:"),
    "override of the wrong type": (None, ["split.n_prompt_train=abc"],
                                   "--set split.n_prompt_train: key 'split.n_prompt_train': Input"
                                   " should be a valid integer", "fix:"),
    "missing config file": (None, ["--config", "no-such-pipeline"],
                            "pipelines/no-such-pipeline.yaml: config file not found",
                            "fix: pick one of pipelines/"),
}


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_bad_config(cli, tmp_path, case):
    text, overrides, start, fragment = CONFIG_CASES[case]
    path = tmp_path / "exp.yaml"
    argv = ["split"]
    if text is not None:
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        argv += ["--config", str(path)]
    if overrides and overrides[0] == "--config":
        argv += overrides
    else:
        argv += ["--config", "tiny"] * (text is None)
        argv += [arg for item in overrides for arg in ("--set", item)]
    code, message = cli(*argv)
    assert code == 2
    assert message.startswith(start.format(path=path)), message
    assert fragment in message
    assert not (tmp_path / "data").exists()


MODEL_CASES = {  # id -> (--set value, expected start, fragment)
    "unknown alias": ("models.encoder=minilm", "model 'minilm' is not an alias (all-minilm-l6-v2,"
                      " smollm2-135m), an existing folder, or a Hugging Face id like org/name",
                      "fix: correct the models section"),
    "missing folder": ("models.encoder=/nonexistent/encoder", "model '/nonexistent/encoder' is not"
                       " an alias", "fix:"),
    "folder that is no model": ("models.encoder={tmp}/mirror", "{tmp}/mirror: not a model folder"
                                " (no config.json)", "fix: point to a folder written by"
                                " save_pretrained"),
    "Hugging Face id not in the local cache": ("models.encoder=no-such-org/no-such-model",
                                               "model 'no-such-org/no-such-model' could not be"
                                               " loaded", "models.download: true fetches a"
                                               " missing one"),
}


@pytest.mark.parametrize("case", list(MODEL_CASES))
def test_bad_model_name(cli, tmp_path, case):
    setting, start, fragment = MODEL_CASES[case]
    assert cli("data") == (0, "") and cli("split") == (0, "")
    code, message = cli("evaluate", "--system", "zero-shot", "--config", "tiny",
                        "--set", "dataset.mirror=null", "--set", setting.format(tmp=tmp_path))
    assert code == 2
    assert message.startswith(start.format(tmp=tmp_path)), message
    assert fragment in message
    assert not (tmp_path / "data" / "runs" / "tiny" / "evaluate").exists()


STAGE_CASES = {  # id -> (argv, expected start, fragment)
    "stage before its upstream": (["split"], "{tmp}/data/beir/tiny/manifest.json: an earlier stage"
                                  " has not finished", "fix: run the stage that writes"),
    "split asks for too many queries": (["split", "--set", "split.n_prompt_train=10"],
                                        "split.n_prompt_train + split.n_prompt_eval = 13, but the"
                                        " 'train' split has only 9 usable labeled queries",
                                        "fix: lower them"),
    "labeled pairs from the test split": (["split", "--set", "split.source_split=test"],
                                          "split.source_split is 'test', the test split",
                                          "never from test"),
    "labeled pairs from a split that does not exist": (
        ["split", "--set", "split.source_split=dev"],
        "{tmp}/data/beir/tiny/qrels/dev.tsv: split 'dev' does not exist (has: test, train)",
        "fix: name an existing split"),
    "validation split that does not exist": (
        ["split", "--set", "split.validation=dev"],
        "{tmp}/data/beir/tiny/qrels/dev.tsv: split 'dev' does not exist (has: test, train)",
        "fix: name an existing split"),
    "validation from the test split": (["split", "--set", "split.validation=test"],
                                       "split.validation is 'test', which is also the test split",
                                       "fix: use rest, none"),
    "evaluation split that does not exist": (["data", "--set", "evaluate.test_split=dev"],
                                             "{tmp}/mirror/tiny/qrels/dev.tsv: split 'dev' does"
                                             " not exist (has: test, train)", "fix:"),
}


@pytest.mark.parametrize("case", list(STAGE_CASES))
def test_bad_stage_request(cli, tmp_path, case):
    argv, start, fragment = STAGE_CASES[case]
    if argv[0] == "split" and "split." in " ".join(argv):
        assert cli("data") == (0, "")
    code, message = cli(*argv, "--config", "tiny", "--set", "dataset.mirror=null")
    assert code == 2
    assert message.startswith(start.format(tmp=tmp_path)), message
    assert fragment in message
    assert not list((tmp_path / "data").glob(f"**/{argv[0]}/manifest.json"))


# ---------------------------------------------------------------- downloads


def _zip(members: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zipped:
        for name, text in members.items():
            zipped.writestr(name, text)
    return buffer.getvalue()


DOWNLOAD_CASES = {  # id -> (served bytes, published md5 or None for the bytes' own, start, fragment)
    "zip writes outside its folder": (
        _zip({"scifact/corpus.jsonl": DOC, "../../escaped.txt": "x"}), None,
        "member '../../escaped.txt' would be written outside the extraction folder",
        "fix: use a trusted archive"),
    "checksum differs": (b"not the published zip", "5f7d1de60b170fc8027bb7898e2efca1",
                         "md5 " + hashlib.md5(b"not the published zip").hexdigest()
                         + " differs from BEIR's published 5f7d1de60b170fc8027bb7898e2efca1;"
                         " the file was deleted", "fix: download again"),
    "not a zip": (b"<html>proxy login</html>", None, "not a valid zip", "fix: delete it"),
}


@pytest.mark.parametrize("case", list(DOWNLOAD_CASES))
def test_bad_download(cli, tmp_path, monkeypatch, case):
    served, md5, start, fragment = DOWNLOAD_CASES[case]
    monkeypatch.delenv("SPTAR_DATA_MIRROR")
    monkeypatch.setitem(sptar.stages.data.BEIR_MD5, "scifact", md5 or hashlib.md5(served).hexdigest())
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: io.BytesIO(served))
    code, message = cli("data", "--config", "tiny", "--set", "dataset.mirror=null",
                        "--set", "dataset.name=scifact", "--set", "dataset.download=true")
    archive = tmp_path / "data" / "cache" / "downloads" / "scifact.zip"
    assert code == 2
    assert message.startswith(f"{archive}: {start}"), message
    assert fragment in message
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "data" / "beir").exists()
    assert not list(archive.parent.glob("scifact/*"))  # nothing extracted


def test_download_of_an_unknown_dataset_is_refused(cli, monkeypatch):
    monkeypatch.delenv("SPTAR_DATA_MIRROR")
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: pytest.fail("downloaded"))
    code, message = cli("data", "--config", "tiny", "--set", "dataset.mirror=null",
                        "--set", "dataset.download=true")
    assert code == 2
    assert message.startswith("dataset 'tiny' is not an official BEIR zip")
