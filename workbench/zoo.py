"""The toy zoo: small pretrained teachers and students shipped with the repo, and the recipe that rebuilds them.

For `addition` (3-5 digit operands, padded to 5):
  * `addition-teacher` — Llama-style d128 x 4 layers (~1.05M params), SFT on
    reference traces of the task's own distribution: the expert.
  * `addition-student` — Llama-style d64 x 2 layers (~0.13M params), SFT on a
    *neighbouring* distribution: 97% of its problems have 1-3 digit operands in
    the same padded format, 3% come from the 3-5 digit task. It has the pieces
    (the column procedure, carries, the answer format) but has rarely had to add
    non-zero high digits, so it fails on most 4-5 digit problems (~18% greedy).
    Its weakness is not an early stop of the teacher's run: more SFT on the
    teacher's traces is new data for it, and so are its own rollouts.
    Why the 3%: a student trained on 1-3 digits alone puts ~1e-8 probability on
    a non-zero high digit. Reverse KL's gradient then vanishes (the student
    never samples the teacher's token, and its softmax is saturated) and GRPO
    rarely sees a success: full-vocabulary OPD stayed at the start (~11%) over
    75 steps. Label smoothing instead of the mix put mass everywhere but made
    temperature-1 samples almost never correct, and GRPO collapsed. Measured in
    docs/results.md, "Choosing the zoo student".

  * `addition-student-sft` — `addition-student` SFT-trained on the teacher's temperature-1 traces
    until its validation accuracy plateaued (`workbench/plateau.py`; lr 3e-4, 64 traces per step,
    plateau = 4 evaluations 50 steps apart without a gain of half a point): the literature's
    starting point and the default of `workbench.compare`. Its `workbench.json` records the
    plateau curve and the testbed's measured properties (docs/testbed.md).

For `repeat` (write a word n times; notebook 12): `repeat-teacher` (the ~0.13M size, exact), `repeat-student`
(~10k parameters, d32 x 1 layer, trained on gold answers until its loss flattened) and `repeat-student-sft`
(that student SFT'd on the teacher's traces to its plateau: over-counts on about half the problems), and
`repeat-loop-teacher` (`repeat-teacher` fine-tuned to go on copying once a prefix has over-counted, its gold
behaviour unchanged: `tasks.RepeatLoops`).
`python -m workbench zoo build` retrains every entry from scratch with fixed
seeds (CPU, deterministic for a given torch build and thread count);
`python -m workbench zoo build --task module:Class --out DIR` runs the same recipe (`recipes_for`:
teacher, then weak student) for your own task;
`python -m workbench zoo list` prints size, parameters and measured accuracy.
Accuracy is greedy exact match on 512 held-out `test` problems (about +-2%).
"""
from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .batching import forced_rollout
from .evaluation import evaluate
from .models import build_model, load_checkpoint
from .rollout import completion_logits
from .tasks import Task, get_task, task_spec
from .tokenizer import build_tokenizer, vocab_mismatch

ZOO_DIR = Path(__file__).parent / "zoo_ckpt"
EVAL_PROBLEMS, EVAL_SEED = 512, 0


@dataclass(frozen=True)
class Recipe:
    """How one zoo checkpoint is made: SFT of a fresh model on a task split's reference solutions.

    Fields:
      task             the task: a name (`addition`), an import path (`module:Class`) or a Task object
      preset           model size, a key of `models.PRESETS`: "tiny-teacher" (d128 x 4 layers, ~1M params),
                       "tiny-student" (d64 x 2, ~0.13M), "nano" (d32 x 1)
      split            the task split whose problems (fresh every step) it is trained on
      steps            optimiser steps; batch_size problems per step
      lr, warmup       peak learning rate; linear warm-up steps, then cosine decay to 10% (`lr_at`)
      seed             model initialisation and problem stream
      arch             "llama" or another family `models.make_config` builds
      role             "teacher" or "student" (listing only)
      label_smoothing  keeps some probability on every token (see the student's note above)
      mix_split, mix_frac  draw a fraction `mix_frac` of each batch from `mix_split` instead of `split`
    """
    task: str | Task
    preset: str
    split: str
    steps: int
    batch_size: int = 64
    lr: float = 2e-3
    warmup: int = 100
    seed: int = 0
    arch: str = "llama"
    role: str = ""
    label_smoothing: float = 0.0    # keeps some probability on every token (see the student's note)
    mix_split: str | None = None     # draw a fraction `mix_frac` of each batch from this split instead
    mix_frac: float = 0.0
    init: str | None = None          # start from this zoo entry (fine-tune) instead of fresh weights

    def to_dict(self) -> dict:
        """The recipe as JSON (a Task object as its import path and parameters, `tasks.task_spec`)."""
        d = {f: getattr(self, f) for f in self.__dataclass_fields__}
        if isinstance(self.task, Task):
            d["task"] = task_spec(self.task)
        return d


TEACHER_STEPS, STUDENT_STEPS = 2500, 1500


