"""Sentence embeddings on CPU through OpenVINO (``dense.backend: openvino``, the CPU default).

The whole sentence-transformers module chain (transformer, pooling, any dense layers) is traced
once per loaded model and compiled by OpenVINO for dynamic batch and sequence length, in bf16
where the CPU computes bf16 natively (:func:`sptar.models.effective_precision`), else fp32. Texts
are tokenized exactly as sentence-transformers does (``model.preprocess``, so ``max_seq_length``
applies) and batched longest first. Embeddings match torch's to a cosine of about 0.99999 and
come 1.25-1.3x faster than torch bf16 on one core (``benchmarks/bench_encode.py``).

With calibration texts (``dense.quantize: int8``), the traced model is first quantised to int8 by
NNCF's post-training quantisation (SmoothQuant, then activation ranges and a bias correction
measured on those texts; the layers of ``KEEP_FLOAT`` and the ops of ``FLOAT_OPS`` stay float):
about 1.36x faster again, at an embedding cosine of about 0.999 to the unquantised model's, for
documents and queries alike.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
import weakref
from collections.abc import Iterator

import numpy as np

from sptar.errors import SptarError

log = logging.getLogger(__name__)

_COMPILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> {key: compiled}
CALIBRATION_BATCH = 16  # calibration texts per batch of activation statistics
# Layers int8 leaves in float: the feed-forward output projections of BERT-style encoders (their
# input, after GELU, has the widest range). On SciFact with MiniLM this halves the embedding
# error (1 - cosine to bf16: 0.0028 -> 0.0014) for 1.36x instead of 1.47x bf16's docs/s.
KEEP_FLOAT = [r".*layer\.\d+\.output\.dense/.*"]
# Ops int8 leaves in float: attention itself. Quantising its inputs quantises the additive padding
# mask too, and spoilt short, padded texts: of SciFact's 657 validation queries (MiniLM, 64
# calibration documents, batches of 16) 4.1 % fell below cosine 0.99 to torch fp32 (the worst
# 0.668), and a query's embedding depended on the batch it was encoded in. With attention in
# float: none below 0.99 (the worst 0.9917, mean 0.99896; documents mean 0.99865), at the same
# speed (benchmarks/README.md, bench_encode.py).
FLOAT_OPS = ["ScaledDotProductAttention"]


def available() -> bool:
    import importlib.util

    return importlib.util.find_spec("openvino") is not None


def _import_openvino():
    """``import openvino`` without its usage telemetry.

    Importing openvino sends an event to Google Analytics through the ``openvino_telemetry``
    package unless the user opted out (as does ``ov.convert_model``); with that package made
    unimportable, openvino uses its built-in no-op stub. Nothing here needs the network.
    """
    import sys

    sys.modules.setdefault("openvino_telemetry", None)  # None: `import` raises ImportError
    try:
        import openvino
    except ImportError as exc:
        raise SptarError("dense.backend openvino needs the openvino package"
                         " (fix: make install, or set dense.backend: torch)") from exc
    return openvino


def _compiled(model, precision: str, threads: int, calibration: list[str] | None):
    """The model compiled for (precision, threads, calibration), converted on first use (a few
    seconds; quantising takes 10-20 s more)."""
    import hashlib

    per_model = _COMPILED.setdefault(model, {})
    key = (precision, threads,
           calibration and hashlib.sha256("\0".join(calibration).encode()).hexdigest())
    if key not in per_model:
        converted = _convert(model)
        if calibration:
            converted = _quantize(model, converted, calibration)
        hint = "bf16" if precision == "bf16" else "f32"
        per_model[key] = _import_openvino().Core().compile_model(
            converted, "CPU", {"INFERENCE_PRECISION_HINT": hint, "INFERENCE_NUM_THREADS": threads,
                               "PERFORMANCE_HINT": "LATENCY", "ENABLE_CPU_PINNING": False})
    return per_model[key]


def _convert(model):
    """The sentence-transformers module chain as an OpenVINO model (dynamic batch and length)."""
    import torch

    _import_openvino()  # first: openvino.frontend below would import openvino with its telemetry
    example = _features(model, ["an example sentence", "another"])
    names = _tensor_names(example)
    constants = {key: value for key, value in example.items() if key not in names}  # e.g. modality

    class Embed(torch.nn.Module):
        def __init__(self, chain):
            super().__init__()
            self.chain = chain

        def forward(self, *tensors):
            features = {**constants, **dict(zip(names, tensors, strict=True))}
            return self.chain(features)["sentence_embedding"]

    log.info("converting the encoder to OpenVINO")
    # The PyTorch frontend directly (what ov.convert_model runs, without its command-line layer).
    from openvino.frontend import FrontEndManager
    from openvino.frontend.pytorch.ts_decoder import TorchScriptPythonDecoder

    with torch.no_grad(), warnings.catch_warnings(), _quiet("sentence_transformers", "transformers"):
        # tracing reads every attribute, deprecated ones too, and traces shape checks as constants
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", FutureWarning)
        decoder = TorchScriptPythonDecoder(Embed(model).eval(),
                                           example_input=tuple(example[n] for n in names))
        frontend = FrontEndManager().load_by_framework("pytorch")
        return frontend.convert(frontend.load(decoder))  # inputs: dynamic [batch, tokens]


def _quantize(model, converted, calibration: list[str]):
    """``converted`` quantised to int8 by NNCF, activation ranges from the calibration texts."""
    _import_openvino()  # first: without openvino_telemetry, nncf sends no telemetry either
    try:
        with _quiet("nncf"):  # "NNCF initialized successfully"
            import nncf
    except ImportError as exc:
        raise SptarError("dense.quantize int8 needs the nncf package (fix: make install, or set"
                         " dense.quantize: none)") from exc
    names = _tensor_names(_features(model, calibration[:1]))
    batches = [[features[name].numpy() for name in names]
               for features in (_features(model, calibration[start:start + CALIBRATION_BATCH])
                                for start in range(0, len(calibration), CALIBRATION_BATCH))]
    log.info("quantising the encoder to int8 (calibration: %d texts)", len(calibration))
    with _quiet("nncf"), contextlib.redirect_stdout(io.StringIO()):  # its progress bars
        return nncf.quantize(converted, nncf.Dataset(batches), model_type=nncf.ModelType.TRANSFORMER,
                             subset_size=len(batches),
                             ignored_scope=nncf.IgnoredScope(patterns=KEEP_FLOAT, types=FLOAT_OPS,
                                                             validate=False))


def recipe() -> str:
    """What the int8 encoder depends on besides the model and calibration texts: a stage or an
    embedding cache made by an earlier recipe is stale."""
    import hashlib
    import json

    return hashlib.sha256(json.dumps([KEEP_FLOAT, FLOAT_OPS]).encode()).hexdigest()[:12]


@contextlib.contextmanager
def _quiet(*names: str) -> Iterator[None]:
    """Errors only from these loggers, inside."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _features(model, texts: list[str]):
    """The model's inputs for ``texts``, as sentence-transformers' own encode prepares them."""
    prepare = getattr(model, "preprocess", None) or model.tokenize  # preprocess: 6.x
    return prepare(texts)


def _tensor_names(features) -> list[str]:
    import torch

    return [key for key, value in features.items() if isinstance(value, torch.Tensor)]


def encode(model, texts: list[str], batch_size: int, normalize: bool, precision: str,
           threads: int, calibration: list[str] | None = None) -> np.ndarray:
    """Float32 embeddings of ``texts`` (at least one) in their order, unit length if
    ``normalize``: what ``model.encode`` returns, computed by OpenVINO (int8-quantised with
    activation ranges from ``calibration`` when given)."""
    compiled = _compiled(model, precision, threads, calibration)
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))  # as sentence-transformers
    out = None
    for start in range(0, len(texts), batch_size):
        rows = order[start:start + batch_size]
        features = _features(model, [texts[i] for i in rows])
        result = compiled([features[name].numpy() for name in _tensor_names(features)])[0]
        if out is None:
            out = np.empty((len(texts), result.shape[1]), dtype=np.float32)
        out[rows] = result
    if normalize:  # as torch.nn.functional.normalize, which sentence-transformers uses
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
    return out
