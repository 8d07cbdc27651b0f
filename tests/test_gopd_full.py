"""losses.gopd_full_kl (G-OPD / ExOPD with a full-vocabulary target, arXiv 2602.12125) against an independent
computation: the optimum of G-OPD's objective written as an explicit normalised distribution over a tiny
vocabulary in float64; lambda = 1 is the full reverse KL to the teacher; the objective entry trains a step with
its reference model."""
from __future__ import annotations

import copy

import pytest
import torch

from workbench import losses as L
from workbench import objectives
from workbench.config import ConfigError, TrainConfig, validate
from workbench.trainer import Trainer


def _brute(s_logits, t_logits, r_logits, lam, mask):
    """Per position: pi* = q^lam ref^(1-lam) / Z, written with probabilities (not log-softmax), then
    KL(pi || pi*) = sum_v pi (log pi - log pi*), masked mean over positions; float64 loops."""
    B, T, V = s_logits.shape
    tot, n = 0.0, 0.0
    for b in range(B):
        for t in range(T):
            if not mask[b, t]:
                continue
            p = torch.softmax(s_logits[b, t].double(), -1)
            q = torch.softmax(t_logits[b, t].double(), -1)
            ref = torch.softmax(r_logits[b, t].double(), -1)
            un = q ** lam * ref ** (1 - lam)
            star = un / un.sum()
            tot += float((p * (p.log() - star.log())).sum())
            n += 1
    return tot / n


@pytest.mark.parametrize("lam", [0.5, 1.0, 1.25, 1.5])
def test_against_the_optimum_written_out(lam):
    torch.manual_seed(1)
    s, t, r = torch.randn(2, 5, 6), 2 * torch.randn(2, 5, 6), torch.randn(2, 5, 6)
    mask = torch.ones(2, 5)
    mask[1, 3:] = 0
    got, per_token = L.gopd_full_kl(s, t, r, lam, mask)
    # float32 log-softmax of logits of size ~2-3, summed over 6 terms, against float64: ~1e-6 absolute
    assert float(got) == pytest.approx(_brute(s, t, r, lam, mask), abs=2e-5)
    assert per_token.shape == (2, 5) and torch.all(per_token[mask.bool()] >= -1e-6)


def test_lambda_one_is_the_full_reverse_kl_to_the_teacher():
    torch.manual_seed(2)
    s, t = torch.randn(3, 4, 7), torch.randn(3, 4, 7)
    a, pa = L.gopd_full_kl(s, t, None, 1.0)
    b, pb = L.full_reverse_kl(s, t)
    assert torch.equal(a, b) and torch.equal(pa, pb)
    # and at lambda = 1 + eps the reference barely matters: continuity, not a special case only
    r = torch.randn(3, 4, 7)
    near = L.gopd_full_kl(s, t, r, 1.0 + 1e-6)[0]
    assert float(near) == pytest.approx(float(b), abs=1e-4)


def test_the_student_at_the_target_has_zero_loss_and_gradient():
    torch.manual_seed(3)
    t, r = torch.randn(1, 3, 5), torch.randn(1, 3, 5)
    lt, lr_ = torch.log_softmax(t, -1), torch.log_softmax(r, -1)
    s = (lr_ + 1.25 * (lt - lr_)).clone().requires_grad_(True)     # logits of pi* itself
    loss = L.gopd_full_kl(s, t, r, 1.25)[0]
    loss.backward()
    assert float(loss) == pytest.approx(0.0, abs=1e-6)
    assert float(s.grad.abs().max()) < 1e-6


def test_inf_logits_and_refusals():
    s = torch.randn(1, 2, 4, requires_grad=True)
    t = torch.tensor([[[0.0, 1.0, float("-inf"), 0.5], [1.0, 0.0, 0.0, float("-inf")]]])
    r = torch.tensor([[[0.0, float("-inf"), float("-inf"), 0.0], [0.0, 0.0, 0.0, 0.0]]])
    loss = L.gopd_full_kl(s, t, r, 1.25)[0]
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(s.grad).all()
    with pytest.raises(ValueError, match="ref_logits"):
        L.gopd_full_kl(s, t, None, 1.25)
    with pytest.raises(ValueError, match="positive"):
        L.gopd_full_kl(s, t, r, 0.0)


def test_registered_objective_trains_a_step_with_its_reference(tok, models):
    teacher, student = models
    o = objectives.get("gopd_full")
    assert o.needs_teacher and o.corners == (("student", "dense"),)
    cfg = TrainConfig.for_method("opd_full", loss="gopd_full", reward_scale=1.25, batch_size=4, steps=1,
                                 eval_every=0, device="cpu")
    validate(cfg)
    assert objectives.needs_reference(cfg) and not objectives.needs_reference(
        TrainConfig.for_method("opd_full", loss="gopd_full"))
    tr = Trainer(cfg, teacher=teacher, student=copy.deepcopy(student), tokenizer=tok)
    assert tr.ref is not None
    seen, loss_of = [], tr._loss

    def spy(cfg, r, mask, rewards, s_logits, s_lp, t_logits, t_lp, ref_logits, *a, **kw):
        out = loss_of(cfg, r, mask, rewards, s_logits, s_lp, t_logits, t_lp, ref_logits, *a, **kw)
        seen.append((float(out), float(L.gopd_full_kl(s_logits, t_logits, ref_logits, 1.25, mask)[0])))
        return out
    tr._loss = spy
    rec = tr.step()
    assert len(seen) == 1 and seen[0][0] == pytest.approx(seen[0][1], rel=1e-6)
    assert rec["loss"] == pytest.approx(seen[0][0], rel=1e-6)
    with pytest.raises(ConfigError, match="reward_scale"):
        validate(TrainConfig.for_method("opd_full", reward_scale=1.25))
