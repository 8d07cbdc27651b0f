# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 00 · Quickstart: one student, three ways to post-train it
#
# **The question.** Take one weak student and one strong teacher. Spend the same budget of
# student tokens three ways — imitate the teacher's text (**SFT**), practise and get one
# pass/fail reward per attempt (**GRPO**), or practise and have the teacher grade every token
# (**on-policy distillation, OPD**). Which one gets the student closest to the teacher?
#
# The essay this lab accompanies puts the three methods on two axes: where the training text
# comes from (someone else's, or the student's own) and how dense the signal is (every token,
# or one number per attempt).
#
# | | dense signal (every token) | sparse signal (one reward) |
# |---|---|---|
# | **teacher's text** (off-policy) | SFT | reward-filtered SFT |
# | **student's own rollouts** (on-policy) | **OPD** | GRPO |
#
# It argues that OPD keeps what is good about each neighbour — SFT's dense signal and RL's
# on-policy data — and drops the characteristic weakness of each: SFT's distribution shift
# (the student trains on text it would never have written) and RL's sparse credit (one bit at
# the end of a long attempt). This notebook runs all three from the same student at the same
# budget and prints what happened; the later notebooks take each effect apart.
#
# Everything that states an outcome of *this* run is printed from measured numbers, as
# `✓ shown in this run` or `✗ NOT shown in this run`. At `size="smoke"` the runs are far
# too short to mean anything and no claim is evaluated.

# %% tags=["parameters"]
size: str = "full"          # "smoke": a few steps (seconds, used by the tests); "full": the teaching size (minutes on 2 CPU cores)
run_dir: str = "../runs/notebooks/00_quickstart"   # where the dashboard HTML and results.json are written
mode: str = "live"          # "live": the dashboard redraws while training; "static": final figures only (headless runs)
device: str = "auto"        # "auto": CUDA when present, else CPU; or "cpu" / "cuda"

# %%
import time
t_start = time.time()
from pathlib import Path

import pandas as pd

from workbench import experiments as X
from workbench.claims import Claims, write_results
from widgets import TrainingDashboard
from widgets import plots as P

S = X.pick_size(size,
                smoke=dict(budget_tokens=1_000, batch_size=8, eval_every=2, eval_problems=16),
                full=dict(budget_tokens=1_200_000, batch_size=64, eval_every=25, eval_problems=256))
out = Path(run_dir)
out.mkdir(parents=True, exist_ok=True)
claims = Claims(size)
S

# %% [markdown]
# ## The task, the teacher and the student
#
# The toy task is multi-digit addition written out column by column, least significant digit
# first, with the carry made explicit, then `|` and the answer. Every column depends on the
# previous column's carry, so an early slip propagates — a small stand-in for the long,
# step-dependent reasoning traces the literature distils.

# %%
M = X.load_models("addition", device=device)
for p in M.task.problems(3, seed=1, split="test"):
    print(f"{p.prompt:14s} -> {p.solution}")

# %% [markdown]
# Both models come from the zoo (`workbench/zoo_ckpt/`). The teacher was trained on the
# task's own distribution (3–5 digit operands). The student is much smaller (see the table) and was
# trained mostly on 1–3 digit operands in the same format (97%; 3% of its problems had 3–5 digits):
# it knows the procedure but has rarely had to add non-zero high digits. We measure both on the same held-out problems the training
# runs are evaluated on.

# %%
problems = X.held_out(M.task, S.eval_problems)
teacher_eval = X.evaluate_model(M.teacher, M.tokenizer, M.task, problems)
student_eval = X.evaluate_model(M.student, M.tokenizer, M.task, problems)
pd.DataFrame([X.model_row("teacher", M.teacher_name, M.teacher, teacher_eval),
              X.model_row("student", M.student_name, M.student, student_eval)]).set_index("role")

# %% [markdown]
# ## SFT, GRPO and OPD at one budget, on one dashboard
#
# Each method starts from the same student checkpoint and stops once it has processed the same
# number of **student tokens** (tokens it generated or was trained on, prompts included).
# Every `eval_every` steps the student is evaluated greedily on the held-out problems.
#
# * **SFT** — the teacher samples a solution for each problem; the student is trained with
#   cross-entropy on the teacher's text (sequence-level distillation).
# * **GRPO** — the student samples 8 attempts per problem; the verifier gives each 1 or 0;
#   each attempt's tokens are pushed up or down by its reward relative to its group.
# * **OPD** — the student samples one attempt per problem; the teacher scores every position
#   of it. Per token the reward is `log q(token) − log p(token)` (teacher minus student); here
#   we use its exact expectation over the whole 18-token vocabulary, the reverse KL
#   `KL(p‖q)` at every position the student visited (`loss="full_kl"`), which is free on a
#   vocabulary this small. The one-sample estimator is compared in notebook 04.
#
# Learning rates are each method's best in a small sweep at this budget (`docs/results.md`).
#
# Watch the four panels: rollout length, the truncated fraction, the training signal
# (verifier reward, teacher token reward, reverse KL) and accuracy. Below them, the latest
# samples, each token coloured by the teacher's reward (red: the teacher disagrees).

