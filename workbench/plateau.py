"""The literature's starting point: a student SFT-trained on the teacher's traces until it stops improving.

Thinking Machines' on-policy distillation post and the Qwen3 report compare continued SFT, RL and
OPD *after* a supervised cold start has plateaued: from there, more imitation buys little and the
question is which signal moves the student further per unit of compute. `sft_to_plateau` makes that
starting point from any student, with a rule anyone can re-run:

    evaluate greedy accuracy on the task's `val` split every `eval_every` steps; the plateau is
    reached when `patience` evaluations in a row fail to beat the best so far by `min_delta`, and
    not before `min_steps` (a student learning a new format can first get worse: the weak student
    on `addition-orders` falls from 0.13 to 0.00 while it unlearns its one column order);
    the checkpoint kept is the best one (its step is recorded).

`val` is not the split the comparisons report (`test`), so the stopping point is not selected on
the numbers shown later. The zoo entry `addition-student-sft` is this function applied to the
shipped `addition-student` (`zoo.RECIPES`), with its measured properties in its `workbench.json`.
"""
from __future__ import annotations

import copy
import time

import torch

from .config import TrainConfig
from .evaluation import evaluate
from .trainer import Trainer


RULE_FIELDS = ("lr", "batch_size", "eval_every", "eval_problems", "patience", "min_delta", "min_steps", "max_steps",
               "sft_data", "seed")


def plateau_state(accuracies, min_delta: float) -> tuple[int, int]:
    """(index of the best evaluation, evaluations since it) under the rule: a new best must beat the
    previous best by at least `min_delta` (smaller gains count as no progress)."""
    best, since = 0, 0
    for i in range(1, len(accuracies)):
        if accuracies[i] >= accuracies[best] + min_delta:
            best, since = i, 0
        else:
            since += 1
    return best, since


def sft_to_plateau(student, tokenizer, teacher, task, rule, log=print):
    """SFT `student` (a copy; the argument is untouched) on `teacher`'s traces until `rule` says it plateaued.

    `rule`: any object with the fields of `RULE_FIELDS` (e.g. `zoo.PlateauRecipe`). Returns (best
    student, record); the record holds the rule, the validation curve (greedy and temperature-1
    accuracy at every evaluation), the chosen step and the training time.
    """
    if (not 0 < rule.min_delta < 1 or rule.patience < 1 or rule.eval_every < 1 or rule.max_steps < rule.eval_every
            or not 0 <= rule.min_steps <= rule.max_steps):
        raise ValueError(f"plateau rule out of range ({rule}); need 0 < min_delta < 1, patience >= 1, "
                         "1 <= eval_every <= max_steps, 0 <= min_steps <= max_steps")
    cfg = TrainConfig.for_method("sft", steps=rule.max_steps, lr=rule.lr, batch_size=rule.batch_size,
                                 sft_data=rule.sft_data, seed=rule.seed, eval_every=0, name="plateau-sft")
    trainer = Trainer(cfg, student=copy.deepcopy(student), teacher=teacher, tokenizer=tokenizer, task=task)
    val = task.problems(rule.eval_problems, seed=0, split="val")
    gen = torch.Generator(device=trainer.device)

    def measure(step):
        g = evaluate(trainer.student, tokenizer, task, val)["accuracy"]
        s = evaluate(trainer.student, tokenizer, task, val, temperature=1.0,
                     generator=gen.manual_seed(step))["accuracy"]
        trainer.student.train()
        return {"step": step, "val_accuracy": g, "val_sampled_accuracy": s,
                "student_tokens": trainer.costs.student_tokens, "flops": trainer.costs.flops}

    curve = [measure(0)]
    best_state = copy.deepcopy(trainer.student.state_dict())    # the best checkpoint so far (only it is kept)
    best, since_best = 0, 0
    t0 = time.time()
    while trainer.step_count < rule.max_steps and (since_best < rule.patience or trainer.step_count < rule.min_steps):
        for _ in range(rule.eval_every):
            trainer.step()
        curve.append(measure(trainer.step_count))
        best, since_best = plateau_state([c["val_accuracy"] for c in curve], rule.min_delta)
        if since_best == 0:
            best_state = copy.deepcopy(trainer.student.state_dict())
        row = curve[-1]
        log(f"  plateau SFT step {row['step']:5d}  val {row['val_accuracy']:.3f} (T=1: "
            f"{row['val_sampled_accuracy']:.3f})  best {curve[best]['val_accuracy']:.3f} @ {curve[best]['step']}  "
            f"{time.time() - t0:5.0f}s")
    reached = since_best >= rule.patience and trainer.step_count >= rule.min_steps
    trainer.student.load_state_dict(best_state)
    model = trainer.student.eval()
    record = {"rule": {f: getattr(rule, f) for f in RULE_FIELDS}, "curve": curve, "chosen_step": curve[best]["step"],
              "plateau_reached": reached,
              "steps_run": trainer.step_count, "train_s": round(time.time() - t0, 1)}
    if not reached:
        log(f"  no plateau within max_steps={rule.max_steps}: kept the best checkpoint (step {curve[best]['step']})")
    return model, record
