"""Checks of workbench.losses against independent computations.

Brute-force python loops over tiny vocabularies, finite differences in float64,
Monte-Carlo checks of the sampled-token estimators and hand-written formulas.
"""

import math

import numpy as np
import pytest
import torch

torch.set_num_threads(1)

from workbench import losses as L  # noqa: E402

D = torch.float64


def _rand(*shape, seed=0, scale=1.5):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=D) * scale


def _mask(B=3, T=5):
    m = torch.zeros(B, T, dtype=D)
    lengths = [5, 3, 1][:B] + [2] * max(0, B - 3)
    starts = [0, 1, 2][:B] + [0] * max(0, B - 3)
    for b in range(B):
        m[b, starts[b]:starts[b] + lengths[b]] = 1
    m = m[:, :T]
    return m


def _softmax_list(z):
    mx = max(z)
    e = [math.exp(x - mx) for x in z]
    s = sum(e)
    return [x / s for x in e]


def _kl_list(p, q):
    return sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q) if pi > 0)


def _masked_mean_loop(per, mask):
    num = den = 0.0
    for b in range(len(per)):
        for t in range(len(per[0])):
            if mask[b][t]:
                num += per[b][t]
                den += 1
    return num / den


# --------------------------------------------------------------------------- #
# helpers and reductions
# --------------------------------------------------------------------------- #
def test_masked_helpers_empty_mask_and_inf():
    x = torch.tensor([[1.0, float("-inf"), 3.0]], requires_grad=True)
    m = torch.tensor([[1.0, 0.0, 1.0]])
    assert L.masked_mean(x, m).item() == pytest.approx(2.0)
    assert L.masked_sum(x, m).item() == pytest.approx(4.0)
    L.masked_mean(x, m).backward()
    assert torch.isfinite(x.grad).all()
    assert x.grad[0, 1] == 0
    z = L.masked_mean(torch.tensor([[1.0, 2.0]]), torch.zeros(1, 2))
    assert z.item() == 0.0 and not torch.isnan(z)
    bm = torch.tensor([[True, False, True]])
    assert L.masked_mean(x.detach(), bm).item() == pytest.approx(2.0)


def test_token_logprobs_and_neg_inf_vocab():
    z = _rand(2, 3, 6)
    z[..., 4] = float("-inf")
    ids = torch.tensor([[0, 1, 5], [2, 3, 0]])
    z.requires_grad_(True)
    lp = L.token_logprobs(z, ids)
    for b in range(2):
        for t in range(3):
            p = _softmax_list([v for v in z[b, t].tolist()])
            assert lp[b, t].item() == pytest.approx(math.log(p[ids[b, t]]), abs=1e-12)
    lp.sum().backward()
    assert torch.isfinite(lp).all() and torch.isfinite(z.grad).all()


def test_half_precision_is_upcast():
    z = _rand(2, 3, 6, seed=70).to(torch.bfloat16)
    ids = torch.tensor([[0, 1, 5], [2, 3, 0]])
    lp = L.token_logprobs(z, ids)
    assert lp.dtype == torch.float32
    ref = torch.log_softmax(z.float(), -1).gather(-1, ids[..., None])[..., 0]
    torch.testing.assert_close(lp, ref, rtol=0, atol=1e-6)
    assert L.full_reverse_kl(z, z)[0].dtype == torch.float32


def test_discounted_returns_vs_loop():
    r = _rand(3, 6, seed=1)
    m = torch.tensor([[0, 1, 1, 1, 1, 0],
                      [1, 1, 0, 1, 0, 0],   # hole in the middle: skipped, not a reset
                      [0, 0, 0, 0, 0, 0]], dtype=D)
    r[0, 0] = float("-inf")          # garbage at masked positions is ignored
    for gamma in (0.0, 0.5, 1.0):
        out = L.discounted_returns(r, m, gamma)
        for b in range(3):
            for t in range(6):
                exp = 0.0
                if m[b, t]:
                    for k in range(6 - t):
                        if m[b, t + k]:
                            exp += gamma ** k * r[b, t + k].item()
                assert out[b, t].item() == pytest.approx(exp, abs=1e-12)
    assert torch.equal(L.discounted_returns(r, m, 0.0), torch.where(m > 0, r, 0.0) * m)


