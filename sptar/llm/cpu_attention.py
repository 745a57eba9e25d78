"""On CPU, the attention of one new token as two matrix products instead of sdpa's flash kernel."""

from __future__ import annotations

DECODE_ATTENTION = "sptar_sdpa_decode"


def use_decode_attention(model) -> bool:
    """On CPU, switch a model that uses ``sdpa`` to :func:`decode_attention` (True if switched).

    torch's CPU flash kernel is slow for one query row against a long cache: with InPars' 495-token
    prefix, decoding took 1.5x longer than with this plain matmul-softmax-matmul (64 SciFact
    documents, one thread: 29.0 s vs 18.9 s of decode steps; prefills are unchanged).
    """
    if model.config._attn_implementation != "sdpa" or next(model.parameters()).device.type != "cpu":
        return False
    try:
        from transformers import AttentionInterface, AttentionMaskInterface
        from transformers.masking_utils import sdpa_mask
    except ImportError:  # older transformers: keep sdpa
        return False
    AttentionInterface.register(DECODE_ATTENTION, decode_attention)
    AttentionMaskInterface.register(DECODE_ATTENTION, sdpa_mask)
    model.set_attn_implementation(DECODE_ATTENTION)
    return True


def decode_attention(module, query, key, value, attention_mask, dropout: float = 0.0,
                     scaling: float | None = None, is_causal: bool | None = None, **kwargs):
    """sdpa, except for a single query position: grouped-query attention as two matrix products
    (the query heads of one key/value head stacked as rows), softmax in fp32.

    ``query``: ``[batch, heads, 1, dim]``; ``key``/``value``: ``[batch, kv heads, length, dim]``;
    ``attention_mask``: sdpa's boolean mask (True: attend) or an additive float mask. Returns
    ``([batch, 1, heads, dim], None)`` as ``sdpa_attention_forward`` does.
    """
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if query.shape[2] != 1 or dropout:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, is_causal=is_causal, **kwargs)
    batch, heads, _, dim = query.shape
    kv_heads = key.shape[1]
    rows = query.reshape(batch, kv_heads, heads // kv_heads, dim)
    scores = torch.matmul(rows, key.transpose(-1, -2)).float()
    scores *= scaling if scaling is not None else dim ** -0.5
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attention_mask, float("-inf"))
        else:
            scores = scores + attention_mask
    probs = torch.softmax(scores, dim=-1).to(value.dtype)
    out = torch.matmul(probs, value).reshape(batch, heads, 1, dim)
    return out.transpose(1, 2).contiguous(), None
