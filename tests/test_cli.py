"""The CLI: one-line errors with exit code 2, stages skipped when up to date."""

from __future__ import annotations

import subprocess
import sys

from sptar.cli import main

from .conftest import ROOT


def test_bad_config_is_one_line_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset:\n  name: tiny\nsplit:\n  n_prompt_train: -3\n")
    assert main(["split", "--config", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith(f"sptar: error: {bad}:4: key 'split.n_prompt_train'")


def test_missing_upstream_stage_is_named(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SPTAR_DATA_DIR", str(tmp_path / "data"))
    assert main(["split", "--config", "tiny"]) == 2
    assert "an earlier stage has not finished" in capsys.readouterr().err


def test_debug_shows_the_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "sptar", "split", "--config", "nope", "--debug"],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_config_command_prints_resolved_yaml(capsys):
    assert main(["config", "--config", "tiny", "--set", "bm25.k1=1.1"]) == 0
    out = capsys.readouterr().out
    assert "k1: 1.1" in out and "experiment: tiny" in out