def test_reductions_vs_manual():
    lp = _rand(3, 5, seed=2)
    adv = _rand(3, 5, seed=3)
    m = _mask()
    per = (-adv * lp).tolist()
    ml = m.tolist()
    tm = _masked_mean_loop(per, ml)
    sm = sum(per[b][t] for b in range(3) for t in range(5) if ml[b][t]) / 3
    seq = sum(sum(per[b][t] for t in range(5) if ml[b][t]) / sum(ml[b]) for b in range(3)) / 3
    assert L.sampled_token_opd_loss(lp, adv, m, "token_mean").item() == pytest.approx(tm, abs=1e-12)
    assert L.sampled_token_opd_loss(lp, adv, m, "sum").item() == pytest.approx(sm, abs=1e-12)
    assert L.sampled_token_opd_loss(lp, adv, m, "seq_mean").item() == pytest.approx(seq, abs=1e-12)
    # the three really differ on this ragged mask
    assert abs(tm - sm) > 1e-3 and abs(tm - seq) > 1e-3
    # policy_gradient_loss shares the reductions (ratio == 1 in value)
    for red in L.REDUCTIONS:
        a = L.policy_gradient_loss(lp, lp, adv, m, reduction=red)
        b = L.sampled_token_opd_loss(torch.zeros_like(lp), adv, m, red)  # -A*0 = 0
        per_one = L._reduce(-adv, m, red)
        assert a.item() == pytest.approx(per_one.item(), abs=1e-12)
        assert b.item() == 0
    with pytest.raises(ValueError, match="reduction"):
        L.sampled_token_opd_loss(lp, adv, m, "mean")
    with pytest.raises(ValueError, match="reduction"):
        L.policy_gradient_loss(lp, lp, adv, m, reduction="batchmean")


def test_sampled_token_with_sampler_ratio():
    z = _rand(2, 4, 5, seed=4).requires_grad_(True)
    ids = torch.tensor([[0, 1, 2, 3], [4, 0, 1, 2]])
    adv = _rand(2, 4, seed=5)
    m = torch.ones(2, 4, dtype=D)
    lp = L.token_logprobs(z, ids)
    old = lp.detach() - 0.3
    loss = L.sampled_token_opd_loss(lp, adv, m, sampler_logprobs=old)
    assert loss.item() == pytest.approx((-(adv * torch.exp(lp.detach() - old))).mean().item(), abs=1e-12)
    # at ratio 1 the gradient equals the plain surrogate's
    g1, = torch.autograd.grad(L.sampled_token_opd_loss(lp, adv, m, sampler_logprobs=lp.detach()), z, retain_graph=True)
    g2, = torch.autograd.grad(L.sampled_token_opd_loss(lp, adv, m), z)
    torch.testing.assert_close(g1, g2, rtol=0, atol=1e-12)


# --------------------------------------------------------------------------- #
# full-distribution losses vs brute-force loops
# --------------------------------------------------------------------------- #
def test_full_reverse_kl_brute_force():
    zs, zt = _rand(3, 5, 6, seed=6), _rand(3, 5, 6, seed=7)
    m = _mask()
    for temp in (1.0, 2.0):
        loss, per = L.full_reverse_kl(zs, zt, m, temperature=temp)
        exp_per = [[_kl_list(_softmax_list((zs[b, t] / temp).tolist()),
                             _softmax_list((zt[b, t] / temp).tolist()))
                    for t in range(5)] for b in range(3)]
        torch.testing.assert_close(per, torch.tensor(exp_per, dtype=D), rtol=0, atol=1e-12)
        assert loss.item() == pytest.approx(_masked_mean_loop(exp_per, m.tolist()), abs=1e-12)
    loss_nomask, per = L.full_reverse_kl(zs, zt)
    assert loss_nomask.item() == pytest.approx(per.mean().item(), abs=1e-14)


