"""Held-out evaluation: accuracy, length and truncation of a model's completions on a task."""
from __future__ import annotations

import torch

from .config import generation_length
from .batching import decode_completions, prompt_batch
from .rollout import sample


@torch.no_grad()
def evaluate(model, tokenizer, task, problems, *, max_new_tokens: int | None = None, temperature: float = 0.0,
             batch_size: int = 256, generator: torch.Generator | None = None) -> dict:
    """Exact-match accuracy (greedy when temperature == 0) plus mean length and truncated fraction."""
    max_new = generation_length(task, max_new_tokens)
    dev = next(model.parameters()).device
    correct, lengths, truncated = [], [], []
    for i in range(0, len(problems), batch_size):
        chunk = problems[i:i + batch_size]
        ids, mask = prompt_batch(tokenizer, chunk, dev, task=task)
        r = sample(model, ids, mask, max_new_tokens=max_new, eos_token_id=tokenizer.eos_token_id,
                   pad_token_id=tokenizer.pad_token_id, temperature=temperature, generator=generator)
        for p, text, tr in zip(chunk, decode_completions(tokenizer, r), r.truncated.tolist()):
            correct.append(task.verify(p, text, truncated=tr).correct)
        lengths += r.lengths.tolist()
        truncated += r.truncated.tolist()
    n = len(problems)
    return {"accuracy": sum(correct) / n, "mean_length": sum(lengths) / n, "truncated_frac": sum(truncated) / n,
            "n": n}
