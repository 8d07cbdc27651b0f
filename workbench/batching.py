"""Turning problems into tensors: prompt batches for sampling, teacher-forced batches for SFT."""
from __future__ import annotations

import torch

from .rollout import Rollout, pad_prompts
from .tokenizer import encode_text


def prompt_batch(tokenizer, problems, device=None, task=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded (ids, mask) of the problems' prompts: `task.encode_prompt` when a task is given
    (e.g. a chat template), else the prompt text starting with BOS."""
    if task is not None:
        return pad_prompts([task.encode_prompt(tokenizer, p.prompt) for p in problems], tokenizer.pad_token_id, device)
    return pad_prompts([encode_text(tokenizer, p.prompt, add_bos=True) for p in problems],
                       tokenizer.pad_token_id, device)


def forced_rollout(tokenizer, problems, completions: list[str] | None = None, device=None, task=None) -> Rollout:
    """A `Rollout` whose completions are given text (default: the reference solutions) + EOS.

    This is how off-policy data (teacher traces, gold solutions) enters the same
    code path as the student's own samples: the trainer scores both alike.
    `logprobs` are zeros (unknown: nobody sampled them from the student).
    """
    texts = completions if completions is not None else [p.solution for p in problems]
    if len(texts) != len(problems):
        raise ValueError(f"{len(problems)} problems but {len(texts)} completions")
    ids, mask = prompt_batch(tokenizer, problems, device, task=task)
    comp = [encode_text(tokenizer, t) + [tokenizer.eos_token_id] for t in texts]
    N = max(len(c) for c in comp)
    cids = torch.full((len(comp), N), tokenizer.pad_token_id, dtype=torch.long)
    cmask = torch.zeros((len(comp), N))
    for i, c in enumerate(comp):
        cids[i, :len(c)] = torch.tensor(c)
        cmask[i, :len(c)] = 1.0
    cids, cmask = cids.to(ids.device), cmask.to(ids.device)
    lengths = cmask.sum(-1).long()
    return Rollout(prompt_ids=ids, prompt_mask=mask, completion_ids=cids, completion_mask=cmask,
                   logprobs=torch.zeros_like(cmask), lengths=lengths,
                   truncated=torch.zeros(len(comp), dtype=torch.bool, device=ids.device))


def decode_completions(tokenizer, rollout: Rollout) -> list[str]:
    """Completion text up to (not including) EOS, one string per sample."""
    out = []
    for ids, n, trunc in zip(rollout.completion_ids.tolist(), rollout.lengths.tolist(), rollout.truncated.tolist()):
        keep = ids[:n] if trunc else ids[:max(n - 1, 0)]
        out.append(tokenizer.decode(keep, skip_special_tokens=True))
    return out
