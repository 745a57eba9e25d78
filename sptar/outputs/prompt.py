"""The tune stage's output ``tune/``: the soft prompt adapter, the chosen in-context examples with
the token budgets the prompt was tuned with, every candidate's score, and the training log."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sptar.errors import SptarError
from sptar.io.atomic import atomic_dir
from sptar.io.formats import read_json, write_json, write_jsonl
from sptar.io.paths import Paths

Style = Literal["sptar", "inpars"]
Example = tuple[str, str]  # (document text, query)


@dataclass
class Prompt:
    """What every document's prompt shares: the examples, and the soft prompt (sptar)."""

    style: Style
    examples: list[Example]
    example_ids: list[list[str]]  # [query id, doc id] of each example
    adapter: Path | None = None  # the tuned soft prompt (a PEFT adapter folder)
    limits: dict[str, int] = field(default_factory=dict)  # PromptFormat token limits of tuning


ADAPTER, EXAMPLES, TRAIN_LOG, LOSS_CURVE = "adapter", "examples.json", "train_log.jsonl", "loss_curve.png"
TUNED_LIMITS = ("max_example_doc_tokens", "max_query_tokens")  # how the examples were cut


def adapter_dir(paths: Paths) -> Path:
    return paths.stage("tune") / ADAPTER


def loss_curve_file(paths: Paths) -> Path:
    return paths.stage("tune") / LOSS_CURVE


def read_examples_file(paths: Paths) -> dict[str, Any]:
    """``examples.json``, checked: a ``"chosen"`` list of ``{doc, query, ...}`` objects."""
    path = paths.stage("tune") / EXAMPLES
    data = read_json(path)
    chosen = data.get("chosen") if isinstance(data, dict) else None
    if not isinstance(chosen, list) or not all(
            isinstance(item, dict) and isinstance(item.get("doc"), str)
            and isinstance(item.get("query"), str) for item in chosen):
        raise SptarError(f"{path}: expected a 'chosen' list of {{doc, query, ...}} objects"
                         " (fix: delete the tune folder and re-run `sptar tune`)")
    return data


def load_examples(paths: Paths) -> list[Example]:
    """The in-context example pairs the soft prompt filter chose, as ``(doc, query)``."""
    return [(item["doc"], item["query"]) for item in read_examples_file(paths)["chosen"]]


def load_prompt(paths: Paths) -> Prompt:
    """The tuned prompt as generation uses it: the adapter, the chosen examples, and (when
    ``examples.json`` records them) the token budgets the examples were cut to while tuning."""
    adapter = adapter_dir(paths)
    data = read_examples_file(paths)
    if not (adapter / "adapter_config.json").is_file():
        raise SptarError(f"{adapter}: no adapter_config.json (fix: re-run sptar tune)")
    tuned = data.get("prompt") if isinstance(data.get("prompt"), dict) else {}
    limits = {key: int(tuned[key]) for key in TUNED_LIMITS if isinstance(tuned.get(key), int)}
    chosen = data["chosen"]
    return Prompt("sptar", [(pair["doc"], pair["query"]) for pair in chosen],
                  [[str(pair.get("query_id", "")), str(pair.get("doc_id", ""))] for pair in chosen],
                  adapter, limits)


def write_prompt(paths: Paths, peft_model, examples: dict[str, Any], log_rows: list[dict[str, Any]]) -> None:
    """The adapter (safetensors), ``examples.json`` and the training log."""
    with atomic_dir(adapter_dir(paths)) as tmp:
        peft_model.save_pretrained(str(tmp), safe_serialization=True)
    write_json(paths.stage("tune") / EXAMPLES, examples)
    write_jsonl(paths.stage("tune") / TRAIN_LOG, log_rows)
