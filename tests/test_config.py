"""Config: typed, unknown keys and wrong types are errors naming file, line and key."""

from __future__ import annotations

import pytest

from sptar.config import load_config
from sptar.errors import SptarError


def _yaml(tmp_path, text):
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return path


def test_shipped_pipelines_load():
    for name in ("scifact-quick", "nfcorpus-quick", "tiny"):
        cfg = load_config(name)
        assert cfg.experiment == name
    assert load_config("scifact-quick").dataset.name == "scifact"


def test_unknown_key_names_file_line_and_key(tmp_path):
    path = _yaml(tmp_path, "dataset:\n  name: scifact\nsplit:\n  n_prompt_train: 5\n  n_prompt_tran: 6\n")
    with pytest.raises(SptarError) as err:
        load_config(path)
    assert str(err.value).startswith(f"{path}:5: key 'split.n_prompt_tran': unknown key")


def test_wrong_type_and_range(tmp_path):
    path = _yaml(tmp_path, "dataset:\n  name: scifact\nsplit:\n  n_prompt_train: many\n")
    with pytest.raises(SptarError, match=r"exp.yaml:4: key 'split.n_prompt_train': .*integer"):
        load_config(path)
    path = _yaml(tmp_path, "dataset:\n  name: scifact\nbm25:\n  b: 1.5\n")
    with pytest.raises(SptarError, match=r"exp.yaml:4: key 'bm25.b': .*less than or equal to 1"):
        load_config(path)


def test_missing_required_and_missing_file(tmp_path):
    with pytest.raises(SptarError, match="key 'dataset': missing required key"):
        load_config(_yaml(tmp_path, "seed: 3\n"))
    with pytest.raises(SptarError, match="config file not found .*scifact-quick"):
        load_config("no-such-pipeline")


def test_invalid_yaml_names_line(tmp_path):
    with pytest.raises(SptarError, match=r"exp.yaml:3: not valid YAML .*'-'"):
        load_config(_yaml(tmp_path, "dataset:\n  name: a\n  - b\nseed: 1\n"))


def test_paths_and_names_cannot_escape(tmp_path):
    with pytest.raises(SptarError, match="dataset name '../x' must be a plain name"):
        load_config(_yaml(tmp_path, "dataset:\n  name: ../x\n"))
    with pytest.raises(SptarError, match="dataset.mirror must be relative"):
        load_config(_yaml(tmp_path, "dataset:\n  name: x\n  mirror: /etc\n"))


def test_overrides(tmp_path):
    cfg = load_config("tiny", ["split.n_prompt_train=2", "device=cpu", "report.systems=[bm25]"])
    assert cfg.split.n_prompt_train == 2 and cfg.report.systems == ["bm25"]
    with pytest.raises(SptarError, match=r"--set split.nope: key 'split.nope': unknown key"):
        load_config("tiny", ["split.nope=1"])
    with pytest.raises(SptarError, match=r"--set split.n_prompt_train: .*integer"):
        load_config("tiny", ["split.n_prompt_train=abc"])
    with pytest.raises(SptarError, match="expected section.key=value"):
        load_config("tiny", ["split.n_prompt_train"])


def test_section_hash_tracks_only_named_sections():
    a = load_config("tiny")
    b = load_config("tiny", ["bm25.k1=1.2"])
    assert a.section_hash("split") == b.section_hash("split")
    assert a.section_hash("bm25") != b.section_hash("bm25")


def _section_classes(cls=None):
    from sptar.config import Section

    for sub in (cls or Section).__subclasses__():
        yield sub
        yield from _section_classes(sub)


def test_every_field_has_a_description():
    missing = [f"{cls.__name__}.{name}" for cls in _section_classes()
               for name, field in cls.model_fields.items() if not (field.description or "").strip()]
    assert not missing


