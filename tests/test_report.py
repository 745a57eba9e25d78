"""Report stage: every configured system, paired tests against the reference, chart, counts."""

from __future__ import annotations

import pytest

from sptar.io.formats import read_json, write_json
from sptar.reporting.metrics import METRICS
from sptar.run.runner import execute
from tests.conftest import write_weak_set

SYSTEMS = ["bm25", "zero-shot", "wo-aug", "inpars", "sptar"]
QUERIES = [f"q{i}" for i in range(6)]


def _fake_evaluation(paths, system: str, ndcg: list[float], recall: list[float]) -> None:
    """What ``evaluate --system <system>`` writes, with chosen per-query scores."""
    folder = paths.stage("evaluate", system)
    per_query = {qid: {name: (r if name.startswith("Recall") else n) for name in METRICS}
                 for qid, n, r in zip(QUERIES, ndcg, recall, strict=True)}
    for split in ("validation", "test"):  # the same scores on both
        write_json(folder / split / "per_query.json", per_query)
        write_json(folder / split / "metrics.json", {name: sum(v[name] for v in per_query.values())
                                                     / len(QUERIES) for name in METRICS})
    write_json(folder / "manifest.json", {"stage": "evaluate", "wall_time_s": 2.0, "summary": {
        "splits": {split: {"queries": len(QUERIES)} for split in ("validation", "test")}}})


@pytest.fixture
def evaluated(tiny_paths):
    ones, halves = [1.0] * 6, [0.5] * 6
    _fake_evaluation(tiny_paths, "sptar", ones, ones)
    _fake_evaluation(tiny_paths, "bm25", halves, ones)  # sptar +0.5 on every query
    _fake_evaluation(tiny_paths, "zero-shot", [0, 1, 1, 1, 1, 1], ones)  # +1 on one query
    _fake_evaluation(tiny_paths, "wo-aug", ones, ones)  # identical
    _fake_evaluation(tiny_paths, "inpars", [0.0, 0.5, 1, 1, 1, 1], [0.5] + [1] * 5)
    return tiny_paths


def test_report_tests_the_reference_against_every_system(tiny_cfg, evaluated):
    cfg = tiny_cfg(f"report.systems={SYSTEMS}")
    write_weak_set(evaluated, "sptar", {"gen-d20-0": ("a query", "d20"), "gen-d21-0": ("b", "d21")})
    summary = execute("report", cfg, evaluated)["summary"]
    assert summary["reference"] == "sptar" and summary["tested"] == ["bm25", "inpars", "wo-aug",
                                                                      "zero-shot"]
    folder = evaluated.stage("report")
    report = read_json(folder / "report.json")
    assert list(report["splits"]) == ["validation", "test"]
    assert list(report["splits"]["test"]["systems"]) == SYSTEMS
    tests = report["splits"]["test"]["significance"]["tests"]
    assert tests == report["splits"]["validation"]["significance"]["tests"]
    # +0.5 on all 6 queries: only the all-plus / all-minus sign assignments reach it -> 2/64
    assert tests["bm25"]["NDCG@10"]["p_randomization"] == pytest.approx(2 / 64)
    assert tests["bm25"]["NDCG@10"]["p_t"] == 0.0 and tests["bm25"]["NDCG@10"]["mean_diff"] == 0.5
    assert tests["bm25"]["Recall@100"]["p_randomization"] == 1.0
    # +1 on one query of six: both signs reach it -> p 1; t = 1 (mean 1/6, sd sqrt(1/6)/sqrt(6))
    assert tests["zero-shot"]["NDCG@10"]["p_randomization"] == 1.0
    assert tests["zero-shot"]["NDCG@10"]["t"] == pytest.approx(1.0)
    assert tests["wo-aug"]["NDCG@10"] | {"p_t": 1.0, "p_randomization": 1.0} == tests["wo-aug"]["NDCG@10"]
    # +1 and +0.5 on two queries: signed sums +-1.5 (2 of 4) and +-0.5 -> p 1/2
    assert tests["inpars"]["NDCG@10"]["p_randomization"] == 0.5
    # Holm over the primary comparisons (wo-aug p 1, inpars p 0.5): 2 x 0.5 = 1, then max(1, 1)
    assert tests["inpars"]["NDCG@10"]["p_randomization_holm"] == 1.0
    assert tests["wo-aug"]["NDCG@10"]["p_randomization_holm"] == 1.0
    assert "p_randomization_holm" not in tests["bm25"]["NDCG@10"]
    # the chart's intervals: a constant difference has width 0; +1 on one query of six has
    # t(0.975, 5) x sd / sqrt(6), sd = sqrt(1/6); each system's over its queries likewise
    assert tests["bm25"]["NDCG@10"]["half_width"] == 0.0
    assert tests["zero-shot"]["NDCG@10"]["half_width"] == pytest.approx(2.5706 * (1 / 6) ** 0.5 / 6 ** 0.5,
                                                                        rel=1e-4)
    intervals = report["splits"]["test"]["intervals"]
    assert intervals["sptar"]["NDCG@10"] == 0.0 and set(intervals) == set(SYSTEMS)
    assert intervals["zero-shot"]["NDCG@10"] == tests["zero-shot"]["NDCG@10"]["half_width"]
    assert report["weak_pairs"] == {"sptar": {"generated": None, "trained": None,
                                              "filtered": {"queries": 2, "pairs": 2}}}
    markdown = (folder / "report.md").read_text()
    assert "### test: paired tests, sptar vs each system" in markdown
    assert "| bm25 | +0.5000 | <0.0001 | 0.0312 | – | – | +0.0000 | 1.0000 | 1.0000 | – | – |" in markdown
    assert "| sptar | **1.0000** | **1.0000** | **1.0000** | **1.0000** |" in markdown  # side by side
    assert "rests on one run (seed 13" in markdown
    assert "| sptar | – | 2 (2 queries) | – |" in markdown
    assert "| **sum of the stages** | 10.1 |" in markdown  # five evaluations of 2 s + 0.1 s
    assert (folder / "metrics.png").read_bytes()[:4] == b"\x89PNG"