def test_kl_to_reference_and_entropy_and_ce_brute_force():
    zs, zr = _rand(3, 5, 7, seed=8), _rand(3, 5, 7, seed=9)
    m = _mask()
    loss, per = L.kl_to_reference(zs, zr, m)
    exp_per = [[_kl_list(_softmax_list(zs[b, t].tolist()), _softmax_list(zr[b, t].tolist()))
                for t in range(5)] for b in range(3)]
    assert loss.item() == pytest.approx(_masked_mean_loop(exp_per, m.tolist()), abs=1e-12)
    # gradient only through the student
    zs_g, zr_g = zs.clone().requires_grad_(True), zr.clone().requires_grad_(True)
    L.kl_to_reference(zs_g, zr_g, m)[0].backward()
    assert zr_g.grad is None and zs_g.grad.abs().sum() > 0

    H, per_h = L.entropy(zs, m)
    exp_h = [[-sum(p * math.log(p) for p in _softmax_list(zs[b, t].tolist()))
              for t in range(5)] for b in range(3)]
    torch.testing.assert_close(per_h, torch.tensor(exp_h, dtype=D), rtol=0, atol=1e-12)
    assert H.item() == pytest.approx(_masked_mean_loop(exp_h, m.tolist()), abs=1e-12)

    tgt = torch.randint(0, 7, (3, 5), generator=torch.Generator().manual_seed(0))
    tgt_junk = torch.where(m > 0, tgt, torch.full_like(tgt, -100))
    ce = L.cross_entropy_loss(zs, tgt_junk, m)
    exp_ce = [[-math.log(_softmax_list(zs[b, t].tolist())[tgt[b, t]]) for t in range(5)] for b in range(3)]
    assert ce.item() == pytest.approx(_masked_mean_loop(exp_ce, m.tolist()), abs=1e-12)
    assert L.cross_entropy_loss(zs, tgt_junk, None).item() == pytest.approx(ce.item(), abs=1e-12)
    # agrees with torch's own cross entropy on the valid tokens
    ref = torch.nn.functional.cross_entropy(zs.reshape(-1, 7), tgt_junk.reshape(-1), ignore_index=-100)
    assert ce.item() == pytest.approx(ref.item(), abs=1e-12)


def _jsd_loop(zs_row, zt_row, beta, temp):
    ps = _softmax_list([z / temp for z in zs_row])
    pt = _softmax_list([z / temp for z in zt_row])
    if beta == 0:
        return _kl_list(pt, ps)
    if beta == 1:
        return _kl_list(ps, pt)
    mix = [(1 - beta) * a + beta * b for a, b in zip(ps, pt)]
    return beta * _kl_list(pt, mix) + (1 - beta) * _kl_list(ps, mix)


@pytest.mark.parametrize("beta", [0.0, 0.3, 0.5, 1.0])
@pytest.mark.parametrize("temp", [1.0, 2.0])
def test_generalized_jsd_brute_force(beta, temp):
    zs, zt = _rand(3, 5, 5, seed=10), _rand(3, 5, 5, seed=11)
    m = _mask()
    exp_per = [[_jsd_loop(zs[b, t].tolist(), zt[b, t].tolist(), beta, temp) for t in range(5)]
               for b in range(3)]
    got = L.generalized_jsd(zs, zt, beta=beta, temperature=temp, mask=m)
    assert got.item() == pytest.approx(_masked_mean_loop(exp_per, m.tolist()), abs=1e-12)
    got_all = L.generalized_jsd(zs, zt, beta=beta, temperature=temp)
    assert got_all.item() == pytest.approx(sum(map(sum, exp_per)) / 15, abs=1e-12)


def test_generalized_jsd_endpoints_are_exact_kls():
    zs, zt = _rand(2, 3, 5, seed=12), _rand(2, 3, 5, seed=13)
    ps, pt = torch.softmax(zs, -1), torch.softmax(zt, -1)
    fwd = (pt * (pt.log() - ps.log())).sum(-1).mean()
    rev = (ps * (ps.log() - pt.log())).sum(-1).mean()
    assert L.generalized_jsd(zs, zt, beta=0.0).item() == pytest.approx(fwd.item(), abs=1e-12)
    assert L.generalized_jsd(zs, zt, beta=1.0).item() == pytest.approx(rev.item(), abs=1e-12)
    assert L.full_reverse_kl(zs, zt)[0].item() == pytest.approx(rev.item(), abs=1e-12)
    # the endpoint discontinuity: beta=0.99 is a small fraction of the reverse KL
    near = L.generalized_jsd(zs, zt, beta=0.99).item()
    assert near < 0.05 * rev.item()
    with pytest.raises(ValueError):
        L.generalized_jsd(zs, zt, beta=1.5)


def _topk_loop(zs_row, zt_row, k, renorm, sampled=None):
    V = len(zt_row)
    order = sorted(range(V), key=lambda v: -zt_row[v])
    S = set(order[:k])
    if sampled is not None:
        S.add(sampled)
    if renorm:
        zs_s = {v: zs_row[v] for v in S}
        zt_s = {v: zt_row[v] for v in S}
        ls = math.log(sum(math.exp(x) for x in zs_s.values()))
        lt = math.log(sum(math.exp(x) for x in zt_s.values()))
        return sum(math.exp(zs_s[v] - ls) * ((zs_s[v] - ls) - (zt_s[v] - lt)) for v in S)
    ls = math.log(sum(math.exp(x) for x in zs_row))
    lt = math.log(sum(math.exp(x) for x in zt_row))
    return sum(math.exp(zs_row[v] - ls) * ((zs_row[v] - ls) - (zt_row[v] - lt)) for v in S)


