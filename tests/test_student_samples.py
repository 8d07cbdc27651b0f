"""workbench.student_samples: SFT runs record the student's own samples, scored by the teacher, as evaluation.

The same tiny random models as tests/test_trainer.py (`nano`, d32 x 1 layer), on CPU.
"""
import copy

import pytest

from f32 import assert_samples_scored_by_hand
from workbench.config import ConfigError, TrainConfig, validate
from workbench.tasks import get_task
from workbench.trainer import Trainer

TASK = get_task("addition")
SMALL = dict(batch_size=8, eval_problems=16, eval_every=0, steps=4, device="cpu")


def run(models, tok, method="sft", steps=4, **kw):
    teacher, student = models
    trainer = Trainer(TrainConfig.for_method(method, **{**SMALL, **kw}), teacher=teacher,
                      student=copy.deepcopy(student), tokenizer=tok)
    return trainer, [trainer.step() for _ in range(steps)]


def test_every_n_steps_only_for_teacher_data_and_training_is_untouched(models, tok):
    _, plain = run(models, tok, student_samples_every=0)
    _, watched = run(models, tok, student_samples_every=2)
    assert [("student_samples" in r) for r in watched] == [False, True, False, True]
    assert not any("student_samples" in r or "student_samples/accuracy" in r for r in plain)
    for a, b in zip(plain, watched):
        # evaluation, not training: the loss, the update and the cost ledger are those of the plain run
        assert a["loss"] == b["loss"] and a["grad/norm"] == b["grad/norm"]
        for k in ("cost/student_tokens", "cost/teacher_tokens", "cost/flops"):
            assert a[k] == b[k], k
    r = watched[1]
    assert r["student_samples/student_tokens"] > 0 and r["student_samples/teacher_tokens"] > 0
    assert 0 <= r["student_samples/accuracy"] <= 1 and r["student_samples/mean_length"] >= 1
    # the student's own text differs from the teacher traces it trains on
    own = [s["tokens"] for s in r["student_samples"]]
    assert own != [s["tokens"] for s in r["samples"]]
    # methods that sample from the student already show its own samples: nothing extra
    _, opd = run(models, tok, method="opd", steps=2, student_samples_every=1)
    assert not any("student_samples" in r for r in opd)


def test_student_samples_are_scored_by_the_teacher(models, tok):
    """Each sample scored by hand with both models (unpadded, one sequence at a time), as in test_trainer."""
    teacher, _ = models
    trainer, recs = run(models, tok, steps=2, student_samples_every=2)
    student = copy.deepcopy(trainer.student).eval()      # the samples are drawn after step 2's update
    checked = assert_samples_scored_by_hand(recs[1]["student_samples"], tok, teacher, student)
    assert checked > 8
    assert trainer.student.training        # sampling in eval mode did not leave the student there


def test_bad_student_samples_every_fails_before_compute():
    for bad in (-1, 2.5):
        with pytest.raises(ConfigError, match="student_samples_every"):
            validate(TrainConfig.for_method("sft", student_samples_every=bad, **SMALL))
