"""Rebuilding the toy zoo (`python -m workbench zoo build`): each entry from its recipe in `zoo.RECIPES`.

Apart from `zoo` (the catalogue: recipes, paths, loading) because a plateau student is trained through
the `Trainer` (`plateau.sft_to_plateau`), and the trainer loads zoo entries by name: the catalogue sits
below the trainer, the rebuilding above it.
"""
from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import torch

from .analysis import reward_tails
from .evaluation import evaluate
from .models import count_params, save_checkpoint
from .plateau import sft_to_plateau
from .tasks import get_task
from .zoo import EVAL_PROBLEMS, EVAL_SEED, RECIPES, ZOO_DIR, PlateauRecipe, load, measure, pretrain


def build(names=None, out_dir: Path = ZOO_DIR, log=print) -> dict:
    """Rebuild zoo entries from their recipes; writes checkpoints + workbench.json metadata."""
    names = list(names or RECIPES)
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        raise ValueError(f"unknown zoo entries {unknown}; choose from {sorted(RECIPES)}")
    results = {}
    for name in names:
        recipe = RECIPES[name]
        log(f"building {name}: {recipe}")
        t0 = time.time()
        extra = {}
        if isinstance(recipe, PlateauRecipe):
            # from the checkpoints as they are on disk (RECIPES lists `init` and `teacher` before this entry)
            init, tok = load(recipe.init)
            teacher, _ = load(recipe.teacher, trainable=False)
            model, extra["plateau"] = sft_to_plateau(init, tok, teacher, get_task(recipe.task), recipe, log=log)
            extra["testbed"] = testbed_properties(model, teacher, tok, recipe.task)
        else:
            model, tok = pretrain(recipe, log=log)
        results[name] = save_entry(name, model, tok, time.time() - t0, out_dir, extra, log)
    return results


def save_entry(name: str, model, tok, train_s: float, out_dir: Path = ZOO_DIR, extra=None, log=print) -> dict:
    """Measure a freshly trained entry on `test` and save it with its `workbench.json` (recipe, accuracy, cost)."""
    recipe = RECIPES[name]
    acc = measure(model, tok, recipe.task)
    meta = {"name": name, "recipe": asdict(recipe), "params": count_params(model), "train_s": round(train_s, 1),
            "eval": {"split": "test", "n": EVAL_PROBLEMS, "seed": EVAL_SEED, **acc},
            "torch": torch.__version__, "threads": torch.get_num_threads(), **(extra or {})}
    save_checkpoint(model, tok, out_dir / name, extra=meta)
    log(f"  {name}: greedy accuracy {acc['accuracy']:.3f} on {EVAL_PROBLEMS} test problems, {train_s:.0f}s")
    return meta


@torch.no_grad()
def testbed_properties(student, teacher, tok, task_name: str, n: int = EVAL_PROBLEMS) -> dict:
    """The properties the on-policy literature assumes of a (teacher, student) pair, measured on `test`.

    calibration: the student's temperature-1 accuracy next to its greedy accuracy (an SFT-trained LLM
    samples nearly as well as it decodes greedily); capacity gap: teacher minus student greedy accuracy;
    teacher entropy (nats per token) and the per-token reward log q - log p on the student's own
    temperature-1 samples; horizon: mean completion length and the share of wrong samples whose first
    mistake is followed by further tokens (errors that later tokens build on).
    """
    task = get_task(task_name)
    problems = task.problems(n, seed=EVAL_SEED, split="test")
    gen = torch.Generator(device=next(student.parameters()).device).manual_seed(0)
    s_greedy = evaluate(student, tok, task, problems)
    s_sampled = evaluate(student, tok, task, problems, temperature=1.0, generator=gen)
    t_greedy = evaluate(teacher, tok, task, problems)
    t_sampled = evaluate(teacher, tok, task, problems, temperature=1.0, generator=gen.manual_seed(1))
    tails = reward_tails(student, teacher, tok, task, problems, seed=0)
    return {"student_greedy": s_greedy["accuracy"], "student_sampled": s_sampled["accuracy"],
            "teacher_greedy": t_greedy["accuracy"], "teacher_sampled": t_sampled["accuracy"],
            "capacity_gap": t_greedy["accuracy"] - s_greedy["accuracy"],
            "mean_completion_tokens": s_greedy["mean_length"], **tails}