@pytest.mark.parametrize("renorm", [True, False])
@pytest.mark.parametrize("use_sampled", [False, True])
def test_topk_reverse_kl_brute_force(renorm, use_sampled):
    zs, zt = _rand(3, 5, 7, seed=14), _rand(3, 5, 7, seed=15)
    m = _mask()
    ids = torch.randint(0, 7, (3, 5), generator=torch.Generator().manual_seed(1)) if use_sampled else None
    k = 3
    loss, per = L.topk_reverse_kl(zs, zt, m, k=k, renormalize=renorm, sampled_ids=ids)
    exp_per = [[_topk_loop(zs[b, t].tolist(), zt[b, t].tolist(), k, renorm,
                           None if ids is None else ids[b, t].item())
                for t in range(5)] for b in range(3)]
    torch.testing.assert_close(per, torch.tensor(exp_per, dtype=D), rtol=0, atol=1e-12)
    assert loss.item() == pytest.approx(_masked_mean_loop(exp_per, m.tolist()), abs=1e-12)
    if renorm:
        assert (per >= -1e-12).all()
    if use_sampled:
        # at least one sampled token lies outside the teacher top-k (so the union mattered)
        top = zt.topk(k, -1).indices
        assert not (top == ids.unsqueeze(-1)).any(-1).all()


def test_topk_full_vocab_equals_full_kl():
    zs, zt = _rand(2, 3, 6, seed=16), _rand(2, 3, 6, seed=17)
    a, _ = L.topk_reverse_kl(zs, zt, k=6)
    b, _ = L.full_reverse_kl(zs, zt)
    assert a.item() == pytest.approx(b.item(), abs=1e-12)


def test_topk_overlap_brute_force():
    zs, zt = _rand(3, 5, 7, seed=18), _rand(3, 5, 7, seed=19)
    m = _mask()
    for k in (1, 3, 5):
        per = []
        for b in range(3):
            row = []
            for t in range(5):
                ts = set(sorted(range(7), key=lambda v: -zs[b, t, v].item())[:k])
                tt = set(sorted(range(7), key=lambda v: -zt[b, t, v].item())[:k])
                row.append(len(ts & tt) / k)
            per.append(row)
        got = L.topk_overlap(zs, zt, k, m)
        assert got.item() == pytest.approx(_masked_mean_loop(per, m.tolist()), abs=1e-12)
    assert L.topk_overlap(zs, zs, 3).item() == pytest.approx(1.0)


# --------------------------------------------------------------------------- #
# finite-difference gradients (float64)
# --------------------------------------------------------------------------- #
def test_gradcheck_full_losses():
    zt = _rand(2, 3, 5, seed=20)
    m = torch.tensor([[1, 1, 0], [0, 1, 1]], dtype=D)
    ids = torch.tensor([[0, 4, 2], [1, 3, 3]])
    zs = _rand(2, 3, 5, seed=21).requires_grad_(True)
    fns = [
        lambda z: L.full_reverse_kl(z, zt, m)[0],
        lambda z: L.full_reverse_kl(z, zt, m, temperature=2.0)[0],
        lambda z: L.generalized_jsd(z, zt, beta=0.0, mask=m),
        lambda z: L.generalized_jsd(z, zt, beta=0.3, temperature=2.0, mask=m),
        lambda z: L.generalized_jsd(z, zt, beta=1.0, mask=m),
        lambda z: L.topk_reverse_kl(z, zt, m, k=2)[0],
        lambda z: L.topk_reverse_kl(z, zt, m, k=2, sampled_ids=ids)[0],
        lambda z: L.topk_reverse_kl(z, zt, m, k=2, renormalize=False)[0],
        lambda z: L.kl_to_reference(z, zt, m)[0],
        lambda z: L.entropy(z, m)[0],
    ]
    for f in fns:
        assert torch.autograd.gradcheck(f, (zs,), eps=1e-6, atol=1e-7, rtol=1e-5)


