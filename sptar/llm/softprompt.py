"""The soft prompt's life: wrap a frozen LLM with a trainable prompt, its weights, load a tuned one."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path

from sptar.config import Config
from sptar.errors import SptarError
from sptar.io.paths import Paths
from sptar.llm.prompts import SOFT_PROMPT_INIT
from sptar.outputs.prompt import adapter_dir


@contextlib.contextmanager
def _quiet_peft() -> Iterator[None]:
    """peft asks transformers a deprecated question on every wrap; the warning is not ours."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
        yield


def wrap_with_soft_prompt(cfg: Config, model):
    from peft import PromptTuningConfig, PromptTuningInit, TaskType, get_peft_model

    from sptar.models import resolve_model

    config = PromptTuningConfig(
        task_type=TaskType.CAUSAL_LM, num_virtual_tokens=cfg.tune.n_virtual_tokens,
        prompt_tuning_init=PromptTuningInit.TEXT, prompt_tuning_init_text=SOFT_PROMPT_INIT,
        tokenizer_name_or_path=resolve_model(cfg.models.llm),
        tokenizer_kwargs={"local_files_only": not cfg.models.download})
    with _quiet_peft():
        peft_model = get_peft_model(model, config)
    return peft_model.eval()  # the frozen LLM has no dropout to train; only the prompt learns


def soft_prompt_weights(peft_model):
    """The trainable soft prompt of a PEFT prompt-tuning model: ``[n_virtual, hidden]``."""
    return peft_model.prompt_encoder["default"].embedding.weight


def load_tuned(cfg: Config, paths: Paths, device: str = "auto"):
    """``(peft_model, tokenizer)``: ``models.llm`` with the tuned soft prompt, in eval mode."""
    from peft import PeftModel

    from sptar.models import load_causal_lm, resolve_device

    folder = adapter_dir(paths)
    if not (folder / "adapter_config.json").is_file():
        raise SptarError(f"{folder}: no tuned soft prompt (fix: run `sptar tune` first)")
    device = resolve_device(device)
    model, tokenizer = load_causal_lm(cfg.models.llm, device, cfg.models.trust_remote_code,
                                      cfg.models.download)
    with _quiet_peft():
        peft_model = PeftModel.from_pretrained(model, str(folder), is_trainable=False)
    peft_model.to(device).eval()
    return peft_model, tokenizer


def soft_prompt_embeddings(model, adapter: Path):
    """``[1, n_virtual, hidden]`` embeddings of a PEFT prompt-tuning adapter for ``model``."""
    from peft import PeftModel, PeftType

    peft_model = PeftModel.from_pretrained(model, str(adapter))
    peft_type = peft_model.active_peft_config.peft_type
    if peft_type != PeftType.PROMPT_TUNING:
        raise SptarError(f"{adapter}: a {peft_type} adapter, expected prompt tuning"
                         " (fix: re-run sptar tune)")
    soft = peft_model.get_prompt(batch_size=1).detach()
    return peft_model.get_base_model(), soft
