"""workbench.injection: the injected prefixes by hand, and exposure_profile against rule-following "models"
whose behaviour after a mistake is known in advance (a perfect follower of its own prefix, one that reverts to
the true carry, one that gives up); greedy_continuations against a step-by-step argmax of a tiny model."""
from __future__ import annotations

import pytest
import torch

from workbench.injection import exposure_profile, grade, greedy_continuations, injections
from workbench.rollout import positions_from_mask
from workbench.tasks import get_task
from workbench.tokenizer import encode_text


def test_injected_prefixes_by_hand():
    t = get_task("addition")
    p = t.solve(58, 67, 3)            # 8+7+0=15, 5+6+1=12, 0+0+1=01 | 0125
    inj = injections(t, [p], kind="carry")
    assert [(i.column, i.injected, i.prefix) for i in inj] == [
        (0, False, "8+7+0=15,"), (0, True, "8+7+0=05,"),
        (1, False, "8+7+0=15,5+6+1=12,"), (1, True, "8+7+0=15,5+6+1=02,")]
    # flipping column 0's carry to 0: 5+6+0=11, 0+0+1=01 -> 0115; column 1's to 0: 0+0+0=00 -> 0025
    assert [i.implied_answer for i in inj] == ["0125", "0115", "0125", "0025"]
    assert [(i.implied_carry, i.true_carry) for i in inj] == [(1, 1), (0, 1), (1, 1), (0, 1)]
    units = injections(t, [p], kind="units", columns=[0])
    assert len(units) == 2 and units[1].prefix[:-2] == "8+7+0=1" and units[1].prefix[-2] != "5"
    assert units[1].implied_carry == 1 and units[1].implied_answer == "012" + units[1].prefix[-2]
    with pytest.raises(ValueError, match="addition"):
        injections(get_task("multiply"), t.problems(1), kind="carry")
    with pytest.raises(ValueError, match="kind"):
        injections(t, [p], kind="sign")


def _follow(prefix_of, carry_rule):
    """A rule-following `generate`: finish the scratchpad from the written prefix, taking each later column's
    carry-in from `carry_rule(problem, written_total_of_last_column, column)`, then the answer it implies."""
    def generate(pairs):
        out = []
        for p, pre in pairs:
            sa, sb = p.prompt.rstrip("=").split("+")
            cols = pre.rstrip(",").split(",")
            digits = [int(c[-1]) for c in cols]
            carry = carry_rule(p, int(cols[-1][-2:]), len(cols))
            text = ""
            for i in range(len(cols), len(sa)):
                total = int(sa[-1 - i]) + int(sb[-1 - i]) + carry
                text += f"{sa[-1 - i]}+{sb[-1 - i]}+{carry}={total:02d},"
                digits.append(total % 10)
                carry = total // 10
            out.append(text + "|" + (str(carry) + "".join(map(str, reversed(digits)))).zfill(len(sa) + 1))
        return out
    return generate


def _true_carry(p, written, i):
    sa, sb = p.prompt.rstrip("=").split("+")
    carry = 0
    for k in range(i):
        carry = (int(sa[-1 - k]) + int(sb[-1 - k]) + carry) // 10
    return carry


@pytest.mark.parametrize("task_name", ["addition", "addition-orders"])
def test_profiles_of_rule_following_models(task_name):
    t = get_task(task_name)
    probs = t.problems(40, seed=3, split="test")
    follower = exposure_profile(_follow(None, lambda p, w, i: w // 10), t, probs, kind="carry")
    inj, ctl = follower["injected"], follower["control"]
    assert inj["prefixes"] == ctl["prefixes"] == 40 * 4 and follower["states"] == 40 * (4 + 3 + 2 + 1)
    assert inj["n_by_distance"] == [160, 120, 80, 40]
    assert inj["error_rate"] == 0 and ctl["error_rate"] == 0
    assert inj["follows_prefix"] == 1 and inj["reverts"] == 0 and inj["answer_implied"] == 1
    assert inj["answer_true"] == 0 and ctl["answer_true"] == 1
    # reverting to the true carry is an error at d = 1 given its own prefix; afterwards it is consistent again
    reverter = exposure_profile(_follow(None, _true_carry), t, probs, kind="carry")["injected"]
    assert reverter["error_by_distance"] == [1.0, 0.0, 0.0, 0.0]
    assert reverter["reverts"] == 1 and reverter["follows_prefix"] == 0 and reverter["answer_true"] == 1
    # giving up after the prefix: every later column is missing
    quitter = exposure_profile(lambda pairs: ["|0" for _ in pairs], t, probs, kind="units")
    assert quitter["injected"]["error_rate"] == 1 and quitter["control"]["error_rate"] == 1
    # a units mistake leaves the carry right: following the prefix and reverting are the same continuation
    units = exposure_profile(_follow(None, lambda p, w, i: w // 10), t, probs, kind="units")["injected"]
    assert units["follows_prefix"] == units["reverts"] == 1 and units["answer_true"] == 0


def test_a_wrong_column_after_the_mistake_is_counted_at_its_distance():
    t = get_task("addition")
    p = t.solve(58, 67, 3)
    inj = injections(t, [p])[1]                                       # "8+7+0=05,", implied carry 0
    g = grade(t, inj, inj.prefix + "5+6+0=11,0+0+0=00,|0015")         # column 2 ignores column 1's carry
    assert g["errors"] == [False, True] and g["follows_prefix"] and not g["answer_implied"]


def test_greedy_continuations_equal_a_step_by_step_argmax(tok, models):
    teacher, _ = models
    t = get_task("addition")
    probs = t.problems(3, seed=1, split="test")
    pairs = [(probs[0], "3+4+0=07,"), (probs[1], ""), (probs[2], "1+")]
    got = greedy_continuations(teacher, tok, t, batch_size=2, max_new_tokens=6)(pairs)
    for (p, pre), g in zip(pairs, got):
        ids = t.encode_prompt(tok, p.prompt) + encode_text(tok, pre)
        x = torch.tensor([ids])
        new = []
        with torch.no_grad():
            for _ in range(6):               # full forward each step, no cache: an independent greedy decoder
                m = torch.ones_like(x)
                logits = teacher(input_ids=x, attention_mask=m, position_ids=positions_from_mask(m)).logits
                nxt = int(logits[0, -1].argmax())
                if nxt == tok.eos_token_id:
                    break
                new.append(nxt)
                x = torch.cat([x, torch.tensor([[nxt]])], 1)
        assert g == tok.decode(new, skip_special_tokens=True)
