"""Rebuilding the toy zoo (`python -m workbench zoo build`): each entry from its recipe in `zoo.RECIPES`;
and a (teacher, weak student) pair for your own task by the same recipe (`build_pair`,
`python -m workbench zoo build --task module:Class --out DIR`).

Apart from `zoo` (the catalogue: recipes, paths; `pairs.load_checkpoint` loads an entry by name) because a plateau student is trained through
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
from .pairs import load_checkpoint
from .zoo import (EVAL_PROBLEMS, EVAL_SEED, RECIPES, STUDENT_STEPS, TEACHER_STEPS, ZOO_DIR, PlateauRecipe, measure,
                  pretrain, recipes_for)


def build(names=None, out_dir: Path = ZOO_DIR, log=print) -> dict:
    """Rebuild zoo entries from their recipes; writes checkpoints + workbench.json metadata."""
    names = list(names or RECIPES)
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        raise ValueError(f"unknown zoo entries {unknown}; choose from {sorted(RECIPES)}")
    return build_recipes({n: RECIPES[n] for n in names}, out_dir, log=log)


def build_pair(task, out_dir, *, teacher_steps: int = TEACHER_STEPS, student_steps: int = STUDENT_STEPS,
               seed: int = 0, eval_problems: int = EVAL_PROBLEMS, log=print) -> dict:
    """Train the documented recipe (`zoo.recipes_for`: teacher, then weak student) for `task` into
    `out_dir/<name>-teacher` and `out_dir/<name>-student`; returns their metadata by name.

    Then: `python -m workbench train --task module:Class --teacher DIR/<name>-teacher --student DIR/<name>-student`.
    """
    for k, v in (("teacher_steps", teacher_steps), ("student_steps", student_steps), ("eval_problems", eval_problems)):
        if not isinstance(v, int) or v <= 0:
            raise ValueError(f"{k} must be a positive integer, got {v!r}")
    recipes = recipes_for(task, teacher_steps=teacher_steps, student_steps=student_steps, seed=seed)
    busy = [str(Path(out_dir) / n) for n in recipes if (Path(out_dir) / n).exists()]
    if busy:
        raise ValueError(f"{busy} already exist; choose another --out or remove them")
    return build_recipes(recipes, Path(out_dir), log=log, eval_problems=eval_problems)


def build_recipes(recipes: dict, out_dir: Path, log=print, eval_problems: int = EVAL_PROBLEMS) -> dict:
    """Build each (name, recipe) in order into `out_dir/name`: checkpoint + workbench.json metadata."""
    results = {}
    for i, (name, recipe) in enumerate(recipes.items(), 1):
        log(f"[{i}/{len(recipes)}] building {name}: {recipe}")
        t0 = time.time()
        extra = {}
        if isinstance(recipe, PlateauRecipe):
            # from the checkpoints as they are on disk (RECIPES lists `init` and `teacher` before this entry)
            init, tok = load_checkpoint("plateau init", recipe.init, "auto")
            teacher, _ = load_checkpoint("plateau teacher", recipe.teacher, "auto", trainable=False)
            model, extra["plateau"] = sft_to_plateau(init, tok, teacher, get_task(recipe.task), recipe, log=log)
            extra["testbed"] = testbed_properties(model, teacher, tok, recipe.task)
        else:
            model, tok = pretrain(recipe, log=log)
        train_s = time.time() - t0
        acc = measure(model, tok, recipe.task, n=eval_problems)
        rec = recipe.to_dict() if hasattr(recipe, "to_dict") else asdict(recipe)
        meta = {"name": name, "recipe": rec, "params": count_params(model), "train_s": round(train_s, 1),
                "eval": {"split": "test", "n": eval_problems, "seed": EVAL_SEED, **acc},
                "torch": torch.__version__, "threads": torch.get_num_threads(), **extra}
        save_checkpoint(model, tok, out_dir / name, extra=meta)
        log(f"  {name}: greedy accuracy {acc['accuracy']:.3f} on {eval_problems} test problems, {train_s:.0f}s "
            f"-> {out_dir / name}")
        results[name] = meta
    return results


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
