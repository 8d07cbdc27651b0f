"""workbench.modes: pass@k against brute-force enumeration, order statistics on hand-built columns, and
mode_profile's numbers recomputed from the same samples."""
from __future__ import annotations

import itertools
import math

import pytest
import torch

from workbench.batching import decode_completions, prompt_batch
from workbench.modes import mode_profile, order_statistics, pass_at_k, pass_at_k_curve
from workbench.rollout import completion_logits, sample
from workbench.tasks import get_task


def brute_pass_at_k(n, c, k):
    """Share of the k-subsets of n samples (c of them correct) that hold a correct one: enumerated."""
    items = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(items[i] for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", [1, 2, 5, 8])
def test_pass_at_k_equals_enumeration(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            # two float64 computations of a ratio of small integers: they agree to rounding
            assert pass_at_k(n, c, k) == pytest.approx(brute_pass_at_k(n, c, k), abs=1e-12), (n, c, k)


def test_pass_at_k_closed_forms_and_refusals():
    assert pass_at_k(16, 4, 1) == pytest.approx(4 / 16)                   # pass@1 is the correct share
    assert pass_at_k(16, 4, 16) == 1.0 and pass_at_k(16, 0, 16) == 0.0
    assert pass_at_k(20, 3, 5) == pytest.approx(1 - math.comb(17, 5) / math.comb(20, 5))
    with pytest.raises(ValueError, match="at least k samples"):
        pass_at_k(4, 1, 5)
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)
    curve = pass_at_k_curve([0, 2, 4], 4, ks=(1, 2))
    assert curve[1] == pytest.approx((0 + 0.5 + 1) / 3)
    assert curve[2] == pytest.approx((0 + brute_pass_at_k(4, 2, 2) + 1) / 3)


def test_order_statistics_by_hand():
    t = get_task("addition-orders")
    p = t.solve(12, 34, 2)            # columns: 2+4+0=06, 1+3+0=04
    assert t.column_orders(p.prompt, "2+4+0=06,1+3+0=04,|046") == ["abc", "abc"]
    assert t.column_orders(p.prompt, "4+2+0=06,3+1+0=04,|046") == ["bac", "bac"]
    assert t.column_orders(p.prompt, "2+2+0=04,1+3+0=04,|044") == ["invalid", "abc"]   # a blend
    orders = [[t.column_orders(p.prompt, s) for s in
               ("2+4+0=06,1+3+0=04,|046", "4+2+0=06,3+1+0=04,|046", "2+2+0=04,1+3+0=04,|044")]]
    st = order_statistics(orders)
    assert st["columns"] == 6 and st["mixture_rate"] == pytest.approx(1 / 6)
    # column 0: valid orders {abc, bac} (entropy log 2, 2 distinct); column 1: {abc: 2, bac: 1}
    h1 = -(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3))
    assert st["order_entropy"] == pytest.approx((math.log(2) + h1) / 2)
    assert st["distinct_orders"] == pytest.approx(2.0)
    assert st["order_counts"] == {"abc": 3, "bac": 2}
    assert st["global_order_entropy"] == pytest.approx(-(0.6 * math.log(0.6) + 0.4 * math.log(0.4)))
    one_style = order_statistics([[["abc", "abc"], ["abc", "abc"]], [["abc"]]])
    assert one_style["order_entropy"] == 0.0 and one_style["mixture_rate"] == 0.0


def test_mode_profile_recomputed_from_the_same_samples(tok, models):
    """The profile of a tiny random model equals what the same seeded samples give when verified, counted
    and scored here, one problem at a time."""
    _, student = models
    student = student.eval()
    task = get_task("addition-orders")
    probs = task.problems(3, seed=5, split="test")
    n = 4
    prof = mode_profile(student, tok, task, probs, n=n, seed=7, max_new_tokens=12, batch_size=5)
    gen = torch.Generator().manual_seed(7)
    flat = [p for p in probs for _ in range(n)]
    texts, correct, ent, toks = [], [], 0.0, 0
    for i in range(0, len(flat), 5):
        chunk = flat[i:i + 5]
        ids, mask = prompt_batch(tok, chunk, task=task)
        r = sample(student, ids, mask, max_new_tokens=12, eos_token_id=tok.eos_token_id,
                   pad_token_id=tok.pad_token_id, temperature=1.0, generator=gen)
        out = decode_completions(tok, r)
        texts += out
        correct += [task.verify(p, x, truncated=tr).correct for p, x, tr in zip(chunk, out, r.truncated.tolist())]
        with torch.no_grad():
            logp = torch.log_softmax(completion_logits(student, r), -1)
        h = -(logp.exp() * logp).sum(-1)              # entropy per position, written out
        for b in range(h.shape[0]):
            ln = int(r.lengths[b])
            ent += float(h[b, :ln].sum())
            toks += ln
    assert prof["correct_counts"] == [sum(correct[i * n:(i + 1) * n]) for i in range(3)]
    # summation order differs (masked batch sum vs per-row sums of ~50 float32 terms of size <= log 18):
    # a relative 1e-5 is ~100x float32 epsilon, far below any real disagreement
    assert prof["token_entropy"] == pytest.approx(ent / toks, rel=1e-5)
    want = order_statistics([[task.column_orders(p.prompt, texts[i * n + j]) for j in range(n)]
                             for i, p in enumerate(probs)])
    assert prof["orders"] == want
    assert prof["pass_at_k"][1] == pytest.approx(prof["sampled_accuracy"])
    assert sorted(prof["pass_at_k"]) == [1, 2, 3, 4]
    with pytest.raises(ValueError, match="raise n"):
        mode_profile(student, tok, task, probs, n=2, ks=(1, 4))