def test_full_reverse_kl_analytic_gradient():
    theta = _rand(1, 1, 4, seed=22).requires_grad_(True)
    zq = _rand(1, 1, 4, seed=23)
    L.full_reverse_kl(theta, zq)[0].backward()
    p, q = torch.softmax(theta.detach(), -1), torch.softmax(zq, -1)
    kl = (p * (p.log() - q.log())).sum(-1, keepdim=True)
    torch.testing.assert_close(theta.grad, p * (p.log() - q.log() - kl), rtol=0, atol=1e-12)


# --------------------------------------------------------------------------- #
# Monte-Carlo: sampled-token estimators are unbiased for grad KL(p||q)
# --------------------------------------------------------------------------- #
def _mc_setup(n=200_000):
    # near-uniform student, peaked teacher (the early-OPD regime)
    theta0 = torch.tensor([0.3, 0.0, -0.2, 0.1], dtype=D)
    zq = torch.tensor([2.0, 0.0, -1.0, -2.0], dtype=D)
    p, q = torch.softmax(theta0, -1), torch.softmax(zq, -1)
    g = torch.Generator().manual_seed(1234)
    y = torch.multinomial(p, n, replacement=True, generator=g)
    kl = (p * (p.log() - q.log())).sum()
    analytic = p * (p.log() - q.log() - kl)
    return theta0, zq, p, q, y, kl, analytic


def _mc_grad(theta0, zq, y, adv_fn):
    """Mean gradient via autograd of the library loss; per-sample gradients in closed form."""
    n = y.numel()
    theta = theta0.clone().requires_grad_(True)
    logits = theta.expand(1, n, 4)
    lp_s = L.token_logprobs(logits, y.unsqueeze(0))
    lp_t = L.token_logprobs(zq.expand(1, n, 4), y.unsqueeze(0))
    _, kl_tok = L.full_reverse_kl(logits, zq.expand(1, n, 4))
    adv = adv_fn(lp_s, lp_t, kl_tok)
    loss = L.sampled_token_opd_loss(lp_s, adv, torch.ones(1, n, dtype=D), "token_mean")
    grad, = torch.autograd.grad(loss, theta)
    p = torch.softmax(theta0, -1)
    onehot = torch.nn.functional.one_hot(y, 4).to(D)
    per_sample = -adv.detach()[0].unsqueeze(-1) * (onehot - p)   # -A grad log p(y)
    torch.testing.assert_close(grad, per_sample.mean(0), rtol=0, atol=1e-10)
    se = per_sample.std(0) / math.sqrt(n)
    return grad, per_sample, se


def test_sampled_token_estimator_unbiased_and_vopd_lower_variance():
    theta0, zq, p, q, y, kl, analytic = _mc_setup()
    plain = lambda s, t, k: L.opd_token_rewards(s, t)                       # noqa: E731
    vopd = lambda s, t, k: L.vopd_advantages(L.opd_token_rewards(s, t), k)  # noqa: E731
    g_plain, ps_plain, se_plain = _mc_grad(theta0, zq, y, plain)
    g_vopd, ps_vopd, se_vopd = _mc_grad(theta0, zq, y, vopd)

    assert (analytic.abs() > 10 * se_plain).any()       # the check has power
    assert ((g_plain - analytic).abs() < 4 * se_plain).all()
    assert ((g_vopd - analytic).abs() < 4 * se_vopd).all()
    # wrong estimators are detected: sign flip, and "+ grad" (using +A)
    assert ((-g_plain - analytic).abs() > 4 * se_plain).any()
    # a biased one: dropping the -log p part of the reward (A = log q only) is not grad KL
    g_bad, _, se_bad = _mc_grad(theta0, zq, y, lambda s, t, k: t.detach())
    assert ((g_bad - analytic).abs() > 4 * se_bad).any()

    var_plain = ps_plain.var(0).sum().item()
    var_vopd = ps_vopd.var(0).sum().item()
    assert var_vopd < 0.75 * var_plain
    # vOPD advantages are centred under the student: E_y[r + KL] = 0
    r = (q.log() - p.log())
    assert float((p * (r + kl)).sum()) == pytest.approx(0.0, abs=1e-12)


def _exact_grad_var(theta, zq, use_baseline):
    p, q = torch.softmax(theta, -1), torch.softmax(zq, -1)
    r = q.log() - p.log()
    a = r + (p * -r).sum() if use_baseline else r
    g = -a[:, None] * (torch.eye(len(p), dtype=D) - p)        # per-outcome gradient
    mean = (p[:, None] * g).sum(0)
    return (p[:, None] * (g - mean) ** 2).sum().item()


