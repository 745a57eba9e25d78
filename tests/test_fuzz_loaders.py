"""Property test: random, mostly malformed files never crash a loader with anything but SptarError."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sptar.errors import SptarError
from sptar.formats import read_corpus, read_ids, read_json, read_qrels, read_queries, read_run

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
    path = tmp_path / "input"
    path.write_bytes(content)
    try:
        loader(path)
    except SptarError as exc:
        message = str(exc)
        assert message.startswith(str(path)) and "\n" not in message
