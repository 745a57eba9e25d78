"""The paper-faithful profiles (and every shipped pipeline) resolve in a dry run."""

from __future__ import annotations

import itertools
import subprocess
import sys

import pytest

from sptar.cli import main
from sptar.config import PIPELINES_DIR, load_config
from sptar.errors import SptarError
from sptar.run.runner import STAGES, paths_for, plan

from .conftest import ROOT

PAPER = {"msmarco-sptar": ("msmarco", 30, 2, "dev"), "fiqa-sptar": ("fiqa", 70, 1, "test")}


def stage_options():
    for stage, (_, options) in STAGES.items():
        for values in itertools.product(*options.values()):
            yield stage, dict(zip(options, values, strict=True))


@pytest.mark.parametrize("name", sorted(p.stem for p in PIPELINES_DIR.glob("*.yaml")))
def test_every_pipeline_resolves_every_stage(name, tmp_path):
    cfg = load_config(name)
    rows = plan(cfg, paths_for(cfg, tmp_path / "data"))
    assert [(row["stage"], row["options"]) for row in rows] == list(stage_options())
    assert {row["state"] for row in rows} == {"not run"}
    assert all(row["folder"].startswith(str(tmp_path / "data")) for row in rows)
    assert all(row["config_hash"] == cfg.section_hash(*row["sections"]) for row in rows)


def test_the_dry_run_loads_no_model_library():
    code = ("import sys; from sptar.config import load_config; from sptar.run.runner import plan, "
            "paths_for; cfg = load_config('msmarco-sptar'); rows = plan(cfg, paths_for(cfg, "
            "'/nonexistent')); print(len(rows), sorted(m for m in ('torch', 'transformers', "
            "'sentence_transformers', 'datasets') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=ROOT).stdout.split(maxsplit=1)
    assert out == [str(sum(1 for _ in stage_options())), "[]\n"]


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_profiles_follow_sptar(name):
    dataset, k, examples, split = PAPER[name]
    cfg = load_config(name)
    assert cfg.dataset.name == dataset and cfg.evaluate.test_split == split
    assert (cfg.split.n_prompt_train, cfg.split.n_prompt_eval) == (50, 100)
    assert cfg.split.max_unlabeled_docs == 100_000
    tune = cfg.tune
    assert (tune.n_virtual_tokens, tune.lr, tune.batch_size, tune.n_examples) == (50, 3e-2, 1, examples)
    assert tune.epochs == 100 and tune.eval_every is None and tune.patience == 6  # early stopping
    assert [step.model_dump() for step in cfg.filter.steps] == [{"bm25_consistency": {"k": k}}]
    assert "7b" in cfg.models.llm.lower() and cfg.device == "auto" and cfg.train.precision == "auto"
    assert cfg.models.encoder == "google-bert/bert-base-uncased"
    assert cfg.report.systems == ["bm25", "zero-shot", "wo-aug", "inpars", "sptar"]


def test_plan_command_prints_every_stage(capsys):
    assert main(["plan", "--config", "fiqa-sptar"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:2] == ["data", "not"] and any(line.startswith("export sptar") for line in out)


def test_plan_refuses_a_model_that_is_neither_alias_folder_nor_hub_id():
    cfg = load_config("fiqa-sptar", ["models.llm=no-such-model"])
    with pytest.raises(SptarError, match="model 'no-such-model' is not an alias"):
        plan(cfg, paths_for(cfg, "/nonexistent"))
