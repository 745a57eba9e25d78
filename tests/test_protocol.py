"""The evaluation protocol: no stage before evaluate opens a validation or test file.

Every file a stage opens is recorded through Python's audit hook (``open`` events: builtins,
``io`` and ``os.open``), for the whole tiny pipeline with tiny in-process models.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from sptar.config import load_config
from sptar.io.formats import read_json
from sptar.run.runner import STAGES, execute, paths_for
from tests.test_generate import tiny_llm  # noqa: F401  (a fixture)

_recording: list[str] | None = None


def _hook(event: str, args: tuple) -> None:
    if event == "open" and _recording is not None and isinstance(args[0], str | bytes | Path):
        _recording.append(str(Path(args[0] if not isinstance(args[0], bytes) else args[0].decode())))


sys.addaudithook(_hook)  # cannot be removed: it records only while _recording is a list


@pytest.fixture(scope="module")
def opened(tiny_llm, tiny_encoder, tmp_path_factory):  # noqa: F811
    """``{stage label: [every path it opened]}`` for every stage of the tiny pipeline."""
    global _recording
    cfg = load_config("tiny", [f"models.llm={tiny_llm}", f"models.encoder={tiny_encoder}",
                               "report.systems=[bm25, zero-shot, wo-aug, inpars, sptar]",
                               "filter.steps=[{dedup: {}}, {length: {min_words: 1}}]",
                               "train.hard_negatives=1", "train.dev_fraction=0.3"])
    paths = paths_for(cfg, tmp_path_factory.mktemp("protocol") / "data")
    files: dict[str, list[str]] = {}
    for stage, (_, options) in STAGES.items():
        for values in ([{}] if not options else [{k: v} for k, vs in options.items() for v in vs]):
            _recording = files.setdefault(" ".join([stage, *values.values()]), [])
            try:
                execute(stage, cfg, paths, **values)
            finally:
                _recording = None
    return paths, files


def _held_out(paths, files: list[str]) -> list[str]:
    """The opened paths that hold validation or test queries or judgements."""
    beir = str(paths.beir)
    return [f for f in files if f.startswith(str(paths.stage("split") / "validation"))
            or f.startswith(f"{beir}/qrels/") or f == f"{beir}/queries.jsonl"]


def test_no_stage_before_evaluate_opens_validation_or_test_data(opened):
    paths, files = opened
    for label in [label for label in files if label.split()[0] in ("tune", "generate", "filter",
                                                                   "train", "export")]:
        assert files[label], f"{label} opened nothing? the recorder is broken"
        assert not _held_out(paths, files[label]), label
    assert any(f.endswith("corpus.jsonl") for f in files["train sptar"])
    for variant in ("wo-aug", "sptar"):  # with a dev set carved from the labeled queries
        summary = read_json(paths.stage("train", variant) / "manifest.json")["summary"]
        assert summary["dev_queries"] == 2
        read = {f for f in files[f"train {variant}"] if f.startswith(str(paths.root))}
        assert set(summary["files_read"]) <= read  # the manifest lists what it read


def test_evaluate_reads_both_and_the_recorder_sees_it(opened):
    paths, files = opened
    for system in ("bm25", "sptar"):
        held = _held_out(paths, files[f"evaluate {system}"])
        assert str(paths.stage("split") / "validation" / "queries.jsonl") in held
        assert str(paths.beir / "qrels" / "test.tsv") in held
    assert str(paths.beir / "qrels" / "test.tsv") in files["split"]  # the leak guard reads it
