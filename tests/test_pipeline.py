"""End to end: the tiny pipeline with tiny models (every stage), and with the real encoder."""

from __future__ import annotations

from sptar.config import load_config
from sptar.io.formats import read_json, read_jsonl, read_run
from sptar.outputs.fewshot import load_split, load_validation
from sptar.run.runner import execute, paths_for
from tests.test_generate import tiny_llm  # noqa: F401  (a fixture)


def _run_all(cfg, paths):
    for stage, options in [("data", {}), ("split", {}), ("evaluate", {"system": "bm25"}),
                           ("evaluate", {"system": "zero-shot"}), ("report", {})]:
        execute(stage, cfg, paths, **options)


def test_tiny_pipeline_report(tiny_cfg, tiny_paths):
    cfg = tiny_cfg()
    _run_all(cfg, tiny_paths)
    report = read_json(tiny_paths.stage("report") / "report.json")
    assert list(report["splits"]) == ["validation", "test"]
    test, validation = report["splits"]["test"], report["splits"]["validation"]
    assert set(test["systems"]) == set(validation["systems"]) == {"bm25", "zero-shot"}
    assert test["queries"] == 5 and validation["queries"] == 2  # the 9 train queries less 7 labeled
    for metrics in test["systems"].values():
        assert metrics["NDCG@10"] > 0.5  # the tiny queries are easy
    assert {"data", "split", "evaluate/bm25", "evaluate/zero-shot"} <= set(report["timings"])
    zero_shot = report["timings"]["evaluate/zero-shot"]
    assert zero_shot["cpu_s"] > 0 and zero_shot["wall_s"] > 0 and zero_shot["load"] >= 0
    markdown = (tiny_paths.stage("report") / "report.md").read_text()
    assert f"| evaluate/zero-shot | {zero_shot['wall_s']:.1f} | {zero_shot['cpu_s']:.1f} |" in markdown
    assert "| system | validation NDCG@10 | validation Recall@100 | test NDCG@10 | test Recall@100 |" in markdown
    assert "| bm25 |" in markdown and "| zero-shot |" in markdown
    run = read_run(tiny_paths.stage("evaluate", "bm25") / "test" / "run.trec")
    assert set(run) == {"q10", "q11", "q12", "q13", "q14"}
    held = read_run(tiny_paths.stage("evaluate", "bm25") / "validation" / "run.trec")
    assert set(held) == set(load_validation(tiny_paths).queries) and len(held) == 2


def test_changed_config_reruns_only_what_depends_on_it(tiny_cfg, tiny_paths):
    cfg = tiny_cfg()
    _run_all(cfg, tiny_paths)
    split_before = read_json(tiny_paths.stage("split") / "manifest.json")
    bm25_before = read_json(tiny_paths.stage("evaluate", "bm25") / "manifest.json")
    changed = tiny_cfg("bm25.k1=1.5")
    _run_all(changed, tiny_paths)
    assert read_json(tiny_paths.stage("split") / "manifest.json") == split_before
    assert read_json(tiny_paths.stage("evaluate", "bm25") / "manifest.json") != bm25_before


def test_real_scifact_slice(scifact_slice, tmp_path, monkeypatch):
    """BM25 and the packaged MiniLM on 60 real SciFact test queries over ~540 documents."""
    monkeypatch.setenv("SPTAR_DATA_MIRROR", str(scifact_slice))
    cfg = load_config("tiny", ["dataset.name=scifact-slice", "dataset.mirror=null",
                               "split.n_prompt_train=50", "split.n_prompt_eval=20",
                               "split.max_unlabeled_docs=100", "dense.max_seq_length=256",
                               "dense.chunk_size=256"])
    paths = paths_for(cfg, tmp_path / "data")
    _run_all(cfg, paths)
    report = read_json(paths.stage("report") / "report.json")
    test = report["splits"]["test"]
    assert test["queries"] == 60 and report["splits"]["validation"]["queries"] == 80 - 70
    # a ~540-document slice is easier than the full corpus (0.68 / 0.65), so both score higher
    assert test["systems"]["bm25"]["NDCG@10"] > 0.7
    assert test["systems"]["zero-shot"]["NDCG@10"] > 0.7


def test_an_upstream_rerun_with_the_same_outputs_keeps_downstream_fresh(tiny_cfg, tiny_paths):
    cfg = tiny_cfg()
    _run_all(cfg, tiny_paths)
    bm25_before = read_json(tiny_paths.stage("evaluate", "bm25") / "manifest.json")
    report_before = read_json(tiny_paths.stage("report") / "manifest.json")
    execute("data", cfg, tiny_paths, force=True)  # same files written again, new manifest
    _run_all(cfg, tiny_paths)
    assert read_json(tiny_paths.stage("evaluate", "bm25") / "manifest.json") == bm25_before
    assert read_json(tiny_paths.stage("report") / "manifest.json") == report_before


