import pytest

from workbench.analysis import column_steps
from workbench.experiments import column_error_profile
from workbench.tasks import get_task


def test_reference_columns_all_correct():
    t = get_task("addition")
    for p in t.problems(50, seed=3):
        steps = column_steps(t, p, p.solution)
        assert len(steps) == 5 and all(s["ok_local"] and s["ok_reference"] for s in steps)


def test_wrong_carry_then_locally_consistent_continuation():
    t = get_task("addition")
    p = t.solve(58, 67, 5)        # 8+7=15 carry 1; 5+6+1=12 carry 1; 0+0+1=01
    assert p.solution.startswith("8+7+0=15,5+6+1=12,0+0+1=01,")
    # first column wrong (14 instead of 15) but carry-out still 1 -> later columns locally right
    bad = p.solution.replace("8+7+0=15", "8+7+0=14", 1)
    s = column_steps(t, p, bad)
    assert [x["ok_local"] for x in s] == [False, True, True, True, True]
    # a wrong carry-in relative to its own previous column is a local error
    bad2 = p.solution.replace("5+6+1=12", "5+6+0=11", 1)
    s2 = column_steps(t, p, bad2)
    # column 1 wrote carry-in 0 (its own previous carry-out was 1): a local error; its total 11 carries 1,
    # so column 2's carry-in of 1 is right *given its own prefix*
    assert [x["ok_local"] for x in s2][:3] == [True, False, True]
    prof = column_error_profile(t, [p, p, p], [p.solution, bad, bad2])
    assert prof["n_with_error"] == 2 and prof["n"] == 3
    # clean prefixes: 5 + 1 (bad: only column 0, which is the error) + 2 (bad2: columns 0, 1) columns
    assert prof["clean_n"] == [3, 2, 1, 1, 1] and prof["clean_err"][0] == pytest.approx(1 / 3)
    # after a first error: bad's columns 1-4 (all locally right), bad2's columns 2-4 (locally right)
    assert prof["after_n"] == [0, 1, 2, 2, 2] and prof["after"] == 0.0


def test_wrong_operand_digit_is_local_error_and_malformed_columns():
    t = get_task("addition")
    p = t.solve(123, 456, 5)
    bad = p.solution.replace("3+6+0=09", "3+5+0=08", 1)
    assert column_steps(t, p, bad)[0]["ok_local"] is False
    s = column_steps(t, p, "3+6+0=09,garbage,|000579")
    assert s[0]["ok_local"] and not s[1]["parsed"] and not s[1]["ok_local"]


def test_multiply_columns():
    t = get_task("multiply")
    p = t.solve(4567, 8, 5)
    assert all(s["ok_local"] for s in column_steps(t, p, p.solution))
    with pytest.raises(ValueError, match="addition and multiply"):
        column_steps(type("T", (), {"name": "reverse"})(), p, p.solution)


def test_addition_orders_columns_in_any_order():
    t = get_task("addition-orders")
    p = t.solve(58, 67, 3)                        # columns {8,7,0}=15, {5,6,1}=12, {0,0,1}=01 in any order
    s = column_steps(t, p, "0+7+8=15,1+5+6=12,0+1+0=01,|0125")
    assert all(x["ok_local"] and x["ok_reference"] for x in s)
    s = column_steps(t, p, "0+7+7=14,1+5+6=12,0+1+0=01,|0124")      # a blend: 7 written twice
    assert [x["ok_local"] for x in s] == [False, True, True] and not s[0]["ok_reference"]
    s = column_steps(t, p, "7+8+0=15,0+5+6=11,0+1+0=01,|0115")      # carry-in 0 where its own prefix says 1
    assert [x["ok_local"] for x in s] == [True, False, True]


def test_estimator_gradients_against_a_recomputation(tok, models):
    """Two repeats: the variance is |g1 - g2|^2 / 4 and the mean norm |g1 + g2| / 2, with g1, g2 recomputed here
    from the same seeded rollouts (sampled-token, and top-K with the sampled token in its support)."""
    import torch
    from workbench import losses as L
    from workbench.analysis import estimator_gradients
    from workbench.batching import prompt_batch
    from workbench.rollout import completion_logits, sample
    teacher, student = models
    probs = get_task("addition").problems(4, seed=9)
    got = estimator_gradients(student, teacher, tok, probs, estimators=("sampled_token", "topk_sampled", "topk"),
                              repeats=2, batch_size=2, topk=2, max_new_tokens=8, seed=4)
    params = [p for p in student.parameters() if p.requires_grad]
    gen = torch.Generator().manual_seed(4)
    gs = {"sampled_token": [], "topk_sampled": []}
    for rep in range(2):
        ids, mask = prompt_batch(tok, probs[rep * 2:rep * 2 + 2])
        r = sample(student, ids, mask, max_new_tokens=8, eos_token_id=tok.eos_token_id,
                   pad_token_id=tok.pad_token_id, temperature=1.0, generator=gen)
        with torch.no_grad():
            tl = completion_logits(teacher, r)
        m = r.completion_mask
        sl = completion_logits(student, r)
        s_lp = L.token_logprobs(sl, r.completion_ids)
        rew = (L.token_logprobs(tl, r.completion_ids) - s_lp).detach()
        loss = -(rew * s_lp * m).sum() / m.sum()
        gs["sampled_token"].append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)]))
        sl = completion_logits(student, r)
        # the support written out: the teacher's top-2 ids and the sampled id, renormalised on it
        sup = torch.zeros_like(sl, dtype=torch.bool).scatter_(-1, tl.topk(2, -1).indices, True)
        sup.scatter_(-1, r.completion_ids[..., None], True)
        ls = torch.log_softmax(sl.masked_fill(~sup, float("-inf")), -1)
        lt = torch.log_softmax(tl.masked_fill(~sup, float("-inf")), -1)
        ls, lt = torch.where(sup, ls, 0.0), torch.where(sup, lt, 0.0)      # off-support terms are 0, no -inf
        per = torch.where(sup, ls.exp() * (ls - lt), torch.zeros_like(ls)).sum(-1)
        loss = (per * m).sum() / m.sum()
        gs["topk_sampled"].append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)]))
    for e, (g1, g2) in gs.items():
        # the same float32 graph up to summation order; relative 1e-4 is ~1000x float32 epsilon
        assert got[e]["variance"] == pytest.approx(float(((g1 - g2) ** 2).sum()) / 4, rel=1e-4), e
        assert got[e]["mean_norm"] == pytest.approx(float((g1 + g2).norm()) / 2, rel=1e-4), e
    assert got["topk_sampled"]["variance"] != got["topk"]["variance"]      # the sampled token changed the support


def test_variance_ratios_by_hand():
    from workbench.analysis import variance_ratios
    seeds = [{"sampled_token": {"variance": 4.0}, "vopd": {"variance": 2.0}, "topk": {"variance": 1.0}},
             {"sampled_token": {"variance": 6.0}, "vopd": {"variance": 2.0}, "topk": {"variance": 3.0}}]
    r = variance_ratios(seeds)
    assert set(r) == {"vopd", "topk"}
    assert r["vopd"]["by_seed"] == [2.0, 3.0] and r["vopd"]["mean"] == 2.5
    assert r["vopd"]["std"] == pytest.approx(0.5 ** 0.5) and (r["topk"]["min"], r["topk"]["max"]) == (2.0, 4.0)
    with pytest.raises(ValueError):
        variance_ratios([])
