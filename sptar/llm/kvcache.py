"""Key/value caches of a prompt prefix that many prompts share: run the prefix once, reuse it.

Generation (:mod:`sptar.llm.decoding`) and prompt scoring (:mod:`sptar.llm.scoring`) both start from
:func:`prefix_states`; :func:`prefix_cache` turns them into a ``DynamicCache`` for a batch, and
:func:`buffer_layer_class` gives the fixed-capacity cache layer that decoding writes in place.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence


def prefix_embeddings(model, prefix_ids: Sequence[int], soft_prompt=None):
    """``[1, P, hidden]``: the soft prompt's embeddings (when given), then those of ``prefix_ids``."""
    import torch

    layer = model.get_input_embeddings()
    with torch.inference_mode():
        embeds = layer(torch.tensor([list(prefix_ids)], dtype=torch.long, device=layer.weight.device))
        if soft_prompt is not None:
            soft = soft_prompt.detach().to(device=embeds.device, dtype=embeds.dtype)
            embeds = torch.cat([soft, embeds], dim=1)
    return embeds


def prefix_states(model, embeds) -> list:
    """One forward pass over the prefix ``embeds``: each layer's ``(keys, values)``, batch 1."""
    import torch

    with torch.inference_mode():
        out = model(inputs_embeds=embeds, use_cache=True, logits_to_keep=1)
    return [(keys, values) for keys, values, *_ in out.past_key_values]


def prefix_cache(model, states: list | None, batch: int, make_layer=None):
    """A ``DynamicCache`` for ``batch`` rows that starts with the prefix ``states`` (of
    :func:`prefix_states`; None: empty), its layers made by ``make_layer`` (default: the model's)."""
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    if make_layer is not None:
        cache.layers = [make_layer() for _ in cache.layers]
    for layer, (keys, values) in enumerate(states or ()):
        cache.update(keys.expand(batch, -1, -1, -1), values.expand(batch, -1, -1, -1), layer)
    return cache


@functools.cache
def buffer_layer_class():
    """A full-attention cache layer backed by one buffer of fixed capacity."""
    from transformers.cache_utils import DynamicLayer

    class BufferLayer(DynamicLayer):
        def __init__(self, capacity: int):
            super().__init__()
            self.capacity, self.length = capacity, 0

        def lazy_initialization(self, key_states, value_states) -> None:
            self.allocate(key_states.shape[0], key_states, value_states)

        def allocate(self, batch: int, key_like, value_like) -> None:
            """Buffers for ``batch`` rows shaped (heads, dim) and typed like the given states."""
            self.dtype, self.device = key_like.dtype, key_like.device
            self._keys = key_like.new_zeros((batch, key_like.shape[1], self.capacity,
                                             key_like.shape[-1]))
            self._values = value_like.new_zeros((batch, value_like.shape[1], self.capacity,
                                                 value_like.shape[-1]))
            self.is_initialized = True

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            end = self.length + key_states.shape[-2]
            self._keys[:, :, self.length:end] = key_states
            self._values[:, :, self.length:end] = value_states
            self.length = end
            self.keys, self.values = self._keys[:, :, :end], self._values[:, :, :end]
            return self.keys, self.values

        def write(self, rows, columns: slice, keys, values) -> None:
            """Place ``keys``/``values`` (``[len(rows), heads, width, dim]``) at rows, columns."""
            self._keys[rows, :, columns] = keys
            self._values[rows, :, columns] = values

        def shift(self, span: slice, by: int) -> None:
            """Move columns ``span`` ``by`` places to the left (all rows)."""
            target = slice(span.start - by, span.stop - by)
            self._keys[:, :, target] = self._keys[:, :, span].clone()
            self._values[:, :, target] = self._values[:, :, span].clone()

        def get_seq_length(self) -> int:
            return self.length

    return BufferLayer
