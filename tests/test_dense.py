"""Dense retrieval: embedding cache, resumable chunks, FAISS index kinds."""

from __future__ import annotations

import re

import numpy as np
import pytest

from sptar.config import DenseConfig
from sptar.io.formats import doc_text
from sptar.retrieval.dense import build_index, dense_search, encode_corpus, search_index


class CountingEncoder:
    """A tiny in-process encoder: bag of hashed words, unit length; counts encoded texts."""

    max_seq_length = 32
    similarity_fn_name = "cosine"
    device = "cpu"

    def __init__(self, fail_after: int | None = None):
        self.encoded = 0
        self.fail_after = fail_after

    def get_sentence_embedding_dimension(self):
        return 16

    def encode(self, texts, batch_size, convert_to_numpy, normalize_embeddings, show_progress_bar):
        if self.fail_after is not None and self.encoded + len(texts) > self.fail_after:
            raise KeyboardInterrupt("simulated kill")
        self.encoded += len(texts)
        out = np.zeros((len(texts), 16), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in text.lower().split():
                out[row, sum(map(ord, word)) % 16] += 1
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-9)


CORPUS = {f"d{i}": {"title": "", "text": f"word{i} shared{i % 3} extra{i % 5}"} for i in range(20)}


def test_cache_is_reused(tmp_path):
    cfg = DenseConfig(chunk_size=6)
    model = CountingEncoder()
    first = encode_corpus(model, CORPUS, cfg, tmp_path / "cache")
    assert model.encoded == 20 and first.shape == (20, 16)
    second = encode_corpus(model, CORPUS, cfg, tmp_path / "cache")
    assert model.encoded == 20  # nothing re-encoded
    np.testing.assert_array_equal(first, second)
    assert not list((tmp_path / "cache").glob("chunk-*"))


def test_killed_encoding_resumes_from_its_chunks(tmp_path):
    cfg = DenseConfig(chunk_size=6)
    with pytest.raises(KeyboardInterrupt):
        encode_corpus(CountingEncoder(fail_after=13), CORPUS, cfg, tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("chunk-*.npy"))) == 2
    resumed = CountingEncoder()
    embeddings = encode_corpus(resumed, CORPUS, cfg, tmp_path / "cache")
    assert resumed.encoded == 20 - 12
    np.testing.assert_array_equal(embeddings, encode_corpus(CountingEncoder(), CORPUS, cfg,
                                                            tmp_path / "fresh"))


def test_a_run_whose_chunks_a_run_beside_it_merged_reads_the_merged_cache(tmp_path, monkeypatch):
    """Two runs encode the same corpus side by side (zero-shot in two seeds' evaluations): the
    one that comes to merge second finds its chunks merged away and reads the merged cache."""
    import sptar.retrieval.dense as dense

    cfg, cache = DenseConfig(chunk_size=6), tmp_path / "cache"
    expected = encode_corpus(CountingEncoder(), CORPUS, cfg, tmp_path / "fresh")
    encode_chunks = dense._encode_chunks

    def then_the_other_run_merges(*args, **kwargs):
        encode_chunks(*args, **kwargs)
        assert dense._merge_chunks(list(CORPUS), cfg, cache) is not None

    monkeypatch.setattr(dense, "_encode_chunks", then_the_other_run_merges)
    np.testing.assert_array_equal(encode_corpus(CountingEncoder(), CORPUS, cfg, cache), expected)


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_indexes_find_the_exact_top1(kind):
    rng = np.random.default_rng(0)
    docs = rng.normal(size=(500, 32)).astype(np.float32)
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    queries = docs[:20] + 0.01 * rng.normal(size=(20, 32)).astype(np.float32)
    ids = [f"d{i}" for i in range(500)]
    exact = search_index(build_index(docs, DenseConfig()), ids, [f"q{i}" for i in range(20)], queries, 5)
    approx = search_index(build_index(docs, DenseConfig(index=kind, ivf_nlist=8, ivf_nprobe=8)),
                          ids, [f"q{i}" for i in range(20)], queries, 5)
    for qid in exact:
        assert max(exact[qid], key=exact[qid].get) == max(approx[qid], key=approx[qid].get)


def test_dense_search_ranks_the_matching_document_first(tmp_path):
    run = dense_search(CountingEncoder(), CORPUS, {"q": "word7 shared1 extra2"}, DenseConfig(top_k=3),
                       tmp_path / "cache")
    assert len(run["q"]) == 3 and max(run["q"], key=run["q"].get) == "d7"


def test_killed_between_the_final_array_and_its_id_list_resumes(tmp_path):
    """embeddings.npy is written before ids.json: a kill in between must not break the cache."""
    cfg = DenseConfig(chunk_size=6)
    expected = encode_corpus(CountingEncoder(), CORPUS, cfg, tmp_path / "fresh")
    cache = tmp_path / "cache"
    encode_corpus(CountingEncoder(), CORPUS, cfg, cache)
    (cache / "ids.json").unlink()
    again = CountingEncoder()
    np.testing.assert_array_equal(encode_corpus(again, CORPUS, cfg, cache), expected)
    assert (cache / "ids.json").is_file()


