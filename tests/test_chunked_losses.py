"""The low-memory (chunked) losses and statistics of issue 22 against the reference functions in
workbench.losses: values and gradients on random float32 inputs, with masks, temperature != 1, -inf teacher
entries and chunk sizes that split rows, whole rows and everything at once; the trainer's chunked path
against its previous full-copy path; and the memory each form holds, counted by the live-tensor tracker.

Tolerances (float32). Both forms run the same ops on the same rows; what may differ is the order of
float32 additions: within a position's sum over V terms and in the masked mean over B*T positions. A sum
of n terms has rounding error at most ~n * eps * sum|terms| (Higham, 2nd ed., section 3.1), and each term
of these divergences is at most p_v * |log p_v - log q_v|, summing to at most SCALE = 2 max|z|/T + log V
(z the logits). So values agree within SAFETY * eps * (V + B*T) * SCALE and gradients (a softmax times
log-prob differences, scaled by the mask weight / denominator) within SAFETY * eps * V * SCALE * max|grad|.
A real bug (a chunk at the wrong offset, a lost mask or temperature) moves them by 1e-2 or more.
"""
import copy
import math

import pytest
import torch

from workbench import losses as L
from workbench import memory
from workbench.config import TrainConfig
from workbench.trainer import Trainer

EPS32 = torch.finfo(torch.float32).eps
SAFETY = 4.0
B, T, V = 3, 7, 50
F = torch.float32


def _inputs(seed=0, neg_inf=True):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(B, T, V, generator=g) * 2.0
    t = torch.randn(B, T, V, generator=g) * 2.0
    if neg_inf:          # a banned vocabulary entry of the teacher at a few positions, one of them masked out
        t[0, 0, 3] = t[1, 2, 7] = t[2, 6, :5] = float("-inf")
    mask = (torch.rand(B, T, generator=g) > 0.3).float()
    mask[2] = 0          # an empty row
    mask[0, 0] = 1
    ids = torch.randint(0, V, (B, T), generator=g)
    return s, t, mask, ids


def _tols(s, temperature=1.0):
    scale = 2 * s[torch.isfinite(s)].abs().max().item() / temperature + math.log(V)
    return SAFETY * EPS32 * (V + B * T) * scale, SAFETY * EPS32 * V * scale


# chunk sizes in float32 bytes of logits: 2 positions (splits rows), 2 whole rows (T positions each), all at once
CHUNKS = [4 * V * 2, 4 * V * T * 2, None]


def _value_and_grad(fn, s, weight=1.7):
    x = s.clone().requires_grad_()
    out = fn(x)
    (weight * out).backward()        # a non-unit upstream gradient (the trainer adds coefficients)
    return out.detach(), x.grad


def _check(ref_fn, new_fn, s, temperature=1.0):
    v_ref, g_ref = _value_and_grad(ref_fn, s)
    v_new, g_new = _value_and_grad(new_fn, s)
    tol_v, tol_g = _tols(s, temperature)
    assert tol_v < 1e-3 and tol_g < 1e-3          # far below what a wrong chunk, mask or temperature does
    assert torch.isfinite(v_ref).all() and torch.isfinite(g_ref).all()
    assert (v_new - v_ref).abs().max().item() <= tol_v * max(1.0, v_ref.abs().max().item()), (v_new, v_ref)
    err = (g_new - g_ref).abs().max().item()
    assert err <= tol_g * max(1.0, g_ref.abs().max().item()), (err, tol_g)
    assert g_ref.abs().max().item() > 10 * tol_g      # the gradient is not trivially zero
    return v_ref, g_ref


@pytest.mark.parametrize("chunk", CHUNKS)
@pytest.mark.parametrize("temperature", [1.0, 1.7])
def test_full_reverse_kl_chunked_equals_reference(chunk, temperature):
    s, t, mask, _ = _inputs(neg_inf=False)      # reverse KL at a -inf teacher entry is inf: the trainer floors it
    t[0, 0, 3] = L.TEACHER_LOGIT_FLOOR
    for m in (mask, mask.bool(), None, mask * 0.5 + 0.25 * (mask > 0)):     # float, bool, none, weights
        _check(lambda x: L.full_reverse_kl(x, t, m, temperature=temperature)[0],
               lambda x: L.full_reverse_kl_chunked(x, t, m, temperature=temperature, chunk_bytes=chunk)[0],
               s, temperature)
    ref = L.full_reverse_kl(s, t, mask, temperature=temperature)[1]
    new = L.full_reverse_kl_chunked(s, t, mask, temperature=temperature, chunk_bytes=chunk)[1]
    assert (new - ref).abs().max().item() <= _tols(s, temperature)[0]
    _check(lambda x: L.kl_to_reference(x, t, mask)[0],
           lambda x: L.kl_to_reference_chunked(x, t, mask, chunk_bytes=chunk)[0], s)


