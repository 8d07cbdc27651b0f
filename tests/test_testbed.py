"""The testbed's pieces: the plateau rule, SFT to a plateau, the token-budget driver, and the reward-tail analysis.

Tiny random models (`nano`: d32 x 1 layer) stand in for teacher and student; each test takes seconds.
"""
import copy

import pytest
import torch

from workbench import experiments as X
from workbench.analysis import reward_tails
from workbench.plateau import plateau_state, sft_to_plateau
from workbench.tasks import get_task
from workbench.zoo import PlateauRecipe

TASK = get_task("addition")


@pytest.mark.parametrize("accs, delta, want", [
    ([0.5], 0.01, (0, 0)),
    ([0.5, 0.6, 0.7], 0.01, (2, 0)),                 # still improving
    ([0.5, 0.6, 0.605, 0.608], 0.01, (1, 2)),        # gains below min_delta are no progress
    ([0.5, 0.6, 0.55, 0.615, 0.6], 0.01, (3, 1)),    # a dip, then a new best by >= delta resets the count
    ([0.9, 0.2, 0.3], 0.0, (0, 2)),                  # falling: the best stays the first
])
def test_plateau_state(accs, delta, want):
    assert plateau_state(accs, delta) == want


def test_sft_to_plateau_stops_after_patience_and_keeps_the_best(tok, models):
    """A random student scores 0 on every evaluation: no evaluation beats step 0, so the rule stops after
    `patience` evaluations and returns step 0's weights (the best), leaving the argument untouched."""
    teacher, student = models
    before = {k: v.clone() for k, v in student.state_dict().items()}
    rule = PlateauRecipe("addition", init="-", teacher="-", lr=1e-2, batch_size=4, eval_every=2, eval_problems=8,
                         patience=2, min_delta=0.05, max_steps=50, sft_data="reference")
    model, rec = sft_to_plateau(student, tok, teacher, TASK, rule, log=lambda *_: None)
    assert rec["plateau_reached"] and rec["steps_run"] == rule.patience * rule.eval_every
    assert [c["step"] for c in rec["curve"]] == [0, 2, 4] and rec["chosen_step"] == 0
    assert all(c["val_accuracy"] == 0 for c in rec["curve"])
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k                      # the best (step 0) weights came back
    for k, v in student.state_dict().items():
        assert torch.equal(v, before[k]), k                      # and the caller's model was not trained
    assert rec["curve"][-1]["student_tokens"] > 0


def test_sft_to_plateau_runs_at_least_min_steps(tok, models):
    """Same flat curve, but the rule may not stop before `min_steps`: it runs on to step 6 (the first evaluation
    at or past min_steps with `patience` evaluations since the best) and still keeps step 0's weights."""
    teacher, student = models
    rule = PlateauRecipe("addition", init="-", teacher="-", lr=1e-2, batch_size=4, eval_every=2, eval_problems=8,
                         patience=2, min_delta=0.05, min_steps=5, max_steps=50, sft_data="reference")
    model, rec = sft_to_plateau(student, tok, teacher, TASK, rule, log=lambda *_: None)
    assert rec["plateau_reached"] and rec["steps_run"] == 6 and rec["chosen_step"] == 0
    assert rec["rule"]["min_steps"] == 5


def test_sft_to_plateau_refuses_a_bad_rule(tok, models):
    rule = PlateauRecipe("addition", init="-", teacher="-", patience=0)
    with pytest.raises(ValueError, match="patience >= 1"):
        sft_to_plateau(models[1], tok, models[0], TASK, rule)
    with pytest.raises(ValueError, match="min_steps <= max_steps"):
        sft_to_plateau(models[1], tok, models[0], TASK, PlateauRecipe("addition", init="-", teacher="-",
                                                                       min_steps=10, max_steps=5, eval_every=5))


def test_budget_run_stops_within_one_step_of_the_budget(tok, models):
    """The driver's step count follows the tokens actually processed: a run ends at the first step whose
    cumulative student tokens reach the budget, whatever the task's sequence lengths."""
    teacher, student = models
    budget = 1500
    tr = X.train("sft", student=student, teacher=teacher, tokenizer=tok, budget_tokens=budget, batch_size=4,
                 eval_every=0, sft_data="reference", device="cpu",
                 steps=X.step_cap(TASK, budget, 4))
    per_step = tr.costs.student_tokens / tr.step_count
    assert budget <= tr.costs.student_tokens < budget + 1.5 * per_step
    assert X.step_cap(TASK, budget, 4) > tr.step_count          # the cap is a safety net, not the stopper


