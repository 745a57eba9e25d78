"""Property test: random, mostly malformed files never crash a loader with anything but SptarError."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sptar.errors import SptarError
from sptar.io.formats import read_corpus, read_ids, read_json, read_qrels, read_queries, read_run

LOADERS = [read_corpus, read_queries, read_qrels, read_run, read_ids, read_json]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["_id", "title", "text", "metadata", "x"]), inner, max_size=4),
    max_leaves=8)

lines = st.one_of(
    st.text(max_size=40),
    json_values.map(json.dumps),
    st.tuples(st.text(max_size=6), st.text(max_size=6), st.text(max_size=4)).map("\t".join),
    st.just("query-id\tcorpus-id\tscore"),
)
files = st.one_of(
    st.binary(max_size=200),
    st.lists(lines, max_size=6).map(lambda ls: "\n".join(ls).encode("utf-8", "surrogatepass")),
    st.lists(lines, max_size=6).map(lambda ls: "\r\n".join(ls).encode("utf-8", "surrogatepass")),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=files, loader=st.sampled_from(LOADERS))
def test_loaders_fail_only_with_sptar_error(tmp_path, content, loader):
    _fails_only_with_sptar_error(loader, tmp_path / "input", content)


def _fails_only_with_sptar_error(loader, path, content: bytes) -> None:
    """``loader(path)`` either works or raises a one-line SptarError naming ``path``."""
    path.write_bytes(content)
    try:
        loader(path)
    except SptarError as exc:
        message = str(exc)
        assert message.startswith(str(path)) and "\n" not in message


yaml_lines = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["dataset:", "  name: tiny", "  name: ../x", "split:", "  n_prompt_train: 3",
                     "  n_prompt_train: -1", "seed: x", "filter:", "  steps:", "    - dedup",
                     "    - nope: {}", "- a", "? [a, b]", ": c", "!!python/object:os.system {}",
                     "&a x", "*a", "---", "device: gpu", "models: 3", "1: 2"]),
)
configs = st.one_of(
    st.binary(max_size=120),
    st.lists(yaml_lines, max_size=8).map(lambda ls: "\n".join(ls).encode("utf-8", "surrogatepass")),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=configs)
def test_config_loader_fails_only_with_sptar_error(tmp_path, content):
    from sptar.config import load_config

    _fails_only_with_sptar_error(load_config, tmp_path / "exp.yaml", content)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=json_values.map(json.dumps))
def test_examples_loaders_fail_only_with_sptar_error(tmp_path, content):
    """``tune/examples.json`` as generation and later stages read it."""
    from sptar.io.paths import Paths
    from sptar.outputs.prompt import load_examples, load_prompt

    paths = Paths(tmp_path, "x", "y")
    folder = paths.stage("tune")
    (folder / "adapter").mkdir(parents=True, exist_ok=True)
    (folder / "adapter" / "adapter_config.json").write_text("{}")
    (folder / "examples.json").write_text(content)
    for loader in (load_examples, load_prompt):
        try:
            loader(paths)
        except SptarError as exc:
            assert "\n" not in str(exc)
