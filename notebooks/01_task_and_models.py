# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 01 · The task, the verifier, the tokenizer and the two models
#
# **The question.** Before comparing ways to post-train a student, we should know exactly what
# it is asked to do, how an answer is graded, what the teacher can do that the student cannot,
# and what one *rollout* — the unit every on-policy method learns from — looks like.
#
# This notebook trains almost nothing. It looks at the data and the models, measures where the
# student fails, shows one record of the trainer's per-step stream, and ends with how to plug
# in a task of your own.

# %% tags=["parameters"]
size: str = "full"          # "smoke": tiny sample sizes (seconds, used by the tests); "full": the teaching size
run_dir: str = "../runs/notebooks/01_task_and_models"   # where figures and results.json are written
mode: str = "live"          # "live": the dashboard redraws while training; "static": final figures only (headless runs)
device: str = "auto"        # "auto": CUDA when present, else CPU; or "cpu" / "cuda"

# %%
import time
t_start = time.time()
from pathlib import Path

import pandas as pd

from workbench import experiments as X
from workbench import zoo
from workbench.claims import Claims, write_results
from workbench.config import TrainConfig
from workbench.trainer import Trainer
from widgets import TrainingDashboard
from widgets import figures as F
from widgets import plots as P

S = X.pick_size(size,
                smoke=dict(eval_problems=16, demo_steps=2, demo_batch=8, own_task_steps=2),
                full=dict(eval_problems=512, demo_steps=20, demo_batch=64, own_task_steps=60))
out = Path(run_dir)
out.mkdir(parents=True, exist_ok=True)
claims = Claims(size)

# %% [markdown]
# ## The task
#
# `addition` draws two operands of 3–5 digits, zero-padded to 5. The reference solution walks
# the columns from the right: `a+b+carry=total,` for each column, then `|` and the zero-padded
# sum. The splits differ only in operand length: `train`/`test` (3–5 digits), `short`
# (1–3 digits — 97% of what the zoo student was pretrained on; the other 3% were `train`
# problems) and `long` (6 digits, never trained on by either model).

# %%
M = X.load_models("addition", device=device)
task = M.task
pd.DataFrame([{"split": split, "prompt": p.prompt, "reference solution": p.solution}
              for split in task.splits for p in task.problems(2, seed=7, split=split)])

# %% [markdown]
# ## The verifier
#
# The verifier reads the text after the last `|` and compares it with the answer: reward 1 or
# 0, nothing in between. A completion that hits the length cap without ending (truncated)
# scores 0 whatever it says. This single bit is all that outcome RL learns from.

# %%
p = task.problems(1, seed=3, split="test")[0]
wrong = p.solution[:-1] + str((int(p.solution[-1]) + 1) % 10)
cases = {"reference": (p.solution, False), "last digit wrong": (wrong, False), "no answer": (p.solution.split("|")[0], False),
         "truncated": (p.solution, True)}
pd.DataFrame([{"case": k, "completion": c, "truncated": tr, **vars(task.verify(p, c, truncated=tr))}
              for k, (c, tr) in cases.items()])

# %% [markdown]
# ## The tokenizer
#
# One token per character: 14 task characters plus `<pad>`, `<bos>`, `<eos>` and `<unk>`. It is
# a real `transformers.PreTrainedTokenizerFast`, so it saves and loads like any checkpoint's.
# Teacher and student share it — OPD compares their log-probabilities token by token, which
# only makes sense over one vocabulary.

# %%
ids = M.tokenizer(p.prompt)["input_ids"]
print(f"vocabulary: {len(M.tokenizer)} tokens -> {M.tokenizer.convert_ids_to_tokens(list(range(len(M.tokenizer))))}")
print(f"{p.prompt!r} -> ids {ids}")
print(f"          tokens {M.tokenizer.convert_ids_to_tokens(ids)}")

# %% [markdown]
# ## The teacher and the student
#
# Two Llama-style transformers from `workbench/zoo_ckpt/` (rebuild them with
# `python -m workbench zoo build`). We evaluate both greedily on held-out `test` problems, and
# split the accuracy by the length of the longer operand.