def test_report_without_the_reference_skips_the_tests(tiny_cfg, evaluated):
    cfg = tiny_cfg("report.systems=[bm25, zero-shot, wo-aug]")
    execute("report", cfg, evaluated)
    report = read_json(evaluated.stage("report") / "report.json")
    significance = report["splits"]["test"]["significance"]
    assert significance["tests"] == {}
    assert "not among report.systems" in significance["skipped"]
    assert "Skipped: reference system 'sptar'" in (evaluated.stage("report") / "report.md").read_text()


def test_report_reference_is_configurable(tiny_cfg, evaluated):
    cfg = tiny_cfg("report.systems=[bm25, zero-shot, wo-aug]", "report.reference=wo-aug")
    execute("report", cfg, evaluated)
    report = read_json(evaluated.stage("report") / "report.json")
    assert set(report["splits"]["test"]["significance"]["tests"]) == {"bm25", "zero-shot"}
    assert "### test: paired tests, wo-aug vs each system" in (
        evaluated.stage("report") / "report.md").read_text()


def test_systems_scored_on_different_queries_are_an_error(tiny_cfg, evaluated):
    from sptar.errors import SptarError

    per_query = read_json(evaluated.stage("evaluate", "bm25") / "test" / "per_query.json")
    per_query.pop("q0")
    write_json(evaluated.stage("evaluate", "bm25") / "test" / "per_query.json", per_query)
    with pytest.raises(SptarError, match="evaluate/bm25/test/per_query.json: cannot pair"):
        execute("report", tiny_cfg(f"report.systems={SYSTEMS}"), evaluated)


def test_run_span_counts_stages_that_ran_side_by_side_once():
    from sptar.reporting.runfacts import run_span

    def stage(start: str, end: str) -> dict:
        return {"wall_s": 1.0, "started_at": f"2026-01-01T00:{start}Z", "finished_at": f"2026-01-01T00:{end}Z"}

    timings = {"data": stage("00:00", "00:05"),  # the shared dataset copy: not part of the run
               "tune": stage("01:00", "04:00"), "generate/inpars": stage("01:00", "03:00"),
               "generate/sptar": stage("04:00", "09:30")}
    assert run_span(timings) == 510.0
    assert run_span({"evaluate/bm25": {"wall_s": 1.0}}) is None  # written before times were kept


def test_the_report_warns_when_trained_systems_took_different_steps():
    from sptar.reporting.runfacts import unequal_steps_warning

    equal = {"wo-aug": {"steps": 20}, "inpars": {"steps": 20, "weak_steps": 0}, "sptar": {"steps": 20}}
    assert unequal_steps_warning(equal) is None
    assert unequal_steps_warning({}) is None
    unequal = {"wo-aug": {"steps": 1}, "inpars": {"steps": 9}, "sptar": {"steps": 8}}
    warning = unequal_steps_warning(unequal)
    assert "wo-aug 1, inpars 9, sptar 8" in warning and "train.steps" in warning
    two_stage = {"wo-aug": {"steps": 20}, "sptar": {"steps": 20, "weak_steps": 20}}
    assert "sptar 40" in unequal_steps_warning(two_stage)  # weak-only steps count too