@torch.no_grad()
def test_reward_tails_mean_reward_is_minus_the_reverse_kl(tok, models):
    """Independent identity: under the student's own samples E[log q - log p] = -KL(p || q). The mean sampled
    reward must match the exactly computed reverse KL within Monte Carlo error (4 standard errors of a mean
    of the per-token differences, which are uncorrelated given the prefix: a martingale)."""
    teacher, student = copy.deepcopy(models[0]), models[1]
    for p in teacher.parameters():          # sharper logits: a teacher far from the student
        p.mul_(3.0)
    problems = TASK.problems(64, seed=3, split="train")
    t = reward_tails(student, teacher, tok, TASK, problems, seed=0)
    assert t["tokens"] > 500 and 0 <= t["cliff_token_frac"] <= 1
    se = t["reward_std"] / t["tokens"] ** 0.5
    assert t["reverse_kl"] > 10 * se                              # the two models differ: the check has teeth
    assert abs(t["reward_mean"] + t["reverse_kl"]) < 4 * se
    same = reward_tails(student, student, tok, TASK, problems, seed=0)
    assert abs(same["reward_mean"]) < 1e-5 and same["reverse_kl"] < 1e-5 and same["cliff_token_frac"] == 0
    assert same["teacher_entropy"] == pytest.approx(same["student_entropy"], rel=1e-5)


def _res(opd, rival, rival_totals, method="grpo", key="student_tokens_to_target", total="student_tokens",
         finals=(0.99, 0.99)):
    runs = [{"method": "opd", "seed": s, key: v, total: 1e9, "last3_accuracy": finals[s]} for s, v in enumerate(opd)]
    runs += [{"method": method, "seed": s, key: v, total: t, "last3_accuracy": 0.9}
             for s, (v, t) in enumerate(zip(rival, rival_totals))]
    return {"runs": runs, "start_accuracy": 0.9, "target_accuracy": 1.0, "eval_problems": 256}


def _verdict(res, word):
    from workbench.compare import verdicts
    return next(v for v in verdicts(res) if word in v["text"])


@pytest.mark.parametrize("opd, rival, totals, want", [
    ((100, 200), (600, 1000), (600, 1000), True),        # ratios 6 and 5: "at least 5x" holds
    ((100, 200), (600, 900), (600, 900), False),         # 4.5x in one seed
    ((100, 200), (None, 1000), (1000, 1000), True),      # never within 10x its need: a bound >= 5
    ((100, 200), (None, 1000), (300, 1000), None),       # never, but only 3x its need spent: unknown
    ((None, 200), (600, 1000), (600, 1000), None),       # OPD missed the target in a seed: not measurable
])
def test_the_5x_verdict_says_what_its_words_say(opd, rival, totals, want):
    v = _verdict(_res(opd, rival, totals), "fewer student tokens than GRPO")
    assert v["holds"] is want, v


def test_the_improvement_verdict_needs_more_than_one_standard_error():
    se = (0.9 * 0.1 / 256) ** 0.5
    v = _verdict(_res((1, 1), (1, 1), (1, 1), finals=(0.9 + 1.2 * se, 0.9 + 0.8 * se)), "raises held-out accuracy")
    assert v["holds"] is False
    v = _verdict(_res((1, 1), (1, 1), (1, 1), finals=(0.9 + 1.2 * se, 0.9 + 1.1 * se)), "raises held-out accuracy")
    assert v["holds"] is True


def test_sweep_returns_each_methods_best_overrides(monkeypatch):
    """`sweep` picks, per method, the grid point with the highest val accuracy and returns its overrides as given
    (a point that sets the batch size keeps it, whatever the other points set); ties go to the first point."""
    from workbench import compare as C
    acc = {("opd", 3e-5, None): 0.90, ("opd", 1e-4, 256): 0.93, ("opd", 3e-4, None): 0.91,
           ("sft", 1e-4, None): 0.95, ("sft", 3e-4, None): 0.95}

    def fake(task, protocol, methods, method_overrides, eval_split, **_):
        assert eval_split == "val"
        o = method_overrides[methods[0]]
        a = acc[(methods[0], o["lr"], o.get("batch_size"))]
        return {"rows": [{"final_accuracy_mean": a, "final_accuracy_std": 0.0, "student_tokens_to_target": None}],
                "start_accuracy": 0.9}
    monkeypatch.setattr(C, "compare", fake)
    rows, best = C.sweep("addition", grid={"opd": (3e-5, {"lr": 1e-4, "batch_size": 256}, 3e-4),
                                           "sft": (1e-4, 3e-4)}, progress=None)
    assert best == {"opd": {"lr": 1e-4, "batch_size": 256}, "sft": {"lr": 1e-4}}
    assert [(r["method"], r["lr"], r["val_accuracy_mean"]) for r in rows][:2] == [("opd", 3e-5, 0.90), ("opd", 1e-4, 0.93)]


