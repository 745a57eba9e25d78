"""``make all``: every stage once, each after the stages it reads, JOBS side by side."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")


def dry_run(*args: str) -> str:
    # -n prints the commands without running them; the recursive make of `all` runs in -n too
    out = subprocess.run(["make", "-n", "--no-print-directory", *args], cwd=ROOT, check=True,
                         capture_output=True, text=True)
    return out.stdout


def stage_commands(text: str) -> list[str]:
    """``sptar <stage> [--variant|--system X]`` in the order make would start them."""
    found = re.findall(r"bin/sptar (\w[\w-]*)(?: --(?:variant|system) ([\w-]+))? --config", text)
    return [f"{stage} {option}".strip() for stage, option in found]


def test_make_all_runs_every_stage_once_after_what_it_reads():
    commands = stage_commands(dry_run("all", "PIPELINE=scifact-quick"))
    expected = {"data", "split", "tune", "report", "export sptar",
                *(f"generate {v}" for v in ("sptar", "inpars")),
                *(f"filter {v}" for v in ("sptar", "inpars")),
                *(f"train {v}" for v in ("wo-aug", "inpars", "sptar")),
                *(f"evaluate {s}" for s in ("bm25", "zero-shot", "wo-aug", "inpars", "sptar"))}
    assert sorted(commands) == sorted(expected)
    position = {command: i for i, command in enumerate(commands)}
    before = [("data", "split"), ("split", "tune"), ("tune", "generate sptar"),
              ("split", "generate inpars"), ("filter sptar", "export sptar")]
    for v in ("sptar", "inpars"):
        before += [(f"generate {v}", f"filter {v}"), (f"filter {v}", f"train {v}")]
    for v in ("wo-aug", "inpars", "sptar"):
        before += [(f"train {v}", f"evaluate {v}"), (f"evaluate {v}", "report")]
    before += [("evaluate bm25", "report"), ("evaluate zero-shot", "report"),
               ("split", "evaluate bm25"), ("split", "evaluate zero-shot")]  # validation queries
    for first, then in before:
        assert position[first] < position[then], f"{first} must run before {then}"
    assert commands[2] == "tune"  # the longest chain starts first


def test_make_all_splits_the_cores_between_its_jobs():
    cores = int(subprocess.run(["nproc"], capture_output=True, text=True, check=True).stdout)
    text = dry_run("all", "JOBS=2")
    assert f"OMP_NUM_THREADS={max(1, cores // 2)} " in text and " -j2 " in text
    assert "OMP_NUM_THREADS=1 " in dry_run("all", "JOBS=64")  # never fewer than one thread
    assert " -j1 " in dry_run("all", "JOBS=1")


def test_make_all_with_seeds_runs_the_pipeline_once_per_seed_then_reports_over_them():
    text = dry_run("all", "PIPELINE=scifact-quick", "SEEDS=1 2")
    runs = re.findall(r"bin/sptar (\w[\w-]*)(?: --(?:variant|system) ([\w-]+))? --config "
                      r"scifact-quick --seed (\d)", text)
    once = len(stage_commands(dry_run("all", "PIPELINE=scifact-quick")))
    assert len(runs) == 2 * once
    assert {seed for *_, seed in runs[:once]} == {"1"} and {seed for *_, seed in runs[once:]} == {"2"}
    assert text.rstrip().endswith("bin/sptar repeats --config scifact-quick  --seeds 1 2")
    assert "cat data/runs/scifact-quick-seed2/report/report.md" in text


def test_make_all_shows_status_lines_live_instead_of_holding_each_stage_s_output():
    for text in (dry_run("all", "PIPELINE=scifact-quick"), dry_run("all", "SEEDS=1 2")):
        assert "--output-sync" not in text and "-O" not in text.split()  # nothing held back
        assert "SPTAR_CONSOLE=status " in text  # each stage: short lines, its log in log.txt
    assert "SPTAR_CONSOLE" not in dry_run("tune", "PIPELINE=scifact-quick")  # by hand: everything