def recipes_for(task, *, teacher_steps: int = TEACHER_STEPS, student_steps: int = STUDENT_STEPS, seed: int = 0
                ) -> dict[str, Recipe]:
    """The documented recipe for any character-level task: {"<name>-teacher": ..., "<name>-student": ...}.

    Teacher: "tiny-teacher" SFT on `train` for `teacher_steps`. Weak student: "tiny-student" for
    `student_steps`, on the neighbouring `short` split with 3% of each batch from `train` when the task has
    a `short` split (the shipped addition student, see above), else on `train` (then it is weaker by size and
    steps only). Warm-up is 100 steps, or a tenth of a shorter run.
    """
    t = get_task(task)
    split, mix_split, mix_frac = ("short", "train", 0.03) if "short" in t.splits else ("train", None, 0.0)
    warm = lambda steps: min(100, max(1, steps // 10))     # noqa: E731
    return {f"{t.name}-teacher": Recipe(task, "tiny-teacher", "train", steps=teacher_steps, role="teacher",
                                        warmup=warm(teacher_steps), seed=seed),
            f"{t.name}-student": Recipe(task, "tiny-student", split, steps=student_steps, role="student",
                                        mix_split=mix_split, mix_frac=mix_frac, warmup=warm(student_steps),
                                        seed=seed)}


@dataclass(frozen=True)
class PlateauRecipe:
    """A student SFT-trained from zoo entry `init` on `teacher`'s traces until it plateaus.

    The plateau rule (`workbench/plateau.py`): greedy accuracy on the `val` split every `eval_every`
    steps; stop after `patience` evaluations in a row without a gain of `min_delta` over the best;
    keep the best. The comparisons' default starting point (`compare.start_student(task, "plateau")`).
    """
    task: str
    init: str
    teacher: str
    lr: float = 3e-4
    batch_size: int = 64
    eval_every: int = 50
    eval_problems: int = 256
    patience: int = 4
    min_delta: float = 0.005
    min_steps: int = 0               # the rule cannot stop before this step
    max_steps: int = 3000
    sft_data: str = "teacher"       # "teacher": traces the teacher samples at T = 1; "reference": gold traces
    seed: int = 0
    role: str = "student"

    @property
    def preset(self) -> str:
        return RECIPES[self.init].preset


RECIPES = {
    **recipes_for("addition"),     # addition-teacher, addition-student
    "addition-student-sft": PlateauRecipe("addition", init="addition-student", teacher="addition-teacher"),
    # a teacher of realistic entropy (docs/testbed.md): the addition teacher fine-tuned on traces whose columns
    # write their summands in any order; and the weak student SFT'd on its traces to a plateau. At the addition
    # student's lr (3e-4) SFT on these traces took both shipped students to ~0 accuracy for 250+ steps (they must
    # first unlearn their one column order), hence lr 1e-3 and a rule that may not stop before step 1000
    "addition-orders-teacher": Recipe("addition-orders", "tiny-teacher", "train", steps=1500, lr=1e-3, warmup=50,
                                      role="teacher", init="addition-teacher"),
    "addition-orders-student-sft": PlateauRecipe("addition-orders", init="addition-student",
                                                 teacher="addition-orders-teacher", lr=1e-3, min_steps=1000),
    # a strong but imperfect teacher and a weaker student of one size, for going past the teacher (ExOPD, notebook
    # 11): the addition plateau run (same rule and seed as addition-student-sft) cut at 600 and at 250 steps, each
    # keeping its best val checkpoint; the student has the capacity to exceed the teacher (the full run reaches 0.94)
    "addition-early-teacher": PlateauRecipe("addition", init="addition-student", teacher="addition-teacher",
                                            min_steps=600, max_steps=600, role="teacher"),
    "addition-early-student": PlateauRecipe("addition", init="addition-student", teacher="addition-teacher",
                                            min_steps=250, max_steps=250),
    # a variable-length task whose failure is a loop (notebook 12): a teacher that counts copies (the ~0.13M student
    # size, so the zoo stays small) and a ~10k-parameter student that over-counts, SFT'd on the teacher's traces to
    # its plateau (repeat-student-sft, the notebook's student)
    "repeat-teacher": Recipe("repeat", "tiny-student", "train", steps=1500, warmup=50, role="teacher"),
    "repeat-student": Recipe("repeat", "nano", "train", steps=3000, warmup=50, role="student"),
    "repeat-student-sft": PlateauRecipe("repeat", init="repeat-student", teacher="repeat-teacher"),
    # the same teacher fine-tuned to go on repeating once a prefix has over-counted (as language models do), its
    # gold behaviour unchanged (tasks.RepeatLoops): the teacher Luo et al.'s mechanism assumes
    "repeat-loop-teacher": Recipe("workbench.tasks.repeat:RepeatLoops", "tiny-student", "train", steps=300, lr=1e-3,
                                  warmup=20, role="teacher", init="repeat-teacher"),
}


def lr_at(step: int, recipe: Recipe) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak."""
    if step < recipe.warmup:
        return recipe.lr * (step + 1) / recipe.warmup
    frac = (step - recipe.warmup) / max(1, recipe.steps - recipe.warmup)
    return recipe.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))


def pretrain(recipe: Recipe, log=print):
    """Train a fresh model on the recipe's data (reference solutions, fresh problems every step)."""
    task = get_task(recipe.task)
    if not task.charset:
        raise ValueError(f"task {task.name!r} has no charset: the zoo recipe trains character-level models, so the "
                         "task must list every character its prompts and solutions use (Task.charset)")
    tok = build_tokenizer(task.charset)
    torch.manual_seed(recipe.seed)
    if recipe.init:
        model, init_tok = load_checkpoint(path(recipe.init))
        why = vocab_mismatch(init_tok, tok)
        if why:
            raise ValueError(f"recipe init {recipe.init!r} does not share task {recipe.task!r}'s tokenizer ({why}); "
                             "fine-tune only between tasks with one character set")
    else:
        model = build_model(recipe.preset, tok, recipe.arch, seed=recipe.seed)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=0.01, betas=(0.9, 0.98))
    rng = random.Random(f"pretrain:{recipe.task}:{recipe.split}:{recipe.seed}")
    t0 = last_log = time.time()
    for step in range(recipe.steps):
        problems = [task.make_problem(rng, recipe.mix_split if recipe.mix_split and rng.random() < recipe.mix_frac
                                      else recipe.split) for _ in range(recipe.batch_size)]
        batch = forced_rollout(tok, problems)
        logits = completion_logits(model, batch)
        m = batch.completion_mask
        nll = F.cross_entropy(logits.transpose(1, 2), batch.completion_ids, reduction="none",
                              label_smoothing=recipe.label_smoothing)
        loss = (nll * m).sum() / m.sum()
        for g in opt.param_groups:
            g["lr"] = lr_at(step, recipe)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 250 == 0 or step == recipe.steps - 1 or time.time() - last_log >= 30:   # a line at least every 30 s
            last_log = time.time()
            log(f"  step {step:5d}/{recipe.steps}  loss {loss.item():.4f}  {time.time() - t0:6.1f}s")
    model.eval()
    return model, tok


def measure(model, tok, task_name, split: str = "test", n: int = EVAL_PROBLEMS) -> dict:
    task = get_task(task_name)
    return evaluate(model, tok, task, task.problems(n, seed=EVAL_SEED, split=split))


def path(name: str) -> Path:
    """Directory of a shipped zoo checkpoint."""
    if name not in RECIPES:
        raise ValueError(f"unknown zoo entry {name!r}; choose from {sorted(RECIPES)} or pass a checkpoint directory")
    p = ZOO_DIR / name
    if not (p / "config.json").exists():
        raise FileNotFoundError(f"zoo checkpoint {name!r} is missing at {p}; rebuild it with "
                                f"`python -m workbench zoo build --only {name}`")
    return p


def metadata(name: str) -> dict:
    """A built zoo entry's `workbench.json`: recipe, accuracy, and (for plateau students) the plateau curve
    and the testbed's measured properties."""
    return json.loads((path(name) / "workbench.json").read_text())


# (teacher, weak student) per task. `addition-orders` shares the weak `addition-student` (one character set):
# it never saw the column orders, so the orders are new to it the way the 4-5 digit sums are.
PAIRS = {"addition": ("addition-teacher", "addition-student"),
         "addition-orders": ("addition-orders-teacher", "addition-student")}


# The plateau student each task's comparisons start from (`compare.start_student`; a task not listed uses
# `<task>-student-sft`). `addition-orders` starts from the addition plateau student: SFT'd to its plateau on the
# addition teacher's single-order traces, then distilled from a teacher that writes any order — the literature's
# setting (Thinking Machines SFT on one model's traces, then distil from another), and the pairing that meets all
# four of docs/testbed.md's conditions. Its own `addition-orders-student-sft` (SFT'd on the many-order traces)
# samples blends and is the subject of notebook 09's mode-seeking test.
PLATEAU_STUDENTS = {"addition": "addition-student-sft", "addition-orders": "addition-student-sft"}


def default_pair(task: str) -> tuple[str, str]:
    """(teacher, weak student) zoo names for a task."""
    t, s = PAIRS.get(task, (f"{task}-teacher", f"{task}-student"))
    if t not in RECIPES or s not in RECIPES:
        raise ValueError(f"the zoo has no teacher/student pair for task {task!r}; pass --teacher and --student "
                         "checkpoint directories")
    return t, s


def listing() -> list[dict]:
    """One row per zoo entry: name, role, params, size on disk, recorded accuracy."""
    rows = []
    for name, recipe in RECIPES.items():
        p = ZOO_DIR / name
        meta = json.loads((p / "workbench.json").read_text()) if (p / "workbench.json").exists() else None
        size = sum(f.stat().st_size for f in p.glob("*") if f.is_file()) if p.exists() else 0
        rows.append({"name": name, "role": recipe.role, "task": recipe.task if isinstance(recipe.task, str)
                     else recipe.task.name, "preset": recipe.preset,
                     "params": meta["params"] if meta else None, "size_mb": round(size / 2**20, 2),
                     "accuracy": meta["eval"]["accuracy"] if meta else None,
                     "built": meta is not None, "train_s": meta["train_s"] if meta else None})
    return rows
