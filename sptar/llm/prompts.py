"""The prompt formats, in one place, shared by prompt tuning, the example filter and generation.

SPTAR (soft prompt)::

    [soft prompt] Document: {example doc} \\n Relevant Query: {example query}\\n\\n   (0-2 times)
                  Document: {doc} \\n Relevant Query: {query}\\n

InPars "vanilla" (hard prompt, no soft prompt)::

    Example 1:\\nDocument: {doc}\\nRelevant Query: {query}\\n\\n   (n examples)
    Example {n+1}:\\nDocument: {doc}\\nRelevant Query: {query}\\n

A prompt is tokenized in segments, always the same way: ``prefix`` (BOS if the tokenizer uses
one, then the example block) + ``doc`` (the document block, ending in ``Relevant Query:``) +
``target`` (`` {query}\\n``). Training, scoring and generation all build inputs from these
segments, so the token ids never depend on how BPE would merge across a boundary, and the key/
value cache of the prefix can be reused exactly. The loss counts the target tokens only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from sptar.outputs.prompt import Example, Prompt, Style

IGNORE_INDEX = -100
SOFT_PROMPT_INIT = "please generate query for this document"


def prompt_format(prompt: Prompt, tokenizer, max_doc_tokens: int) -> PromptFormat:
    """The prompt's format: the document cut to ``max_doc_tokens``, examples as tuned."""
    return PromptFormat(tokenizer, style=prompt.style, max_doc_tokens=max_doc_tokens, **prompt.limits)


@dataclass
class PromptFormat:
    """Builds the token segments of a prompt for one tokenizer and one style."""

    tokenizer: object
    style: Style = "sptar"
    max_doc_tokens: int = 256
    max_example_doc_tokens: int = 128
    max_query_tokens: int = 48

    # ------------------------------------------------------------ text

    def truncate(self, text: str, max_tokens: int) -> str:
        """The longest prefix of ``text`` that is at most ``max_tokens`` tokens, whitespace-normalised."""
        text = " ".join(text.split())
        encoded = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        offsets = encoded["offset_mapping"]
        if len(offsets) <= max_tokens:
            return text
        return text[: offsets[max_tokens - 1][1]].rstrip()

    def _pair(self, doc: str, number: int) -> str:
        if self.style == "inpars":
            return f"Example {number}:\nDocument: {doc}\nRelevant Query:"
        return f"Document: {doc} \n Relevant Query:"

    def example_block(self, examples: Sequence[Example]) -> str:
        parts = []
        for number, (doc, query) in enumerate(examples, start=1):
            doc = self.truncate(doc, self.max_example_doc_tokens)
            query = " ".join(query.split())
            parts.append(f"{self._pair(doc, number)} {query}\n\n")
        return "".join(parts)

    def doc_block(self, doc: str, n_examples: int) -> str:
        return self._pair(self.truncate(doc, self.max_doc_tokens), n_examples + 1)

    # ------------------------------------------------------------ token segments

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    def prefix_ids(self, examples: Sequence[Example]) -> list[int]:
        """BOS (when the tokenizer adds one) and the in-context examples: shared by every document."""
        bos = self.tokenizer("", add_special_tokens=True)["input_ids"]
        return list(bos) + self._ids(self.example_block(examples))

    def doc_ids(self, doc: str, n_examples: int) -> list[int]:
        return self._ids(self.doc_block(doc, n_examples))

    def query_ids(self, query: str) -> list[int]:
        """`` {query}`` as the model writes it after ``Relevant Query:`` (cut to the query budget)."""
        return self._ids(" " + " ".join(query.split()))[: self.max_query_tokens]

    def target_ids(self, query: str) -> list[int]:
        """The tokens the model must write: `` {query}`` then a newline (end of line = stop)."""
        return self.query_ids(query) + self._ids("\n")

    def training_example(self, doc: str, query: str,
                         examples: Sequence[Example]) -> tuple[list[int], list[int]]:
        """``(input_ids, labels)``: labels are -100 everywhere except on the target tokens."""
        context = self.prefix_ids(examples) + self.doc_ids(doc, len(examples))
        target = self.target_ids(query)
        return context + target, [IGNORE_INDEX] * len(context) + target


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int, side: Literal["left", "right"],
              labels: Sequence[Sequence[int]] | None = None):
    """Pad to one length: ``(input_ids, attention_mask[, labels])`` as torch tensors.

    Decoder-only models train with right padding and generate with left padding (so that every
    row's last real token is at the end); padded positions have mask 0 and label -100.
    """
    import torch

    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    out_labels = torch.full((len(sequences), width), IGNORE_INDEX, dtype=torch.long)
    for row, seq in enumerate(sequences):
        span = slice(width - len(seq), width) if side == "left" else slice(0, len(seq))
        ids[row, span] = torch.tensor(seq, dtype=torch.long)
        mask[row, span] = 1
        if labels is not None:
            out_labels[row, span] = torch.tensor(labels[row], dtype=torch.long)
    return (ids, mask, out_labels) if labels is not None else (ids, mask)
