"""workbench.objectives: one registry entry per objective, read by validation, the trainer and the CLI.

A toy objective registered in one place is validated against its corner and trains a step; SDAR is
selectable from TrainConfig and the CLI, and its loss is checked against an independent computation.
Tiny random models (`nano`) stand in for teacher and student.
"""
import copy
import json

import pytest
import torch

from workbench import cli, objectives
from workbench import losses as L
from workbench.config import ConfigError, TrainConfig
from workbench.objectives import LossInputs, Objective
from workbench.tasks import get_task
from workbench.trainer import Trainer

TASK = get_task("addition")
SMALL = dict(batch_size=8, eval_problems=8, eval_every=0, steps=1, device="cpu", student_samples_every=0)


@pytest.fixture
def toy():
    """A squared log-ratio objective, on-policy dense only; registered for one test, then removed."""
    calls = []

    def compute(b: LossInputs, cfg, stats):
        d = (b.s_lp - b.t_lp) * b.mask
        loss = (d ** 2).sum() / b.mask.sum()
        stats["toy/value"] = loss.item()
        calls.append(loss.detach().clone())
        return loss

    objectives.register(Objective("toy_sq", corners=(("student", "dense"),), compute=compute, needs_teacher=True))
    try:
        yield calls
    finally:
        objectives.unregister("toy_sq")


def test_a_toy_objective_registered_in_one_place_trains_a_step(toy, tok, models):
    teacher, student = models
    student = copy.deepcopy(student)
    before = [p.detach().clone() for p in student.parameters()]
    tr = Trainer(TrainConfig.for_method("opd", loss="toy_sq", **SMALL), teacher=teacher, student=student,
                 tokenizer=tok)
    assert tr.teacher is not None and tr.teacher_scores          # needs_teacher was read from the entry
    rec = tr.step()
    assert len(toy) == 1                                         # the trainer called the registered loss
    assert rec["loss"] == pytest.approx(toy[0].item(), rel=0, abs=0)
    assert rec["toy/value"] == rec["loss"]                      # its statistics reach the record
    assert any(not torch.equal(a, p) for a, p in zip(before, student.parameters()))   # and it trained


def test_the_registry_decides_which_corner_allows_a_loss(toy):
    with pytest.raises(ConfigError, match="loss 'toy_sq' is not valid for source=teacher, signal=dense"):
        Trainer(TrainConfig.for_method("sft", loss="toy_sq", **SMALL))
    assert "toy_sq" in objectives.losses_for("student", "dense")
    assert "toy_sq" not in objectives.losses_for("student", "sparse")


def test_registering_a_corner_outside_the_table_fails():
    with pytest.raises(ValueError, match="corners must be"):
        objectives.register(Objective("bad", corners=(("student", "medium"),), compute=lambda b, c, s: 0))
    assert "bad" not in objectives.OBJECTIVES


def test_sdar_is_grpo_plus_the_gated_term_computed_independently():
    g = torch.Generator().manual_seed(0)
    B, N, V, G = 4, 5, 7, 2
    s_logits = torch.randn(B, N, V, generator=g, requires_grad=True)
    t_logits = torch.randn(B, N, V, generator=g)
    ids = torch.randint(0, V, (B, N), generator=g)
    mask = (torch.rand(B, N, generator=g) > 0.3).float()
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0])
    s_lp, t_lp = L.token_logprobs(s_logits, ids), L.token_logprobs(t_logits, ids)

    class R:
        completion_ids = ids

    cfg = TrainConfig.for_method("grpo", loss="sdar", num_generations=G, sdar_coef=0.1, sdar_beta_gate=5.0)
    stats = {}
    got = objectives.get("sdar").compute(LossInputs(R, mask, rewards, s_logits, s_lp, t_logits, t_lp, None), cfg,
                                         stats)
    # independent: GRPO's loss from its own entry, plus 0.1 x mean over masked tokens of
    # sigmoid(5 (log T - log S)) (log T - log S), written out here without losses.sdar_loss
    pg = objectives.get("pg").compute(LossInputs(R, mask, rewards, s_logits, s_lp, t_logits, t_lp, None), cfg, {})
    delta = (t_lp - s_lp).detach()
    term = (torch.sigmoid(5.0 * delta) * delta * mask).sum() / mask.sum()
    # float32 sums of B*N terms of size O(1): a few ulps of 1e-7 each
    assert got.item() == pytest.approx((pg + 0.1 * term).item(), abs=1e-5)
    assert stats["sdar/term"] == pytest.approx(term.item(), abs=1e-5)


def test_sdar_selectable_from_trainconfig(tok, models):
    teacher, student = models
    tr = Trainer(TrainConfig.for_method("grpo", loss="sdar", num_generations=4, **SMALL), teacher=teacher,
                 student=copy.deepcopy(student), tokenizer=tok)
    assert tr.teacher is not None                # SDAR's teacher scores every batch
    rec = tr.step()
    assert "sdar/term" in rec and "grpo/zero_adv_frac" in rec and "teacher/reverse_kl" in rec


def test_sdar_selectable_from_the_cli(capsys):
    rc = cli.main(["train", "--method", "grpo", "--loss", "sdar", "--num-generations", "4", "--steps", "1",
                   "--batch-size", "8", "--eval-every", "0", "--eval-problems", "8", "--student-samples-every", "0",
                   "--device", "cpu", "--json"])
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    assert rc == 0
    assert "sdar/term" in lines[0] and lines[0]["method"] == "grpo"
    assert "sdar" in cli.build_parser()._subparsers._group_actions[0].choices["train"].format_help()