@pytest.mark.parametrize("chunk", CHUNKS)
@pytest.mark.parametrize("beta,temperature", [(0.0, 1.0), (0.5, 1.0), (0.3, 2.0), (1.0, 0.8)])
def test_generalized_jsd_chunked_equals_reference(chunk, beta, temperature):
    s, t, mask, _ = _inputs()
    if beta == 1.0:
        t = t.clamp(min=L.TEACHER_LOGIT_FLOOR)   # the reverse-KL end point: a -inf teacher entry is an inf KL
    _check(lambda x: L.generalized_jsd(x, t, beta=beta, temperature=temperature, mask=mask),
           lambda x: L.generalized_jsd_chunked(x, t, beta=beta, temperature=temperature, mask=mask,
                                               chunk_bytes=chunk), s, temperature)


@pytest.mark.parametrize("chunk", CHUNKS)
@pytest.mark.parametrize("renorm,use_sampled", [(True, False), (True, True), (False, True)])
def test_topk_reverse_kl_chunked_equals_reference(chunk, renorm, use_sampled):
    s, t, mask, ids = _inputs()
    sampled = ids if use_sampled else None
    t = t.clamp(min=L.TEACHER_LOGIT_FLOOR) if use_sampled else t     # a sampled token may be a banned one
    _check(lambda x: L.topk_reverse_kl(x, t, mask, k=5, renormalize=renorm, sampled_ids=sampled)[0],
           lambda x: L.topk_reverse_kl_chunked(x, t, mask, k=5, renormalize=renorm, sampled_ids=sampled,
                                               chunk_bytes=chunk)[0], s)


@pytest.mark.parametrize("chunk", CHUNKS)
def test_token_logprobs_chunked_equals_reference(chunk):
    s, _, mask, ids = _inputs()
    s[1, 3, 11] = float("-inf")                  # a banned entry the sampled token is not
    ids[1, 3] = 12
    w = torch.linspace(0.5, 2.0, B * T).reshape(B, T) * mask
    _check(lambda x: (L.token_logprobs(x, ids) * w).sum(), lambda x: (L.token_logprobs_chunked(
        x, ids, chunk_bytes=chunk) * w).sum(), s)
    with torch.no_grad():       # and without a graph (the teacher's log-probs)
        assert (L.token_logprobs_chunked(s, ids, chunk) - L.token_logprobs(s, ids)).abs().max().item() <= _tols(s)[0]


@pytest.mark.parametrize("chunk", CHUNKS)
def test_step_statistics_equal_the_reference_functions(chunk):
    s, t, mask, _ = _inputs()
    t = t.clamp(min=L.TEACHER_LOGIT_FLOOR)
    got = L.step_statistics(s, t, mask, k=4, chunk_bytes=chunk)
    want = {"entropy": L.entropy(s, mask)[0], "reverse_kl": L.full_reverse_kl(s, t, mask)[0],
            "topk_overlap": L.topk_overlap(s, t, 4, mask), "top1_overlap": L.topk_overlap(s, t, 1, mask)}
    tol = _tols(s)[0]
    for k, v in want.items():
        assert abs(got[k].item() - v.item()) <= tol, (k, got[k], v)
    assert set(L.step_statistics(s, None, mask, chunk_bytes=chunk)) == {"entropy"}


def test_half_precision_logits_are_upcast_per_chunk():
    """bf16 logits kept in bf16 (the trainer's chunked path): the same values as the reference's whole upcast,
    and the gradient comes back in bf16 as the reference's cast-back does."""
    s, t, mask, ids = _inputs()
    t = t.clamp(min=L.TEACHER_LOGIT_FLOOR)
    sb, tb = s.bfloat16(), t.bfloat16()
    v_ref, g_ref = _value_and_grad(lambda x: L.generalized_jsd(x, tb, beta=0.5, mask=mask), sb)
    v_new, g_new = _value_and_grad(lambda x: L.generalized_jsd_chunked(x, tb, beta=0.5, mask=mask,
                                                                       chunk_bytes=CHUNKS[0]), sb)
    assert v_new.dtype == v_ref.dtype == torch.float32 and g_new.dtype == torch.bfloat16
    assert abs(v_new.item() - v_ref.item()) <= _tols(s)[0]
    bf16_eps = torch.finfo(torch.bfloat16).eps      # both gradients end in one bf16 rounding
    assert (g_new.float() - g_ref.float()).abs().max().item() <= bf16_eps * g_ref.float().abs().max().item()
    lp = L.token_logprobs_chunked(sb, ids, CHUNKS[0])
    assert lp.dtype == torch.float32 and (lp - L.token_logprobs(sb, ids)).abs().max().item() <= _tols(s)[0]


def test_bad_input_fails_before_work():
    s, t, mask, _ = _inputs()
    with pytest.raises(ValueError, match="beta must lie in"):
        L.generalized_jsd_chunked(s, t, beta=1.5, mask=mask)
    with pytest.raises(ValueError, match=r"\[B, T, V\] logits"):
        L.full_reverse_kl_chunked(s[0], t[0])


