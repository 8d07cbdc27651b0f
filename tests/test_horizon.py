"""Teacher benefit along the response (issue 18, item 5): the per-position teacher signal against a per-sequence
recomputation, and `teacher_horizon`, which cuts the teacher's supervision after the first k completion tokens."""
from __future__ import annotations

import pytest
import torch

from workbench import losses as L
from workbench import objectives
from workbench.analysis import teacher_signal_by_position
from workbench.batching import prompt_batch
from workbench.config import ConfigError, TrainConfig, validate
from workbench.models import build_model
from workbench.objectives import LossInputs
from workbench.rollout import completion_logits, sample
from workbench.tasks import get_task
from workbench.trainer import Trainer


def test_horizon_mask_cuts_exactly_from_k_on():
    m = torch.tensor([[1., 1., 1., 1., 0.], [1., 1., 0., 0., 0.]])
    assert L.horizon_mask(m, 3).tolist() == [[1, 1, 1, 0, 0], [1, 1, 0, 0, 0]]
    assert L.horizon_mask(m, 10).tolist() == m.tolist()
    assert L.horizon_mask(m.bool(), 1).tolist() == [[True, False, False, False, False], [True] + [False] * 4]
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="horizon"):
            L.horizon_mask(m, bad)


@pytest.mark.parametrize("loss", ["sampled_token", "full_kl"])
def test_gradient_is_zero_exactly_from_position_k(loss):
    torch.manual_seed(0)
    B, N, V, k = 3, 7, 5, 4
    s_logits = torch.randn(B, N, V, requires_grad=True)
    t_logits = torch.randn(B, N, V)
    ids = torch.randint(0, V, (B, N))
    mask = torch.ones(B, N)
    mask[2, 5:] = 0
    s_lp, t_lp = L.token_logprobs(s_logits, ids), L.token_logprobs(t_logits, ids)
    cfg = TrainConfig.for_method("opd" if loss == "sampled_token" else "opd_full")
    R = type("R", (), {"completion_ids": ids})()
    b = LossInputs(R, L.horizon_mask(mask, k), torch.zeros(B), s_logits, s_lp, t_logits, t_lp, None)
    objectives.get(loss).compute(b, cfg, {}).backward()
    g = s_logits.grad.abs().sum(-1)
    assert torch.all(g[:, k:] == 0)
    assert torch.all(g[:, :k] > 0)


def test_trainer_hands_the_objective_the_cut_mask(tok, models):
    teacher, _ = models
    cfg = TrainConfig.for_method("opd", teacher_horizon=3, batch_size=4, steps=1, eval_every=0, device="cpu")
    tr = Trainer(cfg, teacher=teacher, student=build_model("nano", tok, seed=2), tokenizer=tok)
    _, _, r, _ = tr._batch(1)                  # step 1's rollout (per-step seeds), drawn again here
    seen, loss_of = [], tr._loss

    def spy(cfg, r, mask, *a, **kw):
        seen.append(mask.clone())
        return loss_of(cfg, r, mask, *a, **kw)
    tr._loss = spy
    tr.step()
    want = r.completion_mask.clone()
    want[:, 3:] = 0
    assert len(seen) == 1 and torch.equal(seen[0], want)
    assert bool((r.completion_mask[:, 3:] > 0).any())      # the cut removed something


def test_teacher_horizon_is_validated():
    validate(TrainConfig.for_method("opd", teacher_horizon=8))
    for bad in (0, -3, 1.5):
        with pytest.raises(ConfigError, match="teacher_horizon"):
            validate(TrainConfig.for_method("opd", teacher_horizon=bad))
    with pytest.raises(ConfigError, match="teacher_horizon"):
        validate(TrainConfig.for_method("sft", teacher_horizon=8))


def test_teacher_signal_by_position_equals_a_per_sequence_recomputation(tok, models):
    teacher, student = models
    student = student.eval()
    task = get_task("addition")
    probs = task.problems(5, seed=2, split="test")
    got = teacher_signal_by_position(student, teacher, tok, task, probs, seed=3, batch_size=2, max_new_tokens=10)
    gen = torch.Generator().manual_seed(3)
    per_pos = {}
    for i in range(0, 5, 2):
        ids, mask = prompt_batch(tok, probs[i:i + 2], task=task)
        r = sample(student, ids, mask, max_new_tokens=10, eos_token_id=tok.eos_token_id,
                   pad_token_id=tok.pad_token_id, temperature=1.0, generator=gen)
        with torch.no_grad():
            sl, tl = completion_logits(student, r).double(), completion_logits(teacher, r).double()
        for b in range(sl.shape[0]):
            for t in range(int(r.lengths[b])):
                ps, pt = torch.softmax(sl[b, t], -1), torch.softmax(tl[b, t], -1)
                y = int(r.completion_ids[b, t])
                row = (float(torch.log(pt[y]) - torch.log(ps[y])), float(ps.argmax() == pt.argmax()),
                       float((ps * (ps.log() - pt.log())).sum()))
                per_pos.setdefault(t, []).append(row)
    assert got["n"] == [len(per_pos[t]) for t in sorted(per_pos)]
    for t in sorted(per_pos):
        rows = per_pos[t]
        # float32 log-softmax of logits of size ~1 against a float64 recomputation: ~1e-6 per term
        for j, key in enumerate(("reward", "top1_overlap", "reverse_kl")):
            assert got[key][t] == pytest.approx(sum(x[j] for x in rows) / len(rows), abs=1e-5), (key, t)


def test_position_profiles_pool_by_counts():
    from workbench.metrics import pool_position_profiles, position_profile
    m = torch.tensor([[1., 1., 1.], [1., 0., 0.]])
    x = torch.tensor([[1., 2., 3.], [3., float("nan"), 9.]])          # masked entries are never read
    p = position_profile(m, x=x)
    assert p == {"n": [2.0, 1.0, 1.0], "x": [2.0, 2.0, 3.0]}
    q = position_profile(torch.tensor([[1., 1., 1., 1.]]), x=torch.tensor([[5., 5., 5., 5.]]))
    pooled = pool_position_profiles([p, q])
    assert pooled["n"] == [3.0, 2.0, 2.0, 1.0] and pooled["x"] == [3.0, 3.5, 4.0, 5.0]
    assert position_profile(torch.zeros(2, 3), x=torch.zeros(2, 3)) == {"n": [], "x": []}


def test_trainer_records_the_position_profile_on_evaluation_steps(tok, models):
    teacher, _ = models
    cfg = TrainConfig.for_method("opd", batch_size=4, steps=2, eval_every=2, eval_problems=4, device="cpu")
    tr = Trainer(cfg, teacher=teacher, student=build_model("nano", tok, seed=2), tokenizer=tok)
    recs = []
    tr.run(callbacks=[type("CB", (), {"on_step": lambda self, r: recs.append(r)})()])
    assert "teacher/by_position" not in recs[0]
    prof = recs[1]["teacher/by_position"]
    n = len(prof["n"])
    assert n >= 1 and prof["n"][0] == 4.0 and all(len(prof[k]) == n for k in ("reward", "top1_overlap", "reverse_kl"))
    # weighted by rollouts, its reverse KL is the record's token-mean reverse KL
    mean = sum(c * v for c, v in zip(prof["n"], prof["reverse_kl"])) / sum(prof["n"])
    assert mean == pytest.approx(recs[1]["teacher/reverse_kl"], rel=1e-4)   # float32 vs float64 sums of ~200 terms
