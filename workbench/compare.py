"""Matched-budget comparison: SFT, GRPO and OPD from the same student, the same budget of student tokens.

Each method trains until it has processed `budget_tokens` student tokens
(`cost/student_tokens`: tokens it generated or was trained on, prompts
included), evaluating every `eval_every` steps on the same held-out problems.
`tokens_to_90pct_teacher` is the student-token count at the first evaluation
whose greedy accuracy reaches 90% of the teacher's on those problems.
"""
from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

from .config import TrainConfig
from .trainer import Trainer

DEFAULT_METHODS = ("sft", "grpo", "opd")
DEFAULT_BUDGET = 1_200_000
TOKENS_PER_SEQUENCE_ESTIMATE = 66       # addition: 13 prompt + ~53 completion tokens


class TokenBudget:
    """Callback: stop once `cost/student_tokens` reaches the budget."""

    def __init__(self, budget: int):
        self.budget = budget

    def on_step(self, rec):
        return rec["cost/student_tokens"] >= self.budget


def teacher_accuracy(trainer: Trainer) -> float:
    return trainer.evaluate(model=trainer.teacher)["eval/accuracy"] if trainer.teacher is not None else float("nan")


def run_method(method: str, budget_tokens: int, out: str | None = None, callbacks=(), **overrides) -> dict:
    """Train one method to the token budget; return its comparison row and the eval curve."""
    batch = overrides.get("batch_size", 64)
    steps = math.ceil(budget_tokens / (batch * TOKENS_PER_SEQUENCE_ESTIMATE)) * 2 + 10   # cap; budget stops first
    cfg = TrainConfig.for_method(method, steps=steps, out=out, **overrides)
    trainer = Trainer(cfg)
    curve = [{"step": 0, "student_tokens": 0, "teacher_tokens": 0, "flops": 0.0,
              **trainer.evaluate(step=0)}]

    class Curve:
        def on_step(self, rec):
            if "eval/accuracy" in rec:
                curve.append({"step": rec["step"], "student_tokens": rec["cost/student_tokens"],
                              "teacher_tokens": rec["cost/teacher_tokens"], "flops": rec["cost/flops"],
                              **{k: v for k, v in rec.items() if k.startswith("eval/")}})

    summary = trainer.run(callbacks=[TokenBudget(budget_tokens), Curve(), *callbacks])
    if curve[-1]["step"] != trainer.step_count:
        curve.append({"step": trainer.step_count, "student_tokens": trainer.costs.student_tokens,
                      "teacher_tokens": trainer.costs.teacher_tokens, "flops": trainer.costs.flops,
                      **trainer.evaluate(step=trainer.step_count)})
    summary["final_eval_accuracy"] = curve[-1]["eval/accuracy"]
    return {"summary": summary, "curve": curve, "trainer": trainer}


def compare(task: str = "addition", budget_tokens: int = DEFAULT_BUDGET, methods=DEFAULT_METHODS, seed: int = 0,
            out: str | None = None, method_overrides: dict | None = None, callbacks=(), **common) -> list[dict]:
    """One row per method: method, final_eval_accuracy, student_tokens, teacher_tokens, flops, wall_s,
    tokens_to_90pct_teacher (null if never), plus the eval curve."""
    method_overrides = method_overrides or {}
    rows, teacher_acc = [], None
    for m in methods:
        o = {"task": task, "seed": seed, **common, **method_overrides.get(m, {})}
        res = run_method(m, budget_tokens, out=str(Path(out) / m) if out else None, callbacks=callbacks, **o)
        tr = res["trainer"]
        if teacher_acc is None:
            if tr.teacher is None:
                from . import zoo
                t_model, _ = zoo.load(tr.cfg.teacher, device=str(tr.device), trainable=False)
                teacher_acc = tr.evaluate(model=t_model)["eval/accuracy"]
            else:
                teacher_acc = teacher_accuracy(tr)
        target = 0.9 * teacher_acc
        hit = next((c["student_tokens"] for c in res["curve"] if c["eval/accuracy"] >= target), None)
        s = res["summary"]
        rows.append({"method": m, "final_eval_accuracy": s["final_eval_accuracy"],
                     "student_tokens": s["student_tokens"], "teacher_tokens": s["teacher_tokens"],
                     "flops": s["flops"], "wall_s": round(s["wall_s"], 2), "tokens_to_90pct_teacher": hit,
                     "teacher_accuracy": teacher_acc, "steps": s["step"], "lr": tr.cfg.lr,
                     "curve": res["curve"]})
    return rows


# a small learning-rate grid per method (fair tuning: same budget, best of each reported)
DEFAULT_SWEEP = {"sft": (3e-4, 1e-3), "grpo": (1e-5, 3e-5, 1e-4), "opd": (3e-4, 1e-3, 3e-3),
                 "opd_full": (3e-4, 1e-3, 3e-3)}


def sweep(task: str = "addition", budget_tokens: int = DEFAULT_BUDGET, grid: dict | None = None, seed: int = 0,
          out: str | None = None, callbacks=(), **common) -> tuple[list[dict], list[dict]]:
    """Run `compare` once per learning rate of each method's grid; return (all rows, best row per method).

    "Best" is the highest final held-out accuracy; ties go to fewer tokens to 90% of the teacher.
    """
    grid = grid or DEFAULT_SWEEP
    rows = []
    for method, lrs in grid.items():
        for lr in lrs:
            sub = str(Path(out) / f"{method}_lr{lr:g}") if out else None
            r = compare(task, budget_tokens, methods=(method,), seed=seed, out=sub,
                        method_overrides={method: {"lr": lr, "name": f"{method} lr={lr:g}"}},
                        callbacks=callbacks, **common)[0]
            rows.append(r)
    best = []
    for method in grid:
        cands = [r for r in rows if r["method"] == method]
        best.append(max(cands, key=lambda r: (r["final_eval_accuracy"],
                                              -(r["tokens_to_90pct_teacher"] or float("inf")))))
    return rows, best
