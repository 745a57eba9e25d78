"""Safe loading: no remote code unless the config says so, nothing fetched from the hub unless
``models.download``, no pickle loads, and no download of data unless a stage was asked to."""

from __future__ import annotations

import ast
import inspect
import json
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest

import sptar.models
from sptar.errors import SptarError
from sptar.run.runner import execute, paths_for

from .conftest import ROOT

SOURCES = sorted((ROOT / "sptar").glob("*.py"))


class Stop(Exception):
    """Raised by a fake loader once it has recorded its arguments."""


def _model_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    return folder


# ---------------------------------------------------------------- the loaders


@pytest.fixture
def library_calls(monkeypatch):
    """Record the keyword arguments sptar passes to transformers / sentence-transformers."""
    import sentence_transformers
    import transformers

    calls: dict[str, dict] = {}

    def tokenizer(path, **kwargs):
        calls["AutoTokenizer.from_pretrained"] = kwargs
        return SimpleNamespace(pad_token="<pad>")

    def record(name):
        def fake(path, **kwargs):
            calls[name] = kwargs
            raise Stop(name)
        return staticmethod(fake)

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", staticmethod(tokenizer))
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained",
                        record("AutoModelForCausalLM.from_pretrained"))
    monkeypatch.setattr(sentence_transformers, "SentenceTransformer",
                        record("SentenceTransformer").__func__)
    return calls


@pytest.mark.parametrize("asked", [{}, {"trust_remote_code": True, "download": True}])
def test_loaders_run_no_remote_code_and_stay_offline_unless_asked(tmp_path, library_calls, asked):
    folder = str(_model_folder(tmp_path))
    with pytest.raises(Stop):
        sptar.models.load_causal_lm(folder, "cpu", **asked)
    with pytest.raises(Stop):
        sptar.models.load_encoder(folder, "cpu", **asked)
    assert set(library_calls) == {"AutoTokenizer.from_pretrained",
                                  "AutoModelForCausalLM.from_pretrained", "SentenceTransformer"}
    for name, kwargs in library_calls.items():
        assert kwargs["trust_remote_code"] is asked.get("trust_remote_code", False), name
        assert kwargs["local_files_only"] is not asked.get("download", False), name


@pytest.mark.parametrize("overrides, expected", [
    ((), (False, False)),
    (("models.trust_remote_code=true", "models.download=true"), (True, True)),
])
def test_every_model_loading_stage_passes_the_configs_choice(tiny_cfg, tmp_path, monkeypatch,
                                                              overrides, expected):
    folder = _model_folder(tmp_path)
    cfg = tiny_cfg(f"models.llm={folder}", *overrides)
    paths = paths_for(cfg, tmp_path / "data")
    execute("data", cfg, paths)
    execute("split", cfg, paths)
    seen: dict[str, tuple[bool, bool]] = {}

    def recorder(name):
        original = getattr(sptar.models, name)

        def fake(*args, **kwargs):
            bound = inspect.signature(original).bind(*args, **kwargs)
            bound.apply_defaults()
            seen[stage] = (bound.arguments["trust_remote_code"], bound.arguments["download"])
            raise Stop(name)
        return fake

    for name in ("load_causal_lm", "load_tokenizer", "load_encoder"):
        monkeypatch.setattr(sptar.models, name, recorder(name))
    runs = [("tune", {}), ("generate", {"variant": "inpars"}), ("train", {"variant": "wo-aug"}),
            ("evaluate", {"system": "zero-shot"})]
    for stage, options in runs:
        with pytest.raises(Stop):
            execute(stage, cfg, paths, **options)
    assert seen == {stage: expected for stage, _ in runs}


# ---------------------------------------------------------------- the source, statically


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node, ast.unparse(node.func), {k.arg: k.value for k in node.keywords}


def _true(node) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def test_no_unsafe_loading_call_in_the_package():
    """Every model load passes trust_remote_code (never a literal True) and local_files_only;
    torch.load only with weights_only=True; no pickle; no allow_pickle; urlopen only in data.py."""
    problems, model_loads = [], 0
    for path in SOURCES:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                if any(n.split(".")[0] in ("pickle", "dill", "joblib", "cloudpickle") for n in names):
                    problems.append(f"{path.name}:{node.lineno}: imports a pickle library")
        for node, func, kwargs in _calls(tree):
            where = f"{path.name}:{node.lineno}: {func}"
            if func.endswith("from_pretrained") and func != "PeftModel.from_pretrained" \
                    or func == "SentenceTransformer":
                model_loads += 1
                if "trust_remote_code" not in kwargs or _true(kwargs["trust_remote_code"]):
                    problems.append(f"{where} without trust_remote_code from the config")
                if "local_files_only" not in kwargs:
                    problems.append(f"{where} without local_files_only")
            if func == "torch.load" and not _true(kwargs.get("weights_only")):
                problems.append(f"{where} without weights_only=True")
            if func.endswith("np.load") and _true(kwargs.get("allow_pickle")):
                problems.append(f"{where} with allow_pickle=True")
            if func.endswith(("read_index", "pickle.load", "pickle.loads")):
                problems.append(f"{where}: unpickling or reading a foreign index")
            if func.endswith("urlopen") and path.name != "data.py":
                problems.append(f"{where}: only the data stage downloads")
            if _true(kwargs.get("trust_remote_code")):
                problems.append(f"{where} with trust_remote_code=True")
    assert not problems, problems
    assert model_loads >= 5  # the scan sees the loaders (causal LM, tokenizer, encoder, GGUF)


def test_peft_adapters_load_from_safetensors(tmp_path):
    """The tune stage saves the soft prompt as safetensors; peft prefers them (and would load a
    pickle only with weights_only=True)."""
    from peft.utils import save_and_load

    source = inspect.getsource(save_and_load.torch_load)
    assert "weights_only=True" in source
    writer_source = (ROOT / "sptar" / "outputs" / "prompt.py").read_text()  # the tuned prompt's writer
    assert "save_pretrained(str(tmp), safe_serialization=True)" in writer_source


# ---------------------------------------------------------------- data downloads


def test_data_stage_downloads_only_when_asked(tiny_cfg, tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("the data stage opened a URL")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    cfg = tiny_cfg()  # a mirror folder holds the dataset: it is copied, nothing downloaded
    assert execute("data", cfg, paths_for(cfg, tmp_path / "a"))["summary"]["documents"] == 36
    monkeypatch.delenv("SPTAR_DATA_MIRROR", raising=False)
    off = tiny_cfg("dataset.mirror=null", "dataset.download=false", "dataset.name=scifact")
    with pytest.raises(SptarError, match="no mirror configured and downloads are off"):
        execute("data", off, paths_for(off, tmp_path / "b"))


def test_hub_access_is_offline_unless_downloads_are_allowed(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with sptar.models.hub_access(False):
        assert constants.HF_HUB_OFFLINE is True
    assert constants.HF_HUB_OFFLINE is False
    with sptar.models.hub_access(True):
        assert constants.HF_HUB_OFFLINE is False
