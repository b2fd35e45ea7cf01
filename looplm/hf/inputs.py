"""The forward inputs the HF looped models (Ouro, the looplm export) share a rule for: transformers' packed-batch
descriptions, keywords they do not read, and the attention implementation."""

from __future__ import annotations

from typing import Any

import torch


def sdpa_only(model: str, requested: str | None) -> str:
    """transformers' choice of attention implementation for a model whose attention always runs in torch's SDPA:
    "sdpa", or a ValueError in looplm's words ("eager" was recorded in the config while SDPA ran, and transformers
    sent a request for "sdpa" on the export to file an issue)."""
    if requested not in (None, "sdpa"):
        raise ValueError(f"{model} always runs its attention in torch's scaled_dot_product_attention: "
                         f"attn_implementation={requested!r} cannot apply; leave attn_implementation out (or pass "
                         "\"sdpa\")")
    return "sdpa"


# transformers' descriptions of packed rows (DataCollatorWithFlattening's return_flash_attn_kwargs=True and
# return_seq_idx=True, padding-free training) besides restarting position_ids. Taken through **kwargs, they were
# dropped: the packed sequences ran as one causal sequence, attending across each other.
PACKING_KWARGS = ("cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k", "seq_idx")
# transformers' own forward arguments that these models may be handed and need not read: the KV cache's length
# gives the positions of new tokens, and use_cache (a named argument of Ouro's) asks the export, which keeps no
# KV cache, for none to return.
_UNREAD_KWARGS = ("cache_position", "use_cache")


def check_unknown_kwargs(model: str, kwargs: dict[str, Any], token_type_ids: Any = None) -> None:
    """Refuse (TypeError) forward arguments the model does not read: taken by **kwargs, they changed nothing
    without a word (a typo, another model's option, a packed batch's boundaries). `token_type_ids` (a named
    argument, so that generate()'s check of its keywords sees it; or among kwargs) must be one segment."""
    check_token_types(model, kwargs.get("token_type_ids", token_type_ids))
    unknown = sorted(k for k in kwargs if k not in _UNREAD_KWARGS and k != "token_type_ids")
    if unknown:
        raise TypeError(f"{model}.forward() got unexpected keyword argument(s) {', '.join(unknown)}")


def check_token_types(model: str, types: Any) -> None:
    """token_type_ids: a WordPiece (BERT-style) tokenizer's output holds them, so model(**tok(text)) and
    generate(**tok(text)) pass them; one segment (every id the same; a tensor, list or numpy array) is what a
    causal LM reads anyway, so it is accepted; two segments would need segment embeddings, which these models
    have none of."""
    if types is None:
        return
    try:
        types = torch.as_tensor(types)
        one_segment = types.numel() == 0 or bool((types == types.flatten()[:1]).all())
    except (TypeError, ValueError, RuntimeError):  # (ragged or not numbers)
        one_segment = False
    if not one_segment:
        raise TypeError(f"{model} has no segment embeddings: token_type_ids of more than one segment cannot be read; "
                        "leave them out (tok(..., return_token_type_ids=False))")


def check_cache_kind(kind: Any, cache: Any = None) -> None:
    """Refuse a static KV cache for Ouro (`cache_implementation="static"` and the like, or a StaticCache object as
    past_key_values): its slots are laid out for one pass through the layers. (A StaticCache object failed
    blaming an attention_mask the caller never passed, in generate(), and was swapped for a DynamicCache without
    a word in the forward.)"""
    from transformers.cache_utils import StaticLayer

    if any(isinstance(layer, StaticLayer) for layer in getattr(cache, "layers", None) or ()):
        given = f"past_key_values={type(cache).__name__}(...)"
    elif kind not in (None, "dynamic", "offloaded", "quantized"):
        given = f"cache_implementation={kind!r}"
    else:
        return
    raise ValueError(f"{given} cannot hold Ouro's looped KV cache (one slot per loop and layer, grown as it "
                     "decodes): leave cache_implementation and a static past_key_values out (the default dynamic "
                     "cache), in the call and in generation_config.json")


def packed_positions(batch: int, length: int, device: torch.device, attention_mask: Any, position_ids: Any,
                     past_length: int, cu_seq_lens_q: Any = None, cu_seq_lens_k: Any = None,
                     max_length_q: Any = None, max_length_k: Any = None, seq_idx: Any = None) -> torch.Tensor:
    """(B, T) positions restarting at 0 where each packed sequence begins, from `cu_seq_lens_q/k` (cumulative
    sequence lengths of one flattened row) and/or `seq_idx` (each token's sequence number). The attention then
    stays inside each sequence as for restarting position_ids (`loop_context`). The lengths max_length_q/k follow
    from the boundaries and are not read. Every description given (position_ids too) must agree."""
    if past_length or (attention_mask is not None and not bool(torch.as_tensor(attention_mask).all())):
        raise ValueError("cu_seq_lens_q/k and seq_idx describe packed sequences, which take no KV cache and no "
                         "padding: pass them without attention_mask zeros or a cache")
    idx = torch.arange(length, device=device)
    found: dict[str, torch.Tensor] = {}
    if cu_seq_lens_q is not None or cu_seq_lens_k is not None:
        cu = torch.as_tensor(cu_seq_lens_q if cu_seq_lens_q is not None else cu_seq_lens_k, device=device)
        other = cu_seq_lens_k if cu_seq_lens_q is not None else None
        if (other is not None and not torch.equal(torch.as_tensor(other, device=device), cu)) or cu.dim() != 1 \
                or batch != 1 or len(cu) < 2 or int(cu[0]) != 0 or int(cu[-1]) != length or bool((cu.diff() < 1).any()):
            raise ValueError(f"cu_seq_lens_q/k must be one list of cumulative sequence lengths 0 < ... < {length} "
                             f"ending at the row's length, the same for q and k, for one flattened row (got "
                             f"{batch} rows and {cu.tolist() if cu.numel() <= 20 else tuple(cu.shape)})")
        starts = cu[:-1][torch.searchsorted(cu[:-1].contiguous(), idx, right=True) - 1]
        found["cu_seq_lens_q/cu_seq_lens_k"] = (idx - starts)[None]
    if seq_idx is not None:
        sid = torch.as_tensor(seq_idx, device=device)
        if sid.shape[-1] != length or sid.numel() not in (length, batch * length):
            raise ValueError(f"seq_idx of shape {tuple(sid.shape)} does not fit {batch} rows of {length} tokens")
        sid = sid.reshape(-1, length)
        new = torch.ones_like(sid, dtype=torch.bool)
        new[:, 1:] = sid[:, 1:] != sid[:, :-1]
        found["seq_idx"] = idx - torch.where(new, idx, torch.zeros_like(idx)).cummax(-1).values
    if not found:
        raise ValueError("max_length_q/k alone describe no packed sequences: pass cu_seq_lens_q/k or seq_idx")
    if position_ids is not None:
        found["position_ids"] = torch.as_tensor(position_ids, device=device).reshape(-1, length)
    (name, pos), *others = found.items()
    for other, given in others:
        try:
            same = bool((given == pos).all())
        except RuntimeError:  # (shapes that do not broadcast)
            same = False
        if not same:
            raise ValueError(f"{other} do not restart where {name} say the packed sequences begin")
    return pos