def test_vopd_variance_reduction_is_not_guaranteed():
    # Exact (enumerated) per-sample gradient variance. The mean-reward baseline
    # is not the variance-optimal one: it helps when the student is spread out
    # and the teacher peaked, but a confident student on a token the teacher
    # dislikes gets *more* variance from it.
    helps = (torch.tensor([0.3, 0.0, -0.2, 0.1], dtype=D), torch.tensor([2.0, 0.0, -1.0, -2.0], dtype=D))
    hurts = (torch.tensor([2.0, 0.0, 0.0, 0.0], dtype=D), torch.tensor([0.0, 1.0, 1.0, 1.0], dtype=D))
    assert _exact_grad_var(*helps, True) < 0.75 * _exact_grad_var(*helps, False)
    assert _exact_grad_var(*hurts, True) > 2 * _exact_grad_var(*hurts, False)


# --------------------------------------------------------------------------- #
# G-OPD, clipping, vOPD
# --------------------------------------------------------------------------- #
def test_gopd_advantages():
    s, t, ref = _rand(2, 4, seed=30), _rand(2, 4, seed=31), _rand(2, 4, seed=32)
    opd = L.opd_token_rewards(s, t)
    assert torch.equal(L.gopd_advantages(s, t, ref, 1.0), opd)
    torch.testing.assert_close(opd, t - s, rtol=0, atol=0)
    a = L.gopd_advantages(s, t, ref, lmbda_reward=1.25)
    for b in range(2):
        for i in range(4):
            exp = 1.25 * t[b, i].item() - 0.25 * ref[b, i].item() - s[b, i].item()
            assert a[b, i].item() == pytest.approx(exp, abs=1e-12)
    # ref with -inf does not leak into lambda = 1
    ref_inf = ref.clone()
    ref_inf[0, 0] = float("-inf")
    assert torch.isfinite(L.gopd_advantages(s, t, ref_inf, 1.0)).all()
    sg = s.clone().requires_grad_(True)
    assert not L.gopd_advantages(sg, t, ref, 0.5).requires_grad
    assert not L.opd_token_rewards(sg, t).requires_grad


def test_clip_rewards_and_vopd():
    r = torch.tensor([-5.0, -2.0, -1.0, 0.5], requires_grad=True)
    c = L.clip_rewards(r)
    assert c.tolist() == [-2.0, -2.0, -1.0, 0.5] and not c.requires_grad
    assert L.clip_rewards(r, floor=-0.5).tolist() == [-0.5, -0.5, -0.5, 0.5]
    kl = torch.tensor([0.3, 0.3, 0.1, 0.0], requires_grad=True)
    v = L.vopd_advantages(r, kl)
    torch.testing.assert_close(v, (r + kl).detach())
    assert not v.requires_grad


# --------------------------------------------------------------------------- #
# GRPO
# --------------------------------------------------------------------------- #
def test_grpo_advantages_vs_numpy():
    g = torch.Generator().manual_seed(5)
    R = torch.randint(0, 2, (24,), generator=g).float() + 0.1 * torch.rand(24, generator=g)
    R[8:12] = 1.0                                      # one constant group
    G = 4
    arr = R.numpy().astype(np.float64).reshape(-1, G)
    exp = (arr - arr.mean(1, keepdims=True)) / (arr.std(1, ddof=1, keepdims=True) + 1e-4)
    np.testing.assert_allclose(L.grpo_advantages(R, G).numpy(), exp.reshape(-1), rtol=1e-5, atol=1e-5)
    exp_dr = arr - arr.mean(1, keepdims=True)
    np.testing.assert_allclose(L.grpo_advantages(R, G, scale_rewards=False).numpy(),
                               exp_dr.reshape(-1), rtol=1e-6, atol=1e-6)
    assert (L.grpo_advantages(R, G)[8:12] == 0).all()
    # population std would give a different answer: unbiased is really used
    exp_pop = (arr - arr.mean(1, keepdims=True)) / (arr.std(1, keepdims=True) + 1e-4)
    assert not np.allclose(L.grpo_advantages(R, G).numpy(), exp_pop.reshape(-1), atol=1e-3)
    with pytest.raises(ValueError):
        L.grpo_advantages(R, 5)
    assert (L.grpo_advantages(R, 1) == 0).all()