# %%
problems = X.held_out(task, S.eval_problems)
tables = {"teacher": X.rollout_table(M.teacher, M.tokenizer, task, problems),
          "student": X.rollout_table(M.student, M.tokenizer, task, problems)}
by_digits = {name: X.accuracy_by_digits(rows) for name, rows in tables.items()}
pd.DataFrame([X.model_row("teacher", M.teacher_name, M.teacher, {"accuracy": X.accuracy(tables["teacher"])}),
              X.model_row("student", M.student_name, M.student, {"accuracy": X.accuracy(tables["student"])})]
             ).set_index("role")

# %%
P.show(P.accuracy_by_digits(by_digits, title=f"Greedy accuracy by operand length ({S.eval_problems} held-out problems)"))

# %%
acc_t, acc_s = X.accuracy(tables["teacher"]), X.accuracy(tables["student"])
claims("The teacher is a strong expert on the task (at least 90% greedy accuracy)", acc_t >= 0.9,
       {"teacher accuracy": acc_t, "problems": len(problems)})
claims("The student is weak (below 30%), so post-training has room to work", acc_s < 0.3, {"student accuracy": acc_s})
short_acc = by_digits["student"].get(3)
long_acc = max((v for d, v in by_digits["student"].items() if d >= 4), default=None)
claims("The student's weakness is the high digits it rarely saw: it solves 3-digit problems but not 4-5 digit ones",
       short_acc is not None and long_acc is not None and short_acc >= 0.7 and long_acc <= 0.3,
       {"3 digits": short_acc, "best of 4-5 digits": long_acc})

# %% [markdown]
# ## Completion lengths
#
# The reference solution is 5 columns of 9 characters, `|`, 6 answer digits and `<eos>`: 53
# tokens. The cap `max_new_tokens` (dashed) leaves slack; a completion that reaches it is
# *truncated*. Watching length and truncation during training is how length inflation — the
# failure mode the OPD literature names first — shows up on the dashboard.

# %%
P.show(P.length_histogram({name: [r["length"] for r in rows] for name, rows in tables.items()},
                          cap=task.max_new_tokens))
for name, rows in tables.items():
    print(f"{name}: mean length {sum(r['length'] for r in rows) / len(rows):.1f} tokens, "
          f"truncated {sum(r['truncated'] for r in rows) / len(rows):.1%}")

# %% [markdown]
# ## What a rollout is
#
# A *rollout* is the student answering a prompt by sampling one token at a time from its own
# distribution (temperature 1 during training). On-policy methods learn from rollouts: GRPO
# grades the whole rollout with the verifier; OPD asks the teacher for its log-probability of
# every sampled token. The difference `log q − log p` is OPD's per-token reward: positive where
# the teacher likes the token more than the student did, negative where it likes it less.
#
# Below, four student rollouts, one cell per token, coloured by that reward (red: the teacher
# disagrees). Hover a cell for its numbers.

# %%
samples = X.scored_samples(M.student, M.teacher, M.tokenizer, task, problems[:4], seed=0)
P.show(F.token_heatmap(samples, run="zoo student", wrap=32), "rollouts")

# %% [markdown]
# ## One record of the trainer
#
# Every method is a preset of one trainer. Each `trainer.step()` samples a batch, scores it,
# updates the student and returns one flat record (`docs/records.md`); everything that watches
# training — the run directory, the dashboard, your own callback — consumes only these records.
# Here is the first record of an OPD run, then a few more steps with the dashboard watching.

# %%
trainer = Trainer(TrainConfig.for_method("opd", steps=S.demo_steps, batch_size=S.demo_batch, eval_every=S.demo_steps,
                                         eval_problems=min(S.eval_problems, 256), device=device, name="opd (first steps)"))
record = trainer.step()
pd.Series({k: v for k, v in record.items() if k != "samples"}, name="step 1").to_frame()

