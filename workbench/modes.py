"""Mode seeking, measured: pass@k, and which scratchpad styles a model writes when it has a choice.

Reverse KL (on-policy distillation) is mode-seeking: a student too small to represent every style its
teacher samples between should *commit* to one, where forward KL / imitation (SFT) should *blend*
them. On `addition-orders` every column may write its three summands in any order, so a blend is
visible: a column whose summands are not the column's (`AdditionOrders.column_orders` -> "invalid").
The literature's corollary is that OPD's pass@1 gains exceed its pass@k gains (it sharpens what the
student already does rather than widening it).

    prof = mode_profile(student, tok, task, problems, n=16)
    prof["pass_at_k"][1], prof["pass_at_k"][16], prof["orders"]["mixture_rate"], prof["token_entropy"]
"""
from __future__ import annotations

import math
from collections import Counter

import torch

from . import losses as L
from .batching import decode_completions, prompt_batch
from .config import generation_length
from .rollout import completion_logits, sample

INVALID = "invalid"


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from `n` samples of which `c` are correct (Chen et al. 2021, "Evaluating Large
    Language Models Trained on Code", eq. 1): 1 - C(n-c, k) / C(n, k), the probability that a subset of
    `k` of the `n` samples, drawn without replacement, holds at least one correct one.

    Computed as 1 - prod_{i=n-c+1}^{n} (1 - k/i) (their numerically stable form; no huge binomials)."""
    if not (isinstance(n, int) and isinstance(c, int) and isinstance(k, int)):
        raise TypeError(f"pass_at_k takes integers, got n={n!r}, c={c!r}, k={k!r}")
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}: draw at least k samples "
                         "per problem")
    if n - c < k:
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def pass_at_k_curve(correct_counts: list[int], n: int, ks=range(1, 17)) -> dict[int, float]:
    """Mean over problems of `pass_at_k(n, c, k)` for each k (problems given by their correct counts)."""
    if not correct_counts:
        raise ValueError("pass_at_k_curve: no problems")
    return {k: sum(pass_at_k(n, c, k) for c in correct_counts) / len(correct_counts) for k in ks}


def _entropy(counts: Counter) -> float:
    tot = sum(counts.values())
    return max(0.0, -sum(v / tot * math.log(v / tot) for v in counts.values() if v)) if tot else 0.0


def order_statistics(column_orders: list[list[list[str]]]) -> dict:
    """Which summand orders a model writes, from `column_orders[problem][sample]` = that sample's per-column
    orders (`AdditionOrders.column_orders`).

    * `mixture_rate`: share of all written columns whose order is "invalid" (the summands written are not
      the column's: the blend of two styles that imitation of a multi-modal teacher produces);
    * `order_entropy`: mean over (problem, column index) of the entropy (nats) of the valid orders the
      samples wrote there (0: every sample of that problem chose the same order at that column; the
      teacher's uniform choice among six orders: up to log 6 = 1.79);
    * `distinct_orders`: mean over (problem, column index) of how many different valid orders appear;
    * `global_order_entropy` and `order_counts`: the same over all valid columns pooled (a model that
      always writes one style has 0 whatever the problem);
    * `columns`: written columns counted.
    (problem, column) cells with no valid order among the samples are skipped by the two per-cell means.
    """
    written = invalid = 0
    pooled: Counter = Counter()
    ents, distinct = [], []
    for samples in column_orders:
        width = max((len(s) for s in samples), default=0)
        for col in range(width):
            here = Counter()
            for s in samples:
                if col < len(s):
                    written += 1
                    if s[col] == INVALID:
                        invalid += 1
                    else:
                        here[s[col]] += 1
            if here:
                ents.append(_entropy(here))
                distinct.append(len(here))
                pooled.update(here)
    return {"mixture_rate": invalid / written if written else None,
            "order_entropy": sum(ents) / len(ents) if ents else None,
            "distinct_orders": sum(distinct) / len(distinct) if distinct else None,
            "global_order_entropy": _entropy(pooled) if pooled else None,
            "order_counts": dict(sorted(pooled.items())), "columns": written}


@torch.no_grad()
def mode_profile(model, tokenizer, task, problems, *, n: int = 16, ks=None, seed: int = 0,
                 temperature: float = 1.0, batch_size: int = 256, max_new_tokens: int | None = None) -> dict:
    """`n` samples per problem at `temperature`: pass@k for k in `ks` (default 1..n), the order statistics
    (tasks with `column_orders`, else None), and the model's mean token entropy (nats per completion token,
    at temperature 1, at the states of its own samples).

    Returns {"pass_at_k": {k: mean}, "correct_counts": [c per problem], "n", "orders", "token_entropy",
    "sampled_accuracy"}; `sampled_accuracy` (mean c / n) equals pass@1 by construction.
    """
    if n < 1:
        raise ValueError(f"n (samples per problem) must be >= 1, got {n}")
    ks = list(ks) if ks is not None else list(range(1, n + 1))
    if max(ks) > n:
        raise ValueError(f"pass@{max(ks)} needs at least {max(ks)} samples per problem; raise n (got {n})")
    dev = next(model.parameters()).device
    gen = torch.Generator(device=dev).manual_seed(seed)
    max_new = generation_length(task, max_new_tokens)
    flat = [p for p in problems for _ in range(n)]          # sample j of problem i sits at i * n + j
    texts, correct, ent_sum, ent_tok = [], [], 0.0, 0
    for i in range(0, len(flat), batch_size):
        chunk = flat[i:i + batch_size]
        ids, mask = prompt_batch(tokenizer, chunk, dev, task=task)
        r = sample(model, ids, mask, max_new_tokens=max_new, eos_token_id=tokenizer.eos_token_id,
                   pad_token_id=tokenizer.pad_token_id, temperature=temperature, generator=gen)
        out = decode_completions(tokenizer, r)
        texts += out
        correct += [task.verify(p, t, truncated=tr).correct for p, t, tr in zip(chunk, out, r.truncated.tolist())]
        m = r.completion_mask
        ent_sum += float(L.masked_sum(L.entropy(completion_logits(model, r), m)[1], m))
        ent_tok += int(m.sum())
    counts = [sum(correct[i * n:(i + 1) * n]) for i in range(len(problems))]
    orders = None
    if hasattr(task, "column_orders"):
        orders = order_statistics([[task.column_orders(p.prompt, texts[i * n + j]) for j in range(n)]
                                   for i, p in enumerate(problems)])
    return {"pass_at_k": pass_at_k_curve(counts, n, ks), "correct_counts": counts, "n": n, "orders": orders,
            "token_entropy": ent_sum / max(ent_tok, 1), "sampled_accuracy": sum(counts) / (n * len(problems))}
