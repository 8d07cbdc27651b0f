"""Batched sampling with a KV cache, and scoring of the sampled tokens.

`sample(model, prompt_ids, prompt_mask, ...)` -> `Rollout`: the completion ids,
a completion mask through the first EOS, the student's per-token log-probs,
lengths and a truncated flag (hit `max_new_tokens` without EOS).

Prompts are left-padded; position ids are derived from the attention mask the
same way `model.generate` does, so greedy output equals `generate` token for
token (tested). By default the loop is `workbench.fast_rollout`'s (static KV cache, no per-token
HF machinery) for the Llama/Qwen2-style models it supports; `engine="hf"` forces the generic loop.
`sequence_logprobs` re-scores a rollout under any model
(teacher, reference, or the student with gradients) with the same positions.

A `Rollout` stores two log-probs per sampled token: `logprobs`, of the *model*
distribution (temperature 1, no top-p/top-k), which is what the OPD reward
log q - log pi needs; and `sampler_logprobs`, of the distribution the token was
actually drawn from (after temperature, top-k and top-p). When the sampler is
tempered or truncated the samples are off-policy for the model, and the trainer
passes `sampler_logprobs` to the sampled-token OPD and GRPO losses, whose ratio
pi / mu then reweights each token choice back to the model's distribution
(tests/test_importance.py checks the gradient by Monte Carlo). Two limits, said
plainly: top-p/top-k never draw a token outside the nucleus, so the part of the
gradient carried by those tokens (their mass under pi, usually tiny) is missing
rather than reweighted; and the ratio is per token (as in PPO/GRPO), so it
corrects which token is chosen in each visited state, not which states a
tempered sampler visits.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, fields

import torch
from transformers import DynamicCache

from . import fast_rollout
from .sampling import cache_kwarg, draw, pick, positions_from_mask  # noqa: F401  (draw, positions_from_mask: public here too)



@dataclass
class Rollout:
    prompt_ids: torch.Tensor        # [B, P] left-padded
    prompt_mask: torch.Tensor       # [B, P] 1 on real prompt tokens
    completion_ids: torch.Tensor    # [B, N] padded with pad id after EOS
    completion_mask: torch.Tensor   # [B, N] float, 1 on generated tokens up to and including the first EOS
    logprobs: torch.Tensor          # [B, N] log pi(y_t) under the model at temperature 1 (0 where masked)
    lengths: torch.Tensor           # [B] number of completion tokens (EOS included)
    truncated: torch.Tensor         # [B] bool: hit max_new_tokens without EOS
    sampler_logprobs: torch.Tensor | None = None   # [B, N] log mu(y_t) of the distribution y_t was drawn from
                                                   #   (temperature, top-k, top-p applied; 0 where masked);
                                                   #   None for greedy or forced (gold) completions

    @property
    def input_ids(self) -> torch.Tensor:
        return torch.cat([self.prompt_ids, self.completion_ids], dim=1)

    @property
    def attention_mask(self) -> torch.Tensor:
        return torch.cat([self.prompt_mask, self.completion_mask.to(self.prompt_mask.dtype)], dim=1)

    def __len__(self) -> int:
        return self.completion_ids.shape[0]

    def to(self, device) -> "Rollout":
        return Rollout(**{f.name: None if getattr(self, f.name) is None else getattr(self, f.name).to(device)
                          for f in fields(self)})


def _cache_out(out):
    return getattr(out, "cache", None) if getattr(out, "cache", None) is not None else out.past_key_values


def pad_prompts(prompts: list[list[int]], pad_id: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad a list of token-id lists into (ids, mask)."""
    if not prompts:
        raise ValueError("pad_prompts: no prompts given")
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        if p:
            ids[i, width - len(p):] = torch.tensor(p, dtype=torch.long)
            mask[i, width - len(p):] = 1
    return ids.to(device), mask.to(device)


ENGINES = ("auto", "fast", "hf")
_auto = "auto"          # what engine="auto" means; `use_engine` changes it inside a block


@contextlib.contextmanager
def use_engine(engine: str):
    """Inside the block, every `sample(..., engine="auto")` call (the trainer's, evaluation's, the analyses')
    uses `engine` instead: "fast", "hf" or "auto". The switch for comparing the two engines on the same
    training code (`python -m benchmarks step`); an explicit engine= argument is not overridden."""
    global _auto
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    saved, _auto = _auto, engine
    try:
        yield
    finally:
        _auto = saved


