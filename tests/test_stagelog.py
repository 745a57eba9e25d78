"""What a stage shows while it runs: ``log.txt`` in its folder, throttled status lines."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import textwrap

import pytest

from sptar.errors import SptarError
from sptar.io.manifest import outputs_digest
from sptar.run.runner import execute
from sptar.run.stagelog import progress_lines, progress_text

from .conftest import ROOT

STATUS = re.compile(r"^\[[a-z -]+\] \S")


class Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture
def progress_records():
    handler = Records()
    logger = logging.getLogger("sptar.progress")
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.INFO)
    yield handler.records
    logger.removeHandler(handler)
    logger.setLevel(old)


def test_progress_text():
    assert progress_text("prompt tuning", 12, 30, "step", "loss=2.810", 65) == \
        "prompt tuning 12/30 steps (40%), loss=2.810, 1:05 elapsed, ~1:38 left"
    assert progress_text("BM25 ranks", 3, 3, "query", None, 4000.4, final=True) == \
        "BM25 ranks 3/3 queries (100%), took 1:06:40"
    assert progress_text("", 1500, None, "it", "", 7) == "progress 1,500 it, 0:07 elapsed"


def test_progress_lines_are_throttled_complete_lines(progress_records, capsys):
    from tqdm.auto import tqdm  # the class every module and the trainer use

    now = [0.0]
    with progress_lines(10.0, hide_bars=True, clock=lambda: now[0]):
        bar = tqdm(total=100, desc="weak queries", unit="doc", mininterval=0, miniters=1)
        for _ in range(100):
            now[0] += 1.0
            bar.update(1)
        bar.close()
        short = tqdm(total=3, desc="encoding corpus", unit="doc", mininterval=0, miniters=1)
        for _ in range(3):
            now[0] += 1.0
            short.update(1)
        short.close()
    assert capsys.readouterr().err == ""  # hidden bars draw nothing
    shown = [r for r in progress_records if r.status is not None]
    texts = [r.getMessage() for r in shown]
    assert len(shown) == 10, texts  # at 10, 20, ..., 90 s, and the bar's end (not also 100/100)
    assert all("\n" not in t and "\r" not in t and r.status == t for r, t in zip(shown, texts, strict=True))
    assert texts[0] == "weak queries 10/100 docs (10%), 0:10 elapsed, ~1:30 left"
    assert texts[-1] == "weak queries 100/100 docs (100%), took 1:40"
    # the short bar ended before its first line was due: its end goes to the log file only
    assert [r.getMessage() for r in progress_records if r.status is None] == \
        ["encoding corpus 3/3 docs (100%), took 0:03"]
    assert all(r.progress for r in progress_records)


def test_progress_lines_leave_tqdm_as_it_was():
    from tqdm import std

    before = {name: std.tqdm.__dict__[name] for name in ("__init__", "display", "close")}
    with progress_lines(1.0, hide_bars=True):
        assert std.tqdm.__dict__["display"] is not before["display"]
    assert {name: std.tqdm.__dict__[name] for name in before} == before


def test_a_stage_run_writes_its_log_which_is_no_output(tiny_cfg, tiny_paths):
    cfg = tiny_cfg()
    for stage in ("data", "split"):  # data replaces its whole folder (atomic_dir)
        manifest = execute(stage, cfg, tiny_paths)
        folder = tiny_paths.beir if stage == "data" else tiny_paths.stage(stage)
        text = (folder / "log.txt").read_text()
        assert f"INFO sptar.run.runner: {stage}: running -> {folder}" in text
        assert f"INFO sptar.run.runner: {stage}: done in " in text
        assert stage == "split" or "INFO sptar.stages.data: validating tests/fixtures/beir/tiny" in text
        assert manifest["outputs"] == outputs_digest(folder)
        (folder / "log.txt").write_text("another run's log")
        (folder / "log-shard1.txt").write_text("shard 1")
        assert outputs_digest(folder) == manifest["outputs"]
    skipped = execute("split", cfg, tiny_paths)  # up to date: its log stays the last run's
    assert skipped == manifest and (tiny_paths.stage("split") / "log.txt").read_text() == "another run's log"


def test_a_failed_stage_keeps_its_log_only_where_it_wrote_something(tiny_cfg, tiny_paths, monkeypatch):
    cfg = tiny_cfg()
    execute("data", cfg, tiny_paths)
    folder = tiny_paths.stage("split")

    def fails_at_once(cfg, paths):
        logging.getLogger("sptar.stages.split").info("reading the dataset")
        raise SptarError("queries.jsonl:3: bad line (fix: repair it)")

    monkeypatch.setattr("sptar.stages.split.run", fails_at_once)
    with pytest.raises(SptarError):
        execute("split", cfg, tiny_paths)
    assert not tiny_paths.runs.exists()  # nothing written: not even the log or its folders

    def fails_later(cfg, paths):
        (folder / "part.jsonl").write_text("{}\n")
        raise RuntimeError("a bug")

    monkeypatch.setattr("sptar.stages.split.run", fails_later)
    with pytest.raises(RuntimeError):
        execute("split", cfg, tiny_paths)
    text = (folder / "log.txt").read_text()
    assert "ERROR sptar.run.runner: failed with an unexpected error\nTraceback" in text
    assert "RuntimeError: a bug" in text and not (folder / "manifest.json").exists()


SCRIPT = textwrap.dedent("""
    import logging, sys, time
    from sptar.run.stagelog import set_label, setup_console, stage_log
    setup_console(quiet=False)
    set_label("generate sptar")
    with stage_log(sys.argv[1]) as path:
        (path.parent / "queries.jsonl").write_text("{}\\n")  # a stage that writes nothing leaves no log
        print("a library's print")
        print("a native message", file=sys.stderr)
        logging.getLogger("sptar.x").info("detail for the log")
        logging.getLogger("sptar.x").warning("careful\\nsecond line")
        from tqdm.auto import tqdm
        for _ in tqdm(range(4), desc="weak queries", unit="doc", mininterval=0):
            time.sleep(0.4)
    print("after the stage")
