"""Mutation tests: the suite's own checks catch a training objective that points the wrong way (issue 15,
item 3). Each mutant is applied by monkeypatching, one at a time, and the checks of tests/objective_checks.py
(the ones tests/test_directions.py runs on the real code) must then fail, for each method family it breaks:

  climb        every optimizer step climbs the gradient            -> SFT, OPD and GRPO directions fail
  opd_sign     the sampled-token OPD advantage's sign flipped       -> the OPD direction fails
  kl_sign      the full-vocabulary reverse KL's sign flipped       -> the OPD direction (opd_full) fails
  grpo_sign    the GRPO advantage's sign flipped                    -> the GRPO direction fails
  mask         the completion mask ignored (post-EOS tokens trained) -> the mask check fails, every family
  self_teacher the teacher replaced by the student (no OPD signal)   -> the OPD direction fails
"""
import pytest
import torch

import objective_checks as oc
from workbench import losses as L
from workbench.trainer import Trainer


def _climb(mp):
    step = torch.optim.AdamW.step

    def climbing(self, *a, **k):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.grad.neg_()
        return step(self, *a, **k)
    mp.setattr(torch.optim.AdamW, "step", climbing)


def _opd_sign(mp):
    rewards = L.opd_token_rewards
    mp.setattr(L, "opd_token_rewards", lambda s, t: -rewards(s, t))


def _kl_sign(mp):
    kl = L.full_reverse_kl
    mp.setattr(L, "full_reverse_kl", lambda *a, **k: tuple(-x for x in kl(*a, **k)))


def _grpo_sign(mp):
    adv = L.grpo_advantages
    mp.setattr(L, "grpo_advantages", lambda *a, **k: -adv(*a, **k))


def _mask(mp):
    loss = Trainer._loss
    mp.setattr(Trainer, "_loss", lambda self, cfg, r, mask, *a, **k: loss(self, cfg, r, torch.ones_like(mask), *a, **k))


def _self_teacher(mp):
    init = Trainer.__init__

    def with_student_as_teacher(self, *a, **k):
        init(self, *a, **k)
        if self.teacher is not None:
            self.teacher = self.student
    mp.setattr(Trainer, "__init__", with_student_as_teacher)


# (mutant, check, methods it must be caught on): one method per family it breaks, the family's main preset
CASES = [
    ("climb", oc.check_direction, ["sft", "opd", "grpo"]),
    ("opd_sign", oc.check_direction, ["opd"]),
    ("kl_sign", oc.check_direction, ["opd_full"]),
    ("grpo_sign", oc.check_direction, ["grpo"]),
    ("mask", oc.check_mask_respected, ["sft", "opd", "grpo"]),
    ("self_teacher", oc.check_direction, ["opd", "opd_full"]),
]
MUTANTS = {"climb": _climb, "opd_sign": _opd_sign, "kl_sign": _kl_sign, "grpo_sign": _grpo_sign, "mask": _mask,
           "self_teacher": _self_teacher}


@pytest.mark.parametrize("mutant,check,method", [(m, c, x) for m, c, xs in CASES for x in xs],
                         ids=[f"{m}-{x}" for m, _, xs in CASES for x in xs])
def test_the_checks_catch_the_mutant(mutant, check, method, monkeypatch):
    check(method)                                   # passes on the real code ...
    with monkeypatch.context() as mp:
        MUTANTS[mutant](mp)
        with pytest.raises(AssertionError):         # ... and fails under the mutant
            check(method)
    check(method)                                   # the patch is gone again
