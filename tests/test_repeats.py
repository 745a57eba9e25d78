"""The report over seeds: means and intervals, per-query averaging, paired tests, Holm."""

from __future__ import annotations

import pytest

from sptar.cli import main
from sptar.io.formats import read_json, write_json
from sptar.reporting.metrics import METRICS
from sptar.reporting.significance import interval
from sptar.stages.repeats import averaged_per_query

# nDCG@10 (every metric takes the same value) per seed, system and query
TEST = {1: {"sptar": [1.0, 0.5, 0.0], "wo-aug": [0.5, 0.5, 0.0], "inpars": [0.0, 0.5, 0.5]},
        2: {"sptar": [0.5, 1.0, 0.5], "wo-aug": [0.5, 0.5, 0.5], "inpars": [1.0, 0.0, 0.0]}}
# validation: seed 1 scored v1, v2 and seed 2 v2, v3 (each seed its own validation queries)
VALIDATION = {1: (["v1", "v2"], {"sptar": [1.0, 0.0], "wo-aug": [0.0, 0.0], "inpars": [0.0, 0.0]}),
              2: (["v2", "v3"], {"sptar": [1.0, 0.5], "wo-aug": [1.0, 0.5], "inpars": [0.0, 0.5]})}


def _write_seed(root, seed: int) -> None:
    for split, (queries, scores) in {"test": (["t1", "t2", "t3"], TEST[seed]),
                                     "validation": VALIDATION[seed]}.items():
        for system, values in scores.items():
            folder = root / "runs" / f"tiny-seed{seed}" / "evaluate" / system
            per_query = {q: dict.fromkeys(METRICS, v) for q, v in zip(queries, values, strict=True)}
            write_json(folder / split / "per_query.json", per_query)


@pytest.fixture
def seeds_done(tmp_path, monkeypatch):
    monkeypatch.setenv("SPTAR_DATA_DIR", str(tmp_path / "data"))
    for seed in (1, 2):
        _write_seed(tmp_path / "data", seed)
    return tmp_path / "data"


def test_interval_is_student_t_over_the_seeds():
    mean, half = interval([0.5, 2 / 3])
    assert mean == pytest.approx(7 / 12)
    # t(0.975, 1 df) = 12.7062; sd = (1/6) / sqrt(2); half = t * sd / sqrt(2) = t / 12
    assert half == pytest.approx(12.7062047 / 12)
    assert interval([0.3]) == (0.3, None)


def test_per_query_scores_are_averaged_over_the_seeds_that_scored_them():
    runs = [{"v1": {"m": 1.0}, "v2": {"m": 0.0}}, {"v2": {"m": 1.0}, "v3": {"m": 0.5}}]
    assert averaged_per_query(runs) == {"v1": {"m": 1.0}, "v2": {"m": 0.5}, "v3": {"m": 0.5}}


def test_repeats_report_against_a_hand_computed_case(seeds_done, capsys):
    cfg = ["--config", "tiny", "--set", "report.systems=[wo-aug, inpars, sptar]"]
    assert main(["repeats", *cfg, "--seeds", "1", "2"]) == 0
    folder = seeds_done / "runs" / "tiny-seeds-1-2"
    report = read_json(folder / "report.json")
    test = report["splits"]["test"]
    sptar = test["systems"]["sptar"]["NDCG@10"]
    assert sptar["per_seed"] == pytest.approx([0.5, 2 / 3])
    assert sptar["mean"] == pytest.approx(7 / 12) and sptar["half_width"] == pytest.approx(12.7062047 / 12)
    assert test["systems"]["inpars"]["NDCG@10"]["half_width"] == pytest.approx(0.0)
    # per query over seeds: sptar .75 .75 .25, wo-aug .5 .5 .25, inpars .5 .25 .25
    tests = test["significance"]["tests"]
    wo_aug, inpars = tests["wo-aug"]["NDCG@10"], tests["inpars"]["NDCG@10"]
    assert wo_aug["mean_diff"] == pytest.approx(1 / 6) and inpars["mean_diff"] == pytest.approx(0.25)
    # differences (.25, .25, 0): t = 2 (2 df), p 0.1835; sign flips: 2 of 4 reach |.5| -> 0.5
    assert wo_aug["t"] == pytest.approx(2.0) and wo_aug["p_t"] == pytest.approx(0.183503, abs=1e-6)
    assert wo_aug["p_randomization"] == 0.5
    # differences (.25, .5, 0): t = sqrt(3), p 0.2254; sign flips: 2 of 4 reach |.75|
    assert inpars["t"] == pytest.approx(3 ** 0.5) and inpars["p_t"] == pytest.approx(0.225403, abs=1e-6)
    # Holm over the two primary comparisons: 2 x 0.1835 = 0.367 for both (monotone); 2 x 0.5 = 1
    assert wo_aug["p_t_holm"] == inpars["p_t_holm"] == pytest.approx(2 * 0.183503, abs=1e-5)
    assert wo_aug["p_randomization_holm"] == inpars["p_randomization_holm"] == 1.0
    validation = report["splits"]["validation"]
    assert validation["queries_per_seed"] == [2] and validation["queries"] == 3
    # sptar per query: v1 1, v2 (0 + 1) / 2, v3 .5; wo-aug: 0, .5, .5 -> differences 1, 0, 0
    assert validation["significance"]["tests"]["wo-aug"]["NDCG@10"]["mean_diff"] == pytest.approx(1 / 3)
    markdown = (folder / "report.md").read_text()
    assert "| sptar | **0.5833 ± 1.0589** |" in markdown
    assert "mean over the 2 seeds" in markdown and "Holm-corrected" in markdown
    assert capsys.readouterr().out == markdown


def test_a_missing_seed_run_is_a_one_line_error(seeds_done, capsys):
    code = main(["repeats", "--config", "tiny", "--set", "report.systems=[wo-aug, inpars, sptar]",
                 "--seeds", "1", "3"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.splitlines()) == 1
    assert "tiny-seed3/evaluate/wo-aug/validation/per_query.json: not found" in err