def test_every_stage_of_the_tiny_pipeline_in_under_two_minutes(tiny_llm, tiny_encoder, tmp_path):  # noqa: F811
    """All stages (both generation variants, three trained retrievers, five systems, export) on
    the tiny dataset with tiny in-process models; the report has every system and p-values."""
    import time

    from sptar.run.runner import STAGES

    cfg = load_config("tiny", [f"models.llm={tiny_llm}", f"models.encoder={tiny_encoder}",
                               "report.systems=[bm25, zero-shot, wo-aug, inpars, sptar]",
                               "filter.steps=[{dedup: {}}, {length: {min_words: 1}}]"])
    paths = paths_for(cfg, tmp_path / "data")
    started = time.perf_counter()
    for stage, (_, options) in STAGES.items():  # pipeline order
        if not options:
            execute(stage, cfg, paths)
        for key, values in options.items():
            for value in values:
                execute(stage, cfg, paths, **{key: value})
    seconds = time.perf_counter() - started
    report = read_json(paths.stage("report") / "report.json")
    for split in ("validation", "test"):
        assert set(report["splits"][split]["systems"]) == {"bm25", "zero-shot", "wo-aug", "inpars",
                                                           "sptar"}
        tests = report["splits"][split]["significance"]["tests"]
        assert set(tests) == {"bm25", "zero-shot", "wo-aug", "inpars"}
        assert {"p_t_holm", "p_randomization_holm"} <= set(tests["inpars"]["NDCG@10"])
        assert "p_t_holm" not in tests["bm25"]["NDCG@10"]  # not a primary comparison
    pool = len(load_split(paths).unlabeled)
    for variant in ("inpars", "sptar"):
        generated = read_json(paths.stage("generate", variant) / "manifest.json")["summary"]
        assert generated["documents"] == pool == 12
        assert generated["queries"] + generated["dropped"] == pool
        kept = read_json(paths.stage("filter", variant) / "manifest.json")["summary"]
        assert kept["input"] == generated["queries"] and 0 < kept["kept"] <= kept["input"]
        train = read_json(paths.stage("train", variant) / "manifest.json")["summary"]
        assert train["weak_pairs"] == kept["kept"] == report["weak_pairs"][variant]["filtered"]["pairs"]
        export = read_json(paths.stage("export", variant) / "manifest.json")["summary"]
        assert (export["gold_pairs"], export["weak_pairs"]) == (train["labeled_pairs"], kept["kept"])
        assert len(read_jsonl(paths.stage("export", variant) / "pairs.jsonl")) == export["rows"]
    for split, result in report["splits"].items():
        for system, metrics in result["systems"].items():
            assert all(0 <= value <= 1 for value in metrics.values()), (split, system)
            assert metrics["Recall@10"] <= metrics["Recall@100"] <= metrics["Recall@1000"]
    assert seconds < 120, f"the whole tiny pipeline took {seconds:.0f} s"


def test_a_run_copied_into_another_experiment_stays_up_to_date(tiny_cfg, tiny_paths):
    """Inputs are keyed inside the experiment folder (split/manifest.json), so a finished run's
    folders linked under another experiment name are still fresh there (benchmarks/levers.py
    relies on it); manifests written with whole paths as keys compare the same."""
    import shutil

    from sptar.io.manifest import MANIFEST, input_key

    cfg = tiny_cfg()
    _run_all(cfg, tiny_paths)
    other = tiny_cfg("experiment=copy")
    other_paths = paths_for(other, tiny_paths.root)
    shutil.copytree(tiny_paths.runs, other_paths.runs)
    before = read_json(other_paths.stage("evaluate", "bm25") / MANIFEST)
    assert set(before["inputs"]) == {"beir/tiny/manifest.json", "split/manifest.json"}
    _run_all(other, other_paths)
    assert read_json(other_paths.stage("evaluate", "bm25") / MANIFEST) == before  # skipped
    assert input_key("data/runs/x-seed1/filter/sptar/manifest.json") == "filter/sptar/manifest.json"
    assert input_key("/tmp/d/beir/scifact/manifest.json") == "beir/scifact/manifest.json"


def test_a_new_int8_recipe_makes_int8_encodings_stale(tiny_cfg, tiny_paths, monkeypatch):
    """Outputs encoded by an earlier int8 quantisation recipe (e.g. one that quantised attention)
    re-run; BM25's stay fresh."""
    from sptar.retrieval import openvino_encoding
    from sptar.run.runner import plan

    cfg = tiny_cfg("dense.quantize=int8", "dense.calibration_docs=4")
    for stage, options in [("data", {}), ("split", {}), ("evaluate", {"system": "bm25"}),
                           ("evaluate", {"system": "zero-shot"})]:
        execute(stage, cfg, tiny_paths, **options)

    def states():
        return {row["options"].get("system"): row["state"] for row in plan(cfg, tiny_paths)
                if row["stage"] == "evaluate" and row["options"]["system"] in ("bm25", "zero-shot")}

    assert states() == {"bm25": "done", "zero-shot": "done"}
    monkeypatch.setattr(openvino_encoding, "recipe", lambda: "an earlier recipe")
    assert states() == {"bm25": "done", "zero-shot": "stale"}