def test_zero_adv_frac():
    R = torch.tensor([1, 1, 1, 0, 0, 0, 1, 0, 0, 1, 0, 0.])
    # groups of 3: [1,1,1] [0,0,0] [1,0,0] [1,0,0] -> 2 of 4 constant
    assert L.zero_adv_frac(R, 3) == pytest.approx(0.5)
    # groups of 2: [1,1] [1,0] [0,0] [1,0] [0,1] [0,0] -> 3 of 6 constant
    assert L.zero_adv_frac(R, 2) == pytest.approx(0.5)
    # groups of 4: [1,1,1,0] [0,0,1,0] [0,1,0,0] -> none constant
    assert L.zero_adv_frac(R, 4) == 0.0
    assert L.zero_adv_frac(torch.ones(6), 3) == 1.0
    # consistent with GRPO: constant groups are exactly those with all-zero advantages
    adv = L.grpo_advantages(R, 3).reshape(-1, 3)
    assert (adv == 0).all(1).float().mean().item() == L.zero_adv_frac(R, 3)
    with pytest.raises(ValueError):
        L.zero_adv_frac(R, 5)


# --------------------------------------------------------------------------- #
# policy gradient / PPO clip
# --------------------------------------------------------------------------- #
def test_policy_gradient_ratio_one_equals_reinforce():
    z = _rand(3, 4, 5, seed=40).requires_grad_(True)
    ids = torch.randint(0, 5, (3, 4), generator=torch.Generator().manual_seed(2))
    m = _mask(3, 4)
    A = torch.tensor([1.0, -0.5, 2.0], dtype=D)          # [B], broadcast
    for red in L.REDUCTIONS:
        lp = L.token_logprobs(z, ids)
        g_pg, = torch.autograd.grad(L.policy_gradient_loss(lp, lp.detach(), A, m, reduction=red), z)
        lp = L.token_logprobs(z, ids)
        g_none, = torch.autograd.grad(L.policy_gradient_loss(lp, None, A, m, reduction=red), z)
        lp = L.token_logprobs(z, ids)
        g_rf, = torch.autograd.grad(L._reduce(-A[:, None] * lp, m, red), z)
        torch.testing.assert_close(g_pg, g_rf, rtol=0, atol=1e-12)
        torch.testing.assert_close(g_none, g_rf, rtol=0, atol=1e-12)
        lp = L.token_logprobs(z, ids)
        g_clip, = torch.autograd.grad(
            L.policy_gradient_loss(lp, lp.detach(), A, m, clip_eps=0.2, reduction=red), z)
        torch.testing.assert_close(g_clip, g_rf, rtol=0, atol=1e-12)


@pytest.mark.parametrize("adv,delta,zero", [
    (1.0, math.log(1.5), True),     # A>0, ratio above 1+eps: clipped, no gradient
    (1.0, math.log(0.5), False),    # A>0, ratio below 1-eps: still pushed up
    (-1.0, math.log(0.5), True),    # A<0, ratio below 1-eps: clipped
    (-1.0, math.log(1.5), False),   # A<0, ratio above 1+eps: still pushed down
    (1.0, math.log(1.1), False),    # inside the trust region
])
def test_ppo_clip_gradient(adv, delta, zero):
    lp = torch.tensor([[-1.0]], dtype=D, requires_grad=True)
    old = lp.detach() - delta
    m = torch.ones(1, 1, dtype=D)
    loss = L.policy_gradient_loss(lp, old, torch.tensor([adv], dtype=D), m, clip_eps=0.2)
    g, = torch.autograd.grad(loss, lp)
    if zero:
        assert g.item() == 0.0
    else:
        assert g.item() == pytest.approx(-adv * math.exp(delta), abs=1e-12)
    ratio = math.exp(delta)
    exp_val = -min(ratio * adv, min(max(ratio, 0.8), 1.2) * adv)
    assert loss.item() == pytest.approx(exp_val, abs=1e-12)