# %%
dash = TrainingDashboard(mode=mode)
trainer.run(callbacks=[dash])
saved = dash.save(out / "dashboard_first_steps.html", png=False)

# %% [markdown]
# ## Plugging in your own task
#
# A task is a subclass of `workbench.tasks.Task` with a `charset`, a `max_new_tokens` and
# `make_problem(rng, split)` returning a `Problem(prompt, solution, answer)`. The verifier,
# seeded problem lists and splits come with the base class. Here is subtraction with an explicit
# borrow, in the same column format: `a-b-borrow_in=borrow_out digit,`.

# %%
from workbench.tasks import ANSWER_SEP, Problem, Task


class Subtraction(Task):
    name = "subtraction"
    charset = "0123456789-=," + ANSWER_SEP
    max_new_tokens = 64

    def make_problem(self, rng, split):
        a = rng.randint(100, 99_999)
        b = rng.randint(0, a)
        sa, sb = str(a).zfill(5), str(b).zfill(5)
        steps, borrow = [], 0
        for da, db in zip(reversed(sa), reversed(sb)):
            d = int(da) - int(db) - borrow
            steps.append(f"{da}-{db}-{borrow}={int(d < 0)}{d % 10},")
            borrow = int(d < 0)
        answer = str(a - b).zfill(5)
        return Problem(prompt=f"{sa}-{sb}=", solution="".join(steps) + ANSWER_SEP + answer, answer=answer)


mine = Subtraction()
q = mine.problems(1, seed=0)[0]
print(q.prompt, "->", q.solution, "| verified:", mine.verify(q, q.solution).correct)

# %% [markdown]
# The zoo pair knows only addition's characters, so a new task needs its own models: any
# Hugging Face causal LMs that share one tokenizer covering the task's `charset`. For a quick
# start, build a character tokenizer and a tiny model from a preset, and pretrain it on
# reference solutions (the `sft` preset with `sft_data="reference"` needs no teacher). A real
# teacher/student pair is made the way the zoo makes its own: a `zoo.Recipe` and
# `zoo.pretrain` (see `workbench/zoo.py`), then `Trainer(..., teacher=..., student=...)`.

# %%
from workbench.models import build_model
from workbench.tokenizer import build_tokenizer

tok = build_tokenizer(mine.charset)
fresh = build_model("nano", tok, seed=0)
own = Trainer(TrainConfig.for_method("sft", sft_data="reference", lr=2e-3, steps=S.own_task_steps,
                                     batch_size=S.demo_batch, eval_every=S.own_task_steps, eval_problems=64,
                                     device=device, name="subtraction · nano from scratch"),
              task=mine, student=fresh, teacher=build_model("nano", tok, seed=1), tokenizer=tok)
summary = own.run(callbacks=[dash])
dash.save(out / "dashboard_own_task.html", png=False)
print(f"{summary['step']} steps of SFT on reference solutions, held-out accuracy "
      f"{summary.get('final_eval_accuracy', float('nan')):.2f} (a nano model needs thousands of steps; "
      "the zoo recipes use 1500-2500)")

# %% [markdown]
# **Try next.** Change the operand range of `Subtraction` and see `max_new_tokens` checks fail
# loudly when the cap is too short for the longest solution; or run the whole lab on
# `multiply` (`TrainConfig(task="multiply", ...)`) once you have built a pair for it.

# %%
results = write_results(out, "01_task_and_models", size, started=t_start, device=str(M.device), claims=claims,
                        numbers={"teacher_accuracy": acc_t, "student_accuracy": acc_s,
                                 "accuracy_by_digits": by_digits,
                                 "mean_length": {n: sum(r["length"] for r in rows) / len(rows) for n, rows in tables.items()},
                                 "truncated_frac": {n: sum(r["truncated"] for r in rows) / len(rows) for n, rows in tables.items()},
                                 "first_record_keys": sorted(k for k in record if k != "samples")},
                        config={"sizes": vars(S), "eval_problems": len(problems)})
print(f"figures: {saved['html']}\nresults: {results}")
