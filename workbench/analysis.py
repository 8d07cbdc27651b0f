"""Analyses the notebooks show: scratchpad columns graded on the model's own prefix, and estimator
gradient variance. (`experiments.column_error_profile` aggregates `column_steps` per column.)

Kept out of the notebooks so that they stay a few lines per cell, and tested
(tests/test_analysis.py) against hand-made completions.
"""
from __future__ import annotations

import re

import torch

from . import losses as L
from .batching import prompt_batch
from .rollout import completion_logits, sample

_ADD_COL = re.compile(r"^(\d)\+(\d)\+(\d)=(\d\d)$")
_MUL_COL = re.compile(r"^(\d)\*(\d)\+(\d)=(\d\d)$")


def column_steps(task, problem, completion: str) -> list[dict]:
    """Grade each scratchpad column of an `addition`/`multiply` completion.

    For column i: `ok_reference` — the column equals the reference solution's;
    `ok_local` — the column is right *given the student's own previous column*
    (right operand digits from the prompt, carry-in = its own previous carry-out,
    right arithmetic). After a first mistake, `ok_local` tells whether the model
    still executes the procedure correctly on its own, off-distribution prefix —
    the quantity exposure bias is about.
    """
    pat = _ADD_COL if task.name == "addition" else _MUL_COL if task.name == "multiply" else None
    if pat is None:
        raise ValueError(f"column_steps understands the addition and multiply scratchpads, not {task.name!r}")
    scratch = completion.split("|")[0]
    ref_cols = problem.solution.split("|")[0].rstrip(",").split(",")
    cols = scratch.rstrip(",").split(",") if scratch else []
    if task.name == "addition":
        a, b = problem.prompt.rstrip("=").split("+")
        digits = list(zip(reversed(a), reversed(b)))
    else:
        a, d = problem.prompt.rstrip("=").split("*")
        digits = [(x, d) for x in reversed(a)]
    out, carry = [], 0
    for i, col in enumerate(cols):
        m = pat.match(col)
        ok_ref = i < len(ref_cols) and col == ref_cols[i]
        if not m or i >= len(digits):
            out.append({"column": i, "ok_reference": ok_ref, "ok_local": False, "parsed": False})
            carry = 0
            continue
        x, y, c, total = int(m[1]), int(m[2]), int(m[3]), int(m[4])
        want = (x + y + c) if task.name == "addition" else (x * y + c)
        ok_local = (str(x), str(y)) == tuple(digits[i]) and c == carry and total == want
        out.append({"column": i, "ok_reference": ok_ref, "ok_local": ok_local, "parsed": True})
        carry = total // 10
    return out


ESTIMATORS = ("sampled_token", "vopd", "full_kl", "topk")


def estimator_gradients(student, teacher, tokenizer, problems, *, estimators=ESTIMATORS, repeats: int = 8,
                        batch_size: int = 16, topk: int = 4, max_new_tokens: int = 64, seed: int = 0) -> dict:
    """Gradient variance of OPD estimators at the current student (parameters are not updated).

    Each repeat samples a fresh minibatch of `batch_size` rollouts and computes every estimator's
    gradient on it; per estimator we report the mean squared distance of the minibatch gradients
    from the full-vocabulary reverse-KL gradient averaged over all repeats (the analytic target),
    and the cosine between its mean gradient and that target. Lower variance = fewer samples
    needed per step for the same signal.
    """
    params = [p for p in student.parameters() if p.requires_grad]
    dev = params[0].device
    gen = torch.Generator(device=dev).manual_seed(seed)
    grads = {e: [] for e in estimators}
    for rep in range(repeats):
        chunk = [problems[(rep * batch_size + i) % len(problems)] for i in range(batch_size)]
        ids, mask = prompt_batch(tokenizer, chunk, dev)
        r = sample(student, ids, mask, max_new_tokens=max_new_tokens, eos_token_id=tokenizer.eos_token_id,
                   pad_token_id=tokenizer.pad_token_id, temperature=1.0, generator=gen)
        with torch.no_grad():
            t_logits = completion_logits(teacher, r)
        for e in estimators:
            s_logits = completion_logits(student, r)
            m = r.completion_mask
            s_lp = L.token_logprobs(s_logits, r.completion_ids)
            t_lp = L.token_logprobs(t_logits, r.completion_ids)
            if e in ("sampled_token", "vopd"):
                adv = L.opd_token_rewards(s_lp, t_lp)
                if e == "vopd":
                    adv = L.vopd_advantages(adv, L.full_reverse_kl(s_logits.detach(), t_logits, m)[1])
                # surrogate whose gradient estimates grad KL: minimise -A log p
                loss = L.sampled_token_opd_loss(s_lp, adv, m)
            elif e == "full_kl":
                loss = L.full_reverse_kl(s_logits, t_logits, m)[0]
            elif e == "topk":
                loss = L.topk_reverse_kl(s_logits, t_logits, m, k=topk)[0]
            else:
                raise ValueError(f"unknown estimator {e!r}; choose from {ESTIMATORS}")
            g = torch.autograd.grad(loss, params)
            grads[e].append(torch.cat([x.reshape(-1) for x in g]).detach())
    target = torch.stack(grads["full_kl"]).mean(0) if "full_kl" in grads else None
    out = {}
    for e, gs in grads.items():
        G = torch.stack(gs)
        mean = G.mean(0)
        var = ((G - mean) ** 2).sum(1).mean().item()
        row = {"variance": var, "mean_norm": mean.norm().item()}
        if target is not None:
            row["cosine_to_full_kl"] = torch.nn.functional.cosine_similarity(mean, target, dim=0).item()
        out[e] = row
    return out