""")


def test_status_mode_shows_short_lines_and_logs_everything(tmp_path):
    env = {**os.environ, "SPTAR_CONSOLE": "status", "SPTAR_PROGRESS_SECONDS": "0.5",
           "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "stage")], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "after the stage\n"
    lines = result.stderr.splitlines()
    assert lines[0] == "[generate sptar] warning: careful [more in the log]"
    assert all(STATUS.match(line) for line in lines), lines
    assert any(re.fullmatch(r"\[generate sptar\] weak queries [123]/4 docs \(\d+%\), 0:0\d elapsed,"
                            r" ~0:0\d left", line) for line in lines), lines
    assert lines[-1].startswith("[generate sptar] weak queries 4/4 docs (100%), took 0:0")
    log = (tmp_path / "stage" / "log.txt").read_text()
    for text in ("a library's print", "a native message", "INFO sptar.x: detail for the log",
                 "WARNING sptar.x: careful\nsecond line", "INFO sptar.progress: weak queries 4/4"):
        assert text in log
    assert "\r" not in log and "it/s" not in log  # no bar drawn into the log


def test_status_mode_error_is_one_line_on_stderr(tmp_path):
    env = {**os.environ, "SPTAR_CONSOLE": "status", "SPTAR_DATA_DIR": str(tmp_path / "data"),
           "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "sptar", "data", "--config", "tiny", "--set",
                             "dataset.mirror=tests/no-such-mirror"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if not line.startswith("[data] ")]
    assert errors == ["sptar: error: tests/no-such-mirror/tiny: dataset 'tiny' not in the mirror"
                      " folder (fix: check dataset.mirror / $SPTAR_DATA_MIRROR, or allow"
                      " dataset.download)"]
    assert not (tmp_path / "data").exists()  # it wrote nothing, so it leaves nothing
