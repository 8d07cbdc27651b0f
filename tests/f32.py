"""Float32 tolerances for comparing two implementations of one computation (issue 15).

Two kernels computing the same float32 function (the HF forward vs the fast engine's fused decode, the C
kernels vs torch, one thread vs two, AVX2 vs AVX-512 BLAS) add in different orders, so their results differ
in the last bits, and differently on every CPU. A comparison between them allows for float32 rounding sized
from the computation, never from the digits one machine produced; bit-exact checks stay where the same ops
run in the same process (resume, determinism, a path compared with itself).

The bound. A float32 dot product of n terms has rounding error at most ~n*eps*sum|a_i*b_i| and, for the
blocked sums BLAS uses with rounding errors of random sign, typically ~sqrt(n)*eps*sum|a_i*b_i| (Higham,
"Accuracy and Stability of Numerical Algorithms", 2nd ed., sections 3.1 and 2.8). A logit goes through a
few such products per layer, each of width <= WIDTH = max(hidden, intermediate), plus the head; the errors
of the layers add. Relative to the size of the logits that gives

    |delta logit| <= SAFETY * eps32 * sqrt(WIDTH) * (n_layers + 1) * max(1, max|logit|)

and log_softmax at most doubles it (|d log p| <= |d logit| + |d logsumexp| <= 2 max|d logit|).
SAFETY = 16 covers the few products per layer (q/k/v/o, gate/up/down) and correlated signs; on the
machine the suite was written on the measured differences are 10-100x below this, and a real bug (a wrong
position, a missing adapter, a wrong scale) moves log-probs by 1e-2 or more, far above it.
"""
from __future__ import annotations

import math

import torch

EPS32 = torch.finfo(torch.float32).eps
SAFETY = 16.0


def _dims(model):
    cfg = model.config
    width = max(getattr(cfg, "hidden_size", 1) or 1, getattr(cfg, "intermediate_size", 0) or 0,
                getattr(cfg, "n_inner", 0) or 0, 4 * (getattr(cfg, "n_embd", 0) or 0))
    layers = getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "n_layer", 1)
    return width, layers


def logit_tol(model, logits_scale: float) -> float:
    """Largest difference two kernels may show in a logit of `model` whose logits are ~logits_scale (eps of the
    model's weight dtype: float32, or bfloat16 for a bf16 model)."""
    width, layers = _dims(model)
    eps = max(torch.finfo(p.dtype).eps for p in model.parameters() if p.is_floating_point())
    return SAFETY * eps * math.sqrt(width) * (layers + 1) * max(1.0, float(logits_scale))


@torch.no_grad()
def _logits(model, ids, mask):
    from workbench.rollout import positions_from_mask
    return model(input_ids=ids, attention_mask=mask, position_ids=positions_from_mask(mask.long())).logits.float()


@torch.no_grad()
def logprob_tol(model, ids, mask) -> float:
    """Tolerance for log-probs of `model` on sequences `ids` (logit scale measured on them)."""
    scale = _logits(model, ids, mask).abs().max().item()
    return 2 * logit_tol(model, scale)


def assert_logprobs_close(model, rollout, got, want):
    """got ~ want for the log-probs of `rollout`'s completions, within the float32 bound above."""
    tol = logprob_tol(model, rollout.input_ids, rollout.attention_mask)
    err = (got - want).abs().max().item()
    assert err <= tol, f"log-probs differ by {err:.3g} > float32 bound {tol:.3g}"


@torch.no_grad()
def assert_greedy_agrees(model, ids, mask, got, want, eos_token_id=2, min_equal=0.8):
    """Greedy completions `got` (one kernel) equal `want` (another), except where a row's first difference is
    at a near-tie: the two tokens' logits, re-scored by a plain forward over the common prefix, are within
    float32 error of each other (`logit_tol`), so either kernel may legitimately pick either. Such a row
    continues differently afterwards and is not compared further. At least `min_equal` of the rows must be
    identical, so a kernel that is wrong everywhere cannot hide behind ties."""
    assert got.shape[0] == want.shape[0], (got.shape, want.shape)
    n = min(got.shape[1], want.shape[1])
    same = 0
    for b in range(got.shape[0]):
        g, w = got[b].tolist(), want[b].tolist()
        end_g = g.index(eos_token_id) + 1 if eos_token_id in g else len(g)
        end_w = w.index(eos_token_id) + 1 if eos_token_id in w else len(w)
        if g[:end_g] == w[:end_w]:
            same += 1
            continue
        t = next((i for i in range(min(end_g, end_w, n)) if g[i] != w[i]), None)
        assert t is not None, f"row {b}: same tokens, different lengths ({end_g} vs {end_w})"
        prefix = torch.tensor([w[:t]], dtype=torch.long, device=ids.device)
        seq = torch.cat([ids[b:b + 1], prefix], 1)
        m = torch.cat([mask[b:b + 1], torch.ones_like(prefix)], 1)
        logits = _logits(model, seq, m)[0, -1]
        gap = (logits[w[t]] - logits[g[t]]).abs().item()
        tol = logit_tol(model, logits.abs().max().item())
        assert gap <= tol, (f"row {b} differs at step {t} ({g[t]} vs {w[t]}) where the logits are "
                            f"{gap:.3g} apart, not a float32 tie (bound {tol:.3g})")
    assert same >= min_equal * got.shape[0], f"only {same}/{got.shape[0]} rows identical"


@torch.no_grad()
def assert_samples_scored_by_hand(samples, tok, teacher, student, teacher_temperature: float = 1.0) -> int:
    """Every record sample's `student_logprob` and `token_reward` (= log q - log p) against a one-sequence,
    unpadded forward of each model. Records round to 4 decimals (5e-5); the trainer's padded batch forward
    differs from this one by float32 rounding, bounded per model as above (dividing the teacher's logits by a
    temperature > 1 only shrinks that error). q: the teacher's softmax at `teacher_temperature`. Returns the
    tokens checked."""
    checked = 0
    for s in samples:
        prompt = [tok.bos_token_id] + [tok.convert_tokens_to_ids(c) for c in s["prompt"]]
        comp = tok.convert_tokens_to_ids(s["tokens"])
        ids = torch.tensor([prompt + comp])
        t_lp = torch.log_softmax(teacher(input_ids=ids).logits[0].float() / teacher_temperature, -1)
        s_lp = torch.log_softmax(student(input_ids=ids).logits[0].float(), -1)
        mask = torch.ones_like(ids)
        tol_p = 5e-5 + logprob_tol(student, ids, mask)
        tol_r = tol_p + logprob_tol(teacher, ids, mask)
        P = len(prompt)
        for t, tid in enumerate(comp):
            q, p = t_lp[P - 1 + t, tid].item(), s_lp[P - 1 + t, tid].item()
            assert abs(s["student_logprob"][t] - p) <= tol_p, (t, s["student_logprob"][t], p, tol_p)
            assert abs(s["token_reward"][t] - (q - p)) <= tol_r, (t, s["token_reward"][t], q - p, tol_r)
            checked += 1
    return checked