# %%
dash = TrainingDashboard(mode=mode)
trainers, log = X.matched_budget(("sft", "grpo", "opd"), S.budget_tokens, callbacks=[dash], baseline=student_eval,
                                 method_overrides={"opd": {"loss": "full_kl", "lr": 1e-3}},
                                 batch_size=S.batch_size, eval_every=S.eval_every, eval_problems=S.eval_problems, eval_sampled=False,
                                 device=device)
saved = dash.save(out / "dashboard.html", png=False)

# %% [markdown]
# ## Results
#
# Accuracy against the student tokens spent; the dotted line is the teacher, the dashed line
# 90% of it.

# %%
P.show(P.accuracy_curves(log.evals, x="student_tokens", teacher_accuracy=teacher_eval["eval/accuracy"],
                         title="Held-out accuracy vs student tokens (same budget for every method)"))

# %%
rows = X.cost_table(log, list(trainers), teacher_eval["eval/accuracy"])
table = pd.DataFrame(rows).set_index("run")[["final_accuracy", "last3_accuracy", "best_accuracy", "student_tokens", "teacher_tokens",
                                            "flops", "train_s", "student_tokens_to_target"]]
table

# %% [markdown]
# ## What this run showed
#
# The lines below are computed from the table above. A difference smaller than about three
# points is within the noise of a 256-problem evaluation (one standard error is about ±3%),
# so a claim of "better" here needs a margin of at least 0.03. A run's accuracy also moves by a
# few points from one evaluation to the next, so "ends more accurate" compares the mean of each
# run's last three evaluations (`last3_accuracy`), not a single one.

# %%
acc = {r["run"]: r["last3_accuracy"] for r in rows}
to90 = {r["run"]: r["student_tokens_to_target"] for r in rows}
claims("Every method improved the student within the budget",
       all(a > student_eval["eval/accuracy"] + 0.03 for a in acc.values()),
       {"start": student_eval["eval/accuracy"], **acc})
claims("At the same student-token budget, OPD ends more accurate than GRPO (the dense signal beats one reward per attempt)",
       acc["opd"] > acc["grpo"] + 0.03, {"OPD": acc["opd"], "GRPO": acc["grpo"]})
claims("At the same student-token budget, OPD ends more accurate than SFT on the teacher's text",
       acc["opd"] > acc["sft"] + 0.03, {"OPD": acc["opd"], "SFT": acc["sft"]})
claims("OPD reaches 90% of the teacher's accuracy with fewer student tokens than GRPO",
       None if to90["opd"] is None else (to90["grpo"] is None or to90["opd"] < to90["grpo"]),
       {"OPD tokens": to90["opd"] or "never", "GRPO tokens": to90["grpo"] or "never"})
print("\n" + claims.summary())

# %% [markdown]
# **What it means.** GRPO learns only from groups in which some attempts pass and others fail;
# from a weak start most groups of 8 attempts are all wrong and carry no signal at all,
# and when a group does, every token of an attempt gets the same credit, right steps and wrong
# alike (notebook 03 measures both). OPD gets a number for every token of every attempt, and
# the number is largest where the student first goes wrong (notebook 04 shows it on real
# samples). SFT also gets a dense signal, but on the teacher's text rather than its own; on this
# task, whose teacher traces are nearly unique, that is a strong baseline — the literature's
# comparison of OPD with SFT is made *after* SFT has plateaued (notebook 02 does exactly that).
#
# **Try next.**
# * Raise `budget_tokens` in the cell that sets `S` and rerun: does the ranking change once
#   SFT saturates?
# * Give OPD the one-sample estimator instead: set `method_overrides={"opd": {"loss": "sampled_token"}}`
#   in `matched_budget` (notebook 04 compares the estimators; on this student it barely learns).
# * Open `dashboard.html` in the run directory: the heatmap's run selector shows each method's
#   own samples.

# %%
results = write_results(out, "00_quickstart", size, started=t_start, device=str(M.device), claims=claims,
                        numbers={"teacher_accuracy": teacher_eval["eval/accuracy"],
                                 "student_accuracy": student_eval["eval/accuracy"],
                                 "methods": {r["run"]: {k: v for k, v in r.items() if k != "run"} for r in rows}},
                        config={"sizes": vars(S), "methods": {n: t.cfg.to_dict() for n, t in trainers.items()}})
print(f"figures: {saved['html']}\nresults: {results}")
