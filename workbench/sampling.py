"""What both samplers need, below both of them: position ids for left padding, the cache keyword,
and the next-token pick (temperature, top-k, top-p; log-probs of the model and of the sampler).

`rollout.sample`'s generic loop and `fast_rollout`'s static-cache loop both call `pick`, so the
fast engine's exactness (same tokens as the generic loop for the same generator) holds by construction.
"""
from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F



def is_peft(model) -> bool:
    """A peft-wrapped model (LoRA adapters): both samplers look through the wrapper. Here, not in `adapters`,
    so the engine needs nothing above it."""
    return hasattr(model, "peft_config") and hasattr(model, "disable_adapter")


def cache_kwarg(model) -> str:
    """transformers 5.24 renamed `past_key_values` to `cache`; accept both (looking through a peft wrapper)."""
    if is_peft(model):
        model = model.get_base_model()
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _cache_out(out):
    return getattr(out, "cache", None) if getattr(out, "cache", None) is not None else out.past_key_values


def positions_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Position ids for left padding: 0 at the first real token (as `generate` does)."""
    pos = mask.long().cumsum(-1) - 1
    return pos.clamp_(min=0)


def _filter_logits(logits: torch.Tensor, top_k: int | None, top_p: float | None) -> torch.Tensor:
    if top_k is not None and 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) >= top_p   # keep the smallest prefix reaching top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    return logits


def draw(logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None, generator):
    """One sampling step: (token [b], log mu(token) [b]) with mu the tempered, top-k/top-p filtered softmax of
    `logits` [b, V]; temperature 0 = argmax (log mu = 0: a point mass). Both decode loops call this."""
    if temperature == 0:
        tok = logits.argmax(-1)
        return tok, torch.zeros(tok.shape, dtype=logits.dtype, device=logits.device)
    probs = F.softmax(_filter_logits(logits / temperature, top_k, top_p), dim=-1)
    tok = torch.multinomial(probs, 1, generator=generator)
    return tok.squeeze(-1), probs.gather(-1, tok).squeeze(-1).log()


def pick(logits: torch.Tensor, done: torch.Tensor, pad_token_id: int, temperature: float, top_k: int | None,
         top_p: float | None, generator):
    """The next-token pick of both decode loops (`rollout.sample`'s generic loop and `fast_rollout`'s):
    (token, log pi(token) at temperature 1, log mu(token) of the sampler) for each row of `logits` [b, V];
    rows already `done` get `pad_token_id` and log-probs 0. One function, so the two engines draw the
    same tokens from the same generator state by construction."""
    logp_full = F.log_softmax(logits, dim=-1)
    tok, slp = draw(logits, temperature, top_k, top_p, generator)
    tok = torch.where(done, torch.full_like(tok, pad_token_id), tok)
    lp = logp_full.gather(-1, tok[:, None]).squeeze(-1).masked_fill(done, 0.0)
    return tok, lp, slp.masked_fill(done, 0.0)


def seed_for(seed: int, step: int, stream: int) -> int:
    """The generator seed of (run seed, step, stream): randomness is per step and stateless, so a resumed
    run draws what an uninterrupted one would. Streams: 1 training samples, 2 evaluation, 3 student samples."""
    return (seed * 1_000_003 + step * 7919 + stream) % (2**63 - 1)