# section_hash values recorded with the config before it became a package (sptar/config.py at
# 3b15c87). A change to a key, a default or the dump format changes them and invalidates every
# finished stage's manifest: if that is intended, record the new values here. Editing
# pipelines/scifact-quick.yaml changes the scifact-quick ones too. (export: its hard negatives
# moved to the train section when export began to write the rows train trains on; filter: it
# depends on the base encoder and dense settings since dense_consistency; train: scifact-quick
# took train.labeled_repeat 3, chosen on validation.)
SCIFACT_QUICK_HASHES = {
    "dataset": "a2c12df56f925233", "split": "66593adeecb385d1", "models": "e2fed12390416193",
    "bm25": "937ebb308a508e67", "dense": "911fe70859de82de", "tune": "fc3ba7c6232edb80",
    "generate": "fbd034794f968645", "evaluate": "b80d7e24c998559a", "filter": "d3b3e1cdb93758a6",
    "train": "4eee2d6e0394db64", "export": "f96107a1f1c79b33", "report": "e2957db1c4870d0d",
}
SCIFACT_QUICK_STAGE_HASHES = {  # (stage, options) -> hash of the sections its output depends on
    ("split", ()): "c6670d8fbd459f78", ("tune", ()): "8a17988cf7df6af3",
    ("generate", ("sptar",)): "1992cec246e1b0f2", ("generate", ("inpars",)): "8cdc7f1a87b1f52c",
    ("filter", ("sptar",)): "09c35206eccaf6b8", ("train", ("sptar",)): "873d1ca82328f0a7",
    ("evaluate", ("bm25",)): "cee8418e75538e80", ("evaluate", ("sptar",)): "09f7a6dc2e24d41e",
    ("report", ()): "aff908d70b85260b",
}
DEFAULTS_HASHES = {  # every section at its defaults (dataset.name scifact)
    "split": "701c1f599777b5ed", "dense": "b8590da0d79484b3", "tune": "1d2345f000ea5965",
    "generate": "f9b1a3d374977db4", "filter": "ec16fea427e44965", "train": "e90e23c40ee4c16c",
    "report": "ff5421c3b1726327",
}


def test_section_hashes_are_pinned():
    import importlib

    from sptar.config import Config
    from sptar.run.runner import STAGES

    cfg = load_config("scifact-quick")
    assert {name: cfg.section_hash(name) for name in SCIFACT_QUICK_HASHES} == SCIFACT_QUICK_HASHES
    for (stage, values), expected in SCIFACT_QUICK_STAGE_HASHES.items():
        module_name, options = STAGES[stage]
        names = importlib.import_module(module_name).sections(**dict(zip(options, values, strict=True)))
        assert cfg.section_hash(*names) == expected, (stage, values)
    defaults = Config.model_validate({"experiment": "defaults", "dataset": {"name": "scifact"}})
    assert {name: defaults.section_hash(name) for name in DEFAULTS_HASHES} == DEFAULTS_HASHES


# ---------------------------------------------------------------- sptar config --explain

ALL_FILTERS = ("filter.steps=[{bm25_consistency: {k: 25}}, dedup, {length: {max_words: 20}},"
               " {logprob_topn: {fraction: 0.5}}, not_labeled, {dense_consistency: {k: 5}},"
               " {query_likelihood: {n: 100}}]")


def _fields(model, prefix=""):
    """(key, section class, field name, value) of every key, sections and filter steps and the
    keys inside them included."""
    from pydantic import BaseModel

    from sptar.config import FilterStep

    for name in type(model).model_fields:
        key, value = prefix + name, getattr(model, name)
        yield key, type(model), name, value
        if isinstance(value, BaseModel):
            yield from _fields(value, key + ".")
        elif value and isinstance(value, list) and isinstance(value[0], FilterStep):
            for index, step in enumerate(value):
                yield from _fields(step.params, f"{key}.{index}.{step.name}.")