@torch.no_grad()
def sample(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, *, max_new_tokens: int,
           eos_token_id: int, pad_token_id: int, temperature: float = 1.0, top_p: float | None = None,
           top_k: int | None = None, generator: torch.Generator | None = None, engine: str = "auto") -> Rollout:
    """Sample completions for a batch of left-padded prompts. temperature == 0 means greedy.

    engine: "fast" = `workbench.fast_rollout` (static KV cache, no per-token HF machinery; Llama/Qwen2-style
    models only, error otherwise), "hf" = the generic loop below (`model(...)` per token with a DynamicCache;
    any causal LM), "auto" (default) = "fast" on CPU and CUDA when `fast_rollout.unsupported_reason(model)`
    is None, else "hf" (other devices: "hf"). On CUDA the fast engine replays its decode step as a CUDA
    graph (`fast_sample(cuda_graph=None)`): measured on an H200 (docs/benchmarks.md, "GPU"), 4-7x
    `generate`, where its eager path with row compaction was slower than the generic loop.
    Both sample with the same procedure from the same distribution (greedy output equals `generate`).
    """
    if max_new_tokens <= 0:
        raise ValueError(f"max_new_tokens must be positive, got {max_new_tokens}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if engine == "auto":
        engine = _auto          # "auto" unless inside `use_engine(...)`
    if engine == "auto" and prompt_ids.device.type not in ("cpu", "cuda"):
        engine = "hf"
    if engine != "hf":
        reason = fast_rollout.unsupported_reason(model)
        if engine == "fast" and reason is not None:
            raise ValueError(f"engine='fast' cannot run this model ({reason}); use engine='auto' or 'hf'")
        if reason is None:
            was_training = model.training
            model.eval()
            try:
                completion, logprobs, sampler_lp = fast_rollout.fast_sample(
                    model, prompt_ids, prompt_mask, max_new_tokens=max_new_tokens, eos_token_id=eos_token_id,
                    pad_token_id=pad_token_id, temperature=temperature, top_p=top_p, top_k=top_k,
                    generator=generator, return_sampler_logprobs=True)
            finally:
                model.train(was_training)
            return to_rollout(prompt_ids, prompt_mask, completion, logprobs, eos_token_id,
                               sampler_lp if temperature > 0 else None)
    was_training = model.training
    model.eval()
    dev = prompt_ids.device
    B = prompt_ids.shape[0]
    cache_kw = cache_kwarg(model)
    mask = prompt_mask.long()
    out = model(input_ids=prompt_ids, attention_mask=mask, position_ids=positions_from_mask(mask),
                use_cache=True, logits_to_keep=1, **{cache_kw: DynamicCache()})
    cache = _cache_out(out)
    next_pos = mask.sum(-1, keepdim=True)                      # [B, 1] position of the next token
    logits = out.logits[:, -1, :].float()
    tokens, logps, sampler_logps = [], [], []
    done = torch.zeros(B, dtype=torch.bool, device=dev)
    for t in range(max_new_tokens):
        tok, lp, sampler_lp = pick(logits, done, pad_token_id, temperature, top_k, top_p, generator)
        tokens.append(tok)
        logps.append(lp)
        sampler_logps.append(sampler_lp)
        done = done | (tok == eos_token_id)
        if bool(done.all()) or t == max_new_tokens - 1:
            break   # early exit once every sample has ended
        mask = torch.cat([mask, (~done | (tok == eos_token_id)).long()[:, None]], dim=1)
        out = model(input_ids=tok[:, None], attention_mask=mask, position_ids=next_pos, use_cache=True,
                    **{cache_kw: cache})
        cache = _cache_out(out)
        next_pos = next_pos + 1
        logits = out.logits[:, -1, :].float()
    model.train(was_training)
    return to_rollout(prompt_ids, prompt_mask, torch.stack(tokens, dim=1), torch.stack(logps, dim=1), eos_token_id,
                       torch.stack(sampler_logps, dim=1) if temperature > 0 else None)


def to_rollout(prompt_ids, prompt_mask, completion, logprobs, eos_token_id, sampler_logprobs=None) -> Rollout:
    """Masks, lengths and the truncated flag from sampled ids (pad after each row's EOS)."""
    dev = completion.device
    is_eos = completion == eos_token_id
    has_eos = is_eos.any(-1)
    first_eos = torch.where(has_eos, is_eos.float().argmax(-1), torch.full_like(has_eos, completion.shape[1], dtype=torch.long))
    idx = torch.arange(completion.shape[1], device=dev)[None, :]
    cmask = (idx <= first_eos[:, None]).float()
    lengths = cmask.sum(-1).long()
    return Rollout(prompt_ids=prompt_ids, prompt_mask=prompt_mask.long(), completion_ids=completion,
                   completion_mask=cmask, logprobs=logprobs * cmask, lengths=lengths, truncated=~has_eos,
                   sampler_logprobs=None if sampler_logprobs is None else sampler_logprobs * cmask)


def completion_logits(model, rollout: Rollout, temperature: float = 1.0, low_memory: bool = False) -> torch.Tensor:
    """Logits [B, N, V] that predicted each completion token (one forward over prompt + completion).

    Runs with or without grad depending on the caller's context. `low_memory=True` (the trainer's chunked
    path, issue 22) keeps the model's dtype (no float32 copy: the chunked losses upcast one chunk at a time)
    and has the model project exactly the N scoring positions (`logits_to_keep` as indices) instead of N+1
    then a slice, whose backward would allocate a zero-padded [B, N+1, V] gradient.
    """
    ids, mask = rollout.input_ids, rollout.attention_mask
    P, N = rollout.prompt_ids.shape[1], rollout.completion_ids.shape[1]
    # position P-1+t predicts completion token t
    keep = torch.arange(P - 1, P - 1 + N, device=ids.device) if low_memory else N + 1
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions_from_mask(mask), use_cache=False,
                logits_to_keep=keep)
    logits = out.logits if low_memory else out.logits[:, :-1, :].float()
    assert logits.shape[1] == N, (logits.shape, P, N)
    return logits / temperature if temperature != 1.0 else logits


def sequence_logprobs(model, rollout: Rollout) -> torch.Tensor:
    """log pi(y_t) [B, N] of each completion token under `model` (0 where masked)."""
    logits = completion_logits(model, rollout)
    lp = torch.log_softmax(logits, -1).gather(-1, rollout.completion_ids[..., None]).squeeze(-1)
    return lp * rollout.completion_mask