def test_backward_twice_through_a_chunked_loss_says_why():
    s, t, mask, _ = _inputs()
    x = s.clone().requires_grad_()
    loss = L.generalized_jsd_chunked(x, t, mask=mask)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="frees its gradient buffer"):
        loss.backward()


# ---- memory: what each form holds (live tensor storage, counted by the planner's tracker) ----------------

def test_chunked_forms_hold_one_gradient_buffer_not_full_copies():
    Bm, Tm, Vm = 4, 32, 8192
    g = torch.Generator().manual_seed(0)
    s = torch.randn(Bm, Tm, Vm, generator=g)
    t = torch.randn(Bm, Tm, Vm, generator=g)
    mask = torch.ones(Bm, Tm)
    copy_bytes = Bm * Tm * Vm * 4
    chunk = 4 * Vm * 8                                    # 8 positions per chunk: 1/16 of the logits

    def peak(fn):
        x = s.clone().requires_grad_()
        tr = memory.LiveTensorTracker()
        with tr:
            tr.add_existing([x, t])
            before = tr.current
            fn(x).backward()
            del x
        return tr.peak - before

    for ref, new in ((lambda x: L.generalized_jsd(x, t, beta=0.5, mask=mask),
                      lambda x: L.generalized_jsd_chunked(x, t, beta=0.5, mask=mask, chunk_bytes=chunk)),
                     (lambda x: L.full_reverse_kl(x, t, mask)[0],
                      lambda x: L.full_reverse_kl_chunked(x, t, mask, chunk_bytes=chunk)[0]),
                     (lambda x: L.token_logprobs(x, t.argmax(-1)).sum(),
                      lambda x: L.token_logprobs_chunked(x, t.argmax(-1), chunk_bytes=chunk).sum())):
        p_ref, p_new = peak(ref), peak(new)
        # chunked: the gradient buffer (which becomes x.grad) plus a few chunk-sized transients
        assert p_new <= copy_bytes + 16 * chunk, (p_new / copy_bytes)
        assert p_ref >= 3 * copy_bytes, (p_ref / copy_bytes)        # the reference keeps full-size copies
    tr = memory.LiveTensorTracker()
    with tr:
        tr.add_existing([s, t])
        before = tr.current
        L.step_statistics(s, t, mask, k=4, chunk_bytes=chunk)
    assert tr.peak - before <= 16 * chunk


# ---- the trainer: the chunked path against the previous full-copy path ----------------------------------

SMALL = dict(batch_size=8, eval_problems=8, eval_every=0, steps=1, device="cpu", student_samples_every=0,
             num_samples=0)
NUMBERS = ("loss", "grad/norm", "policy/entropy", "teacher/reverse_kl", "teacher/topk_overlap",
           "teacher/top1_overlap", "teacher/token_reward_mean", "opd/advantage_mean", "ref/kl", "gold/sft_loss")


@pytest.mark.parametrize("method,kw", [
    ("opd", {}), ("opd", {"vopd": True}), ("opd_full", {}), ("gkd", {"lmbda": 1.0, "jsd_temperature": 1.5}),
    ("opd", {"loss": "topk", "teacher_topk": 3}), ("exopd", {}), ("stable_opd", {}), ("sft", {}),
])
def test_trainer_chunked_path_matches_the_full_copy_path(method, kw, models, tok, monkeypatch):
    teacher, student = models
    recs, weights = {}, {}
    for chunked in (False, True):
        monkeypatch.setattr(Trainer, "chunked_logits", chunked)
        monkeypatch.setattr(L, "CHUNK_BYTES", 4 * student.config.vocab_size * 5)      # 5 positions per chunk: many chunks
        tr = Trainer(TrainConfig.for_method(method, **{**SMALL, **kw}), teacher=teacher,
                     student=copy.deepcopy(student), tokenizer=tok)
        recs[chunked] = tr.step()
        weights[chunked] = torch.cat([p.detach().flatten() for p in tr.student.parameters()])
    old, new = recs[False], recs[True]
    tol = SAFETY * EPS32 * (student.config.vocab_size + 8 * old["max_new_tokens"]) * 30      # logits of these models are < 10
    compared = 0
    for k in NUMBERS:
        if k in old:
            assert k in new, k
            assert abs(new[k] - old[k]) <= tol * max(1.0, abs(old[k])), (k, new[k], old[k])
            compared += 1
    assert compared >= 3
    # one AdamW step of at most lr per weight from the same weights: the updates agree (a sign flip of a
    # gradient within rounding of 0 moves a weight by up to 2 lr; bounded, and rare)
    lr = TrainConfig.for_method(method, **{**SMALL, **kw}).lr
    assert (weights[True] - weights[False]).abs().max().item() <= 2 * lr * 1.001
    assert (weights[True] - weights[False]).abs().mean().item() <= 1e-3 * lr