def test_continued_sft_continues_the_plateau_run_and_opd_learns_from_the_protocols_teacher(monkeypatch):
    """On `addition-orders` the plateau student was SFT'd on the addition teacher's traces: the off-policy corner
    (sft, filtered_sft) must train on that teacher's traces, the on-policy methods score with the many-order one."""
    from types import SimpleNamespace
    from workbench import compare as C
    assert C.start_student("addition-orders", "plateau") == "addition-student-sft"
    assert C.sft_source("addition-student-sft", "addition-orders-teacher") == "addition-teacher"
    assert C.sft_source("addition-orders-student-sft", "addition-orders-teacher") == "addition-orders-teacher"
    assert C.sft_source("/some/dir", "addition-orders-teacher") == "addition-orders-teacher"   # not a zoo entry
    models = {}

    def teacher(name):
        return models.setdefault(name, SimpleNamespace(name=name, eval=lambda: None))

    def fake_pair(t_name, s_name, device, **_):
        return SimpleNamespace(teacher=teacher(t_name), student=SimpleNamespace(config=None), tokenizer=None)
    got = {}

    def fake_train(method, callbacks, *, teacher, teacher_name, **o):
        got[method] = (teacher.name, teacher_name, o.get("lr"))
        return SimpleNamespace(cfg=SimpleNamespace(lr=o.get("lr")))
    monkeypatch.setattr(C, "load_named_pair", fake_pair)
    monkeypatch.setattr(C, "load_teacher_model", lambda name, device, **_: (teacher(name), None))
    monkeypatch.setattr(C, "train", fake_train)
    monkeypatch.setattr(C, "held_out", lambda *a, **k: [])
    monkeypatch.setattr(C, "evaluate_model", lambda *a, **k: {"eval/accuracy": 0.5})
    monkeypatch.setattr(C, "cost_table", lambda *a, **k: [{"student_tokens_to_target": None, "last3_accuracy": 0.5,
                                                           "flops_to_target": None, "train_s_to_target": None}])
    res = C.compare("addition-orders", methods=("opd", "sft", "filtered_sft", "grpo"), seeds=(0,), progress=None)
    assert got["opd"][:2] == got["grpo"][:2] == ("addition-orders-teacher", "addition-orders-teacher")
    assert got["sft"][:2] == got["filtered_sft"][:2] == ("addition-teacher", "addition-teacher")
    assert res["sft_teacher"] == "addition-teacher" and res["teacher"] == "addition-orders-teacher"
    # the rates are the ones chosen on val for this starting student (compare.PROTOCOL_SETTINGS)
    want = C.PROTOCOL_SETTINGS[("addition-orders", "addition-student-sft")]
    assert got["opd"][2] == want["opd"]["lr"] and got["sft"][2] == want["sft"]["lr"]


def test_results_keep_each_methods_gain_in_standard_errors():
    """With no method at the target there is no ratio; the results still say how far each method moved."""
    from types import SimpleNamespace
    from workbench import compare as C
    res = {"rows": [{"method": "opd", "final_accuracy_mean": 0.97}, {"method": "sft", "final_accuracy_mean": 0.90}],
           "protocol": "plateau", "teacher": "t", "student": "s", "teacher_accuracy": 1.0, "start_accuracy": 0.9,
           "target_accuracy": 0.99, "target_frac": 0.99, "eval_problems": 100, "runs": [],
           "log": SimpleNamespace(evals={})}
    gains = C.results_numbers(res, [])["gain over the start, in standard errors"]
    assert gains["opd"] == pytest.approx(0.07 / (0.9 * 0.1 / 100) ** 0.5) and gains["sft"] == pytest.approx(0.0)