# --------------------------------------------------------------------------- #
# -inf logits: finite losses and gradients
# --------------------------------------------------------------------------- #
def test_neg_inf_logits_are_nan_free():
    zs = _rand(2, 3, 6, seed=50)
    zt = _rand(2, 3, 6, seed=51)
    zt[..., 5] = float("-inf")          # teacher bans token 5
    zt[0, 0, 2] = float("-inf")
    zs_banned = zs.clone()
    zs_banned[..., 5] = float("-inf")   # padded vocab: both -inf
    zs_banned[0, 0, 2] = float("-inf")
    m = torch.ones(2, 3, dtype=D)
    cases = [
        (zs_banned, lambda z: L.full_reverse_kl(z, zt, m)[0]),
        (zs_banned, lambda z: L.kl_to_reference(z, zt, m)[0]),
        (zs, lambda z: L.generalized_jsd(z, zt, beta=0.0, mask=m)),
        (zs, lambda z: L.generalized_jsd(z, zt, beta=0.5, mask=m)),
        (zs_banned, lambda z: L.generalized_jsd(z, zt, beta=0.5, mask=m)),
        (zs_banned, lambda z: L.generalized_jsd(z, zt, beta=1.0, mask=m)),
        (zs, lambda z: L.topk_reverse_kl(z, zt, m, k=3)[0]),
        (zs, lambda z: L.topk_reverse_kl(z, zt, m, k=3, renormalize=False)[0]),
        (zs_banned, lambda z: L.entropy(z, m)[0]),
        (zs, lambda z: L.topk_overlap(z, zt, 3, m)),
    ]
    for z0, f in cases:
        z = z0.clone().requires_grad_(True)
        loss = f(z)
        assert torch.isfinite(loss), f
        if loss.requires_grad:
            g, = torch.autograd.grad(loss, z)
            assert torch.isfinite(g).all()
    # the banned-entry results agree with computing on the finite entries only
    keep = [0, 1, 2, 3, 4]              # rows 1: only token 5 is banned
    a = L.full_reverse_kl(zs_banned[1:], zt[1:])[0]
    b = L.full_reverse_kl(zs_banned[1:, :, keep], zt[1:, :, keep])[0]
    assert a.item() == pytest.approx(b.item(), abs=1e-12)
    # top-K never puts a teacher -inf token in the support, even with k = V
    a, per = L.topk_reverse_kl(zs, zt, m, k=6)
    assert torch.isfinite(per).all()

    # sampled-token path: -inf teacher log-prob on a masked (prompt) position
    ids = torch.tensor([[0, 1, 5], [2, 3, 4]])
    z = zs.clone().requires_grad_(True)
    lp_s = L.token_logprobs(z, ids)
    lp_t = L.token_logprobs(zt, ids)
    mk = torch.tensor([[1, 1, 0], [1, 1, 1]], dtype=D)
    assert torch.isinf(lp_t[0, 2])
    for red in L.REDUCTIONS:
        adv = L.discounted_returns(L.opd_token_rewards(lp_s, lp_t), mk, 0.9)
        loss = L.sampled_token_opd_loss(lp_s, adv, mk, red)
        g, = torch.autograd.grad(loss, z, retain_graph=True)
        assert torch.isfinite(loss) and torch.isfinite(g).all()
    sd = L.sdar_loss(lp_s, lp_t, mk)
    g, = torch.autograd.grad(sd, z)
    assert torch.isfinite(sd) and torch.isfinite(g).all()


# --------------------------------------------------------------------------- #
# SDAR
# --------------------------------------------------------------------------- #
def test_sdar_gradient_is_gated_logprob_gradient():
    z = _rand(2, 4, 5, seed=60).requires_grad_(True)
    ids = torch.randint(0, 5, (2, 4), generator=torch.Generator().manual_seed(3))
    lt = _rand(2, 4, seed=61) - 1.5
    m = _mask(2, 4)
    lp = L.token_logprobs(z, ids)
    loss = L.sdar_loss(lp, lt, m, beta_gate=5.0)
    g, = torch.autograd.grad(loss, z)
    lp2 = L.token_logprobs(z, ids)
    gate = torch.sigmoid(5.0 * (lt - lp2.detach()))
    g_ref, = torch.autograd.grad(-(gate * lp2 * m).sum() / m.sum(), z)
    torch.testing.assert_close(g, g_ref, rtol=0, atol=1e-12)
    exp_val = ((gate * (lt - lp2.detach())) * m).sum() / m.sum()
    assert loss.item() == pytest.approx(exp_val.item(), abs=1e-12)
    # beta_gate = 0 is a constant gate of 1/2
    lp3 = L.token_logprobs(z, ids)
    g0, = torch.autograd.grad(L.sdar_loss(lp3, lt, m, beta_gate=0.0), z)
    lp4 = L.token_logprobs(z, ids)
    g0_ref, = torch.autograd.grad(-(0.5 * lp4 * m).sum() / m.sum(), z)
    torch.testing.assert_close(g0, g0_ref, rtol=0, atol=1e-12)
