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