def test_openvino_backend_matches_torch_and_keys_its_own_cache(tiny_encoder):
    """OpenVINO (the CPU default) gives torch's embeddings, in the caller's order, unit length;
    the two backends never share cached embeddings."""
    from sptar.models import load_encoder
    from sptar.retrieval.dense import backend, embedding_key, encode_texts

    model = load_encoder(str(tiny_encoder), "cpu", 64)
    texts = [doc_text(doc) for doc in CORPUS.values()] + ["a much longer text " * 20, "x"]
    torch_cfg, ov_cfg = DenseConfig(backend="torch", precision="fp32"), DenseConfig(precision="fp32", batch_size=4)
    assert backend(model, ov_cfg) == "openvino" and backend(model, torch_cfg) == "torch"
    expected = encode_texts(model, texts, torch_cfg)
    got = encode_texts(model, texts, ov_cfg)
    assert got.shape == expected.shape and got.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert (got * expected).sum(axis=1).min() > 0.9999
    np.testing.assert_allclose(encode_texts(model, texts[::-1], ov_cfg), got[::-1], atol=1e-6)
    assert embedding_key("m", "c", model, torch_cfg) != embedding_key("m", "c", model, ov_cfg)
    from sptar.retrieval import openvino_encoding

    # pinned, two single-thread stages of `make all -j2` both ran on core 0, each at half speed
    assert openvino_encoding._compiled(model, "fp32", 1, None).get_property("ENABLE_CPU_PINNING") is False


def test_int8_encoding_is_close_deterministic_and_cached_apart(tiny_encoder, monkeypatch):
    """dense.quantize int8: embeddings near the unquantised ones, the same on every load (the
    calibration sample does not depend on corpus order), their own embedding cache key, and no
    network use (NNCF sends telemetry through openvino_telemetry where it can import it)."""
    import socket

    from sptar.errors import SptarError
    from sptar.models import load_encoder
    from sptar.retrieval.dense import calibration_texts, embedding_key, encode_texts, quantized

    attempts = []

    def blocked(*args, **kwargs):
        attempts.append(args)
        raise OSError("network blocked by the test")

    for name in ("create_connection", "getaddrinfo"):
        monkeypatch.setattr(socket, name, blocked)
    monkeypatch.setattr(socket.socket, "connect", blocked)

    model = load_encoder(str(tiny_encoder), "cpu", 64)
    texts = [doc_text(doc) for doc in CORPUS.values()]
    plain, int8 = DenseConfig(precision="fp32"), DenseConfig(precision="fp32", quantize="int8",
                                                             calibration_docs=8)
    calibration = calibration_texts(CORPUS, int8)
    assert len(calibration) == 8 and calibration == calibration_texts(dict(reversed(CORPUS.items())), int8)
    assert quantized(model, int8) and not quantized(model, plain)
    got = encode_texts(model, texts, int8, calibration=calibration)
    assert (got * encode_texts(model, texts, plain)).sum(axis=1).min() > 0.98
    # short texts padded beside a long one: near their float embeddings, and the same alone
    short = ["fake meat", "x", "vitamin d deficiency", "a much longer text " * 20]
    padded = encode_texts(model, short, int8.model_copy(update={"batch_size": 4}), calibration=calibration)
    assert (padded * encode_texts(model, short, plain)).sum(axis=1).min() > 0.98
    alone = encode_texts(model, short, int8.model_copy(update={"batch_size": 1}), calibration=calibration)
    assert (padded * alone).sum(axis=1).min() > 0.999
    again = encode_texts(load_encoder(str(tiny_encoder), "cpu", 64), texts, int8, calibration=calibration)
    np.testing.assert_array_equal(again, got)
    assert embedding_key("m", "c", model, int8) != embedding_key("m", "c", model, plain)
    assert embedding_key("m", "c", model, int8) != embedding_key(
        "m", "c", model, int8.model_copy(update={"calibration_docs": 9}))
    assert attempts == []
    from sptar.retrieval import openvino_encoding

    quantised = openvino_encoding._quantize(model, openvino_encoding._convert(model), calibration)
    int8_inputs = {target.get_node().get_friendly_name() for op in quantised.get_ordered_ops()
                   if op.get_type_name() == "FakeQuantize"
                   for output in op.outputs() for target in output.get_target_inputs()}
    assert any("intermediate.dense" in name for name in int8_inputs)
    assert not any(re.search(r"layer\.\d+\.output\.dense", name) for name in int8_inputs)  # KEEP_FLOAT
    float_ops = {op.get_friendly_name() for op in quantised.get_ordered_ops()
                 if op.get_type_name() in openvino_encoding.FLOAT_OPS}
    assert float_ops and not float_ops & int8_inputs  # attention (and its padding mask) stays float
    with pytest.raises(SptarError, match="needs calibration texts"):
        encode_texts(model, texts, int8)
    with pytest.raises(ValueError, match="quantize int8 needs the OpenVINO backend"):
        DenseConfig(backend="torch", quantize="int8")


def test_backend_auto_is_torch_for_other_encoders_and_openvino_refuses_a_gpu():
    from sptar.errors import SptarError
    from sptar.retrieval.dense import backend

    assert backend(CountingEncoder(), DenseConfig()) == "torch"

    class OnGpu(CountingEncoder):
        device = "cuda:0"

    assert backend(OnGpu(), DenseConfig()) == "torch"
    with pytest.raises(SptarError, match="dense.backend openvino runs on CPU"):
        backend(OnGpu(), DenseConfig(backend="openvino"))