def test_explain_lists_every_field_of_every_section_with_its_default(capsys):
    from pydantic import BaseModel

    from sptar.cli import main
    from sptar.config import FilterStep
    from sptar.config.explain import show

    assert main(["config", "--config", "own-example", "--explain", "--set", ALL_FILTERS]) == 0
    out = capsys.readouterr().out
    assert all(len(line) <= 100 for line in out.splitlines())
    entries = out.replace("\n    ", " ").splitlines()  # one entry per line, wrapping undone
    cfg = load_config("own-example", [ALL_FILTERS])
    shown = set()
    for key, cls, name, value in _fields(cfg):
        field = cls.model_fields[name]
        if "." not in key and isinstance(value, BaseModel):  # a top-level section: a heading
            assert f"# {key}: {field.description}" in entries
            shown.add((cls, name))
            continue
        container = isinstance(value, BaseModel) or key == "filter.steps"  # a heading and keys
        head = f"{key}:  " if container else f"{key} = {show(value)}  "
        entry = next(line for line in entries if line.startswith(head))
        if key == "experiment":
            assert entry.startswith(head + "(default: the pipeline file's name)")
        elif field.is_required():
            assert entry.startswith(head + "(required)")
        elif value == field.default:
            assert entry.startswith(head + "(default)  ")
        else:
            assert entry.startswith(f"{head}(default {show(field.default)})  ")
        assert field.description in entry
        shown.add((cls, name))
    every = {(cls, name) for cls in _section_classes() if cls is not FilterStep
             for name in cls.model_fields}
    assert every <= shown
    for section in ("dataset", "split", "filter", "train", "report"):
        assert f"# {section}: " in out
    assert any(line.startswith("filter.steps.3 = logprob_topn  keep the best n queries")
               for line in entries)


def test_explain_shows_a_changed_value_beside_its_default(capsys):
    from sptar.cli import main

    assert main(["config", "--config", "tiny", "--explain", "--set", "train.lr=5e-5",
                 "--set", "bm25.top_k=100"]) == 0
    entries = capsys.readouterr().out.replace("\n    ", " ").splitlines()
    assert ("train.lr = 5e-05  (default 2e-05)  learning rate of the retriever fine-tuning (AdamW,"
            " linear decay after warmup)") in entries
    assert any(line.startswith("bm25.top_k = 100  (default 1000)  documents retrieved") for line in entries)
    assert any(line.startswith("bm25.k1 = 0.9  (default)  term frequency") for line in entries)
    assert any(line.startswith("dense.index = flat  (default)  ") and "(one of: flat, hnsw, ivf)" in line
               for line in entries)


def test_config_without_explain_prints_the_resolved_yaml(capsys):
    import yaml

    from sptar.cli import main

    assert main(["config", "--config", "scifact-quick"]) == 0
    out = capsys.readouterr().out
    assert out == yaml.safe_dump(load_config("scifact-quick").model_dump(mode="json"), sort_keys=False)
    assert out.startswith("experiment: scifact-quick\nseed: 42\ndevice: auto\ndataset:\n  name: scifact\n")


def test_a_new_field_at_its_neutral_value_leaves_the_hash_as_before():
    """train.labeled_repeat and train.weak_steps came after runs were made: at 1 and 0 the train
    section hashes as it did without them, so finished stages stay up to date."""
    before = "d8481abb0bf4ce34"  # scifact-quick's train section before these fields existed
    cfg = load_config("scifact-quick", ["train.labeled_repeat=1"])
    assert cfg.section_hash("train") == before
    assert "labeled_repeat" not in cfg.sections("train")["train"]
    assert load_config("scifact-quick").section_hash("train") == SCIFACT_QUICK_HASHES["train"] != before
    assert load_config("scifact-quick", ["train.labeled_repeat=1", "train.weak_steps=5"]).section_hash(
        "train") != before


def test_new_generate_and_tune_fields_leave_their_stages_hashes_as_before():
    import importlib

    from sptar.run.runner import STAGES

    cfg = load_config("scifact-quick")
    for stage, values in (("generate", ("sptar",)), ("generate", ("inpars",)), ("tune", ())):
        module_name, options = STAGES[stage]
        names = importlib.import_module(module_name).sections(**dict(zip(options, values, strict=True)))
        assert cfg.section_hash(*names) == SCIFACT_QUICK_STAGE_HASHES[(stage, values)]
        changed = load_config("scifact-quick", ["generate.ban_example_ngrams=3",
                                                "tune.example_draw=fixed"])
        assert changed.section_hash(*names) != SCIFACT_QUICK_STAGE_HASHES[(stage, values)]
