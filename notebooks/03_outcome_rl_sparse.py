# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 03 · Outcome RL: one reward per attempt, and where the credit goes
#
# **The question.** GRPO learns from the student's own rollouts — on-policy, so no distribution
# shift — but from one number per rollout: the verifier's pass/fail. How much of a batch
# actually carries a learning signal, and how much of each rollout does that signal reach?
#
# GRPO samples G attempts per problem and gives attempt i the advantage
# `(R_i − mean R) / std R` within its group, applied to every token of the attempt. Two
# consequences follow from the formula alone:
#
# * a group whose attempts all fail (or all pass) has zero advantage: no gradient at all;
# * within a failed attempt, the right steps before the mistake are pushed down exactly as hard
#   as the mistake itself. The essay puts it as "a four-thousand-token proof earns one bit of
#   feedback, and the model must infer, across many noisy rollouts, which tokens mattered".
#
# Here we measure both on the weak zoo student, run GRPO at a few learning rates (it needs its
# own sweep: see `EXPERIMENTS.md`, condition 4), and put OPD beside it at the same budget.

# %% tags=["parameters"]
size: str = "full"          # "smoke": a few steps (seconds, used by the tests); "full": the teaching size (minutes on 2 CPU cores)
run_dir: str = "../runs/notebooks/03_outcome_rl_sparse"   # where the dashboard HTML and results.json are written
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
                smoke=dict(budget_tokens=1_000, batch_size=8, eval_every=2, eval_problems=16, grpo_lrs=(3e-5,),
                           audit_problems=4),
                full=dict(budget_tokens=500_000, batch_size=64, eval_every=20, eval_problems=256,
                          grpo_lrs=(1e-5, 3e-5, 1e-4), audit_problems=64))
out = Path(run_dir)
out.mkdir(parents=True, exist_ok=True)
claims = Claims(size)
M = X.load_models("addition", device=device)
task, tok = M.task, M.tokenizer
problems = X.held_out(task, S.eval_problems)
common = dict(batch_size=S.batch_size, eval_every=S.eval_every, eval_problems=S.eval_problems, eval_sampled=False,
              device=device)

# %% [markdown]
# ## Before training: how much signal is there?
#
# We sample 8 attempts for each of a set of held-out problems from the zoo student and audit
# where GRPO's credit would land: the fraction of groups with zero advantage, the fraction of
# tokens that receive any credit, and — among the scratchpad tokens of attempts pushed *down* —
# the fraction that were correct steps written before the attempt's first mistake.

# %%
audit_problems = X.held_out(task, S.audit_problems, seed=1)
audit_start = X.grpo_credit_audit(M.student, tok, task, audit_problems, num_generations=8, seed=0)
pd.Series(audit_start, name="zoo student").to_frame()

# %% [markdown]
# ## GRPO at three learning rates, and OPD, at one budget of student tokens
#
# GRPO: 8 attempts per problem (batch 64 = 8 problems x 8). OPD: 64 problems, one attempt each,
# every position scored by the teacher (the exact full-vocabulary reverse KL, `loss="full_kl"`,
# learning rate 1e-3, as in notebook 00). All runs start from the zoo student and stop at the same
# number of student tokens. On the dashboard, compare the verifier-reward panel (GRPO's only
# signal) with the teacher-signal panel below it (OPD's per-token reward, in nats).

# %%
dash = TrainingDashboard(mode=mode)
start_eval = X.evaluate_model(M.student, tok, task, problems)
runs, log = X.matched_budget(("opd",), S.budget_tokens, callbacks=[dash], baseline=start_eval,
                             method_overrides={"opd": {"loss": "full_kl", "lr": 1e-3}}, **common)
for lr in S.grpo_lrs:
    more, _ = X.matched_budget(("grpo",), S.budget_tokens, callbacks=[dash], log=log, baseline=start_eval,
                               method_overrides={"grpo": {"lr": lr, "name": f"grpo lr={lr:g}"}}, **common)
    runs.update(more)
saved = dash.save(out / "dashboard.html", png=False)

# %%
grpo_runs = [n for n in runs if n.startswith("grpo")]
P.show(P.metric_curves({n: log.series(n, "grpo/zero_adv_frac") for n in grpo_runs},
                       "Fraction of GRPO groups with zero advantage (no learning signal), per step",
                       "zero-advantage groups", y_range=[-0.02, 1.02], smooth=5))
P.show(P.metric_curves({**{n: log.series(n, "grpo/credited_token_frac") for n in grpo_runs},
                        "opd": (log.series("opd", "loss")[0], [1.0] * len(log.series("opd", "loss")[0]))},
                       "Fraction of sampled tokens that receive any credit, per step (OPD: every token)",
                       "credited tokens", y_range=[-0.02, 1.05], smooth=5))

# %%
P.show(P.accuracy_curves(log.evals, x="student_tokens", teacher_accuracy=None, target_frac=None,
                         title="Held-out accuracy vs student tokens: GRPO learning rates and OPD"))
rows = X.cost_table(log, list(runs), 1.0)
pd.DataFrame(rows).set_index("run")[["final_accuracy", "best_accuracy", "steps", "student_tokens", "flops", "train_s"]]

# %% [markdown]
# ## After training: where does GRPO's credit land now?

# %%
acc = {r["run"]: r["final_accuracy"] for r in rows}
best = max(grpo_runs, key=lambda n: acc[n])
audit_end = X.grpo_credit_audit(runs[best].student, tok, task, audit_problems, num_generations=8, seed=0)
P.show(P.credit_bars({"zoo student": audit_start, f"after {best}": audit_end}, note_opd=True))
pd.DataFrame({"zoo student": audit_start, f"after {best}": audit_end})

# %% [markdown]
# ## What this run showed

# %%
credited = log.mean(best, "grpo/credited_token_frac")
zero_adv = log.mean(best, "grpo/zero_adv_frac")
claims("Before training, most GRPO groups carry no learning signal (all 8 attempts fail or all pass)",
       audit_start["zero_adv_frac"] > 0.5, {"zero-advantage groups": audit_start["zero_adv_frac"],
                                            "pass rate": audit_start["reward_mean"]})
claims(f"Over the best GRPO run ({best}), fewer than half of the sampled tokens received any credit (OPD: all of them)",
       credited < 0.5, {"credited token fraction": credited, "zero-advantage groups": zero_adv})
blamed = audit_start["blamed_correct_frac"]
claims("When GRPO pushes a failed attempt down, most of the blamed scratchpad tokens were correct steps before the first mistake",
       None if blamed is None else blamed > 0.5, {"correct among blamed tokens": blamed,
                                                   "blamed scratchpad tokens": audit_start["negative_scratch_tokens"]})
claims("At the same student-token budget, OPD ends more accurate than GRPO at its best learning rate",
       acc["opd"] > acc[best] + 0.03, {"OPD": acc["opd"], best: acc[best]})
spread = max(acc[n] for n in grpo_runs) - min(acc[n] for n in grpo_runs)
claims("GRPO's result depends strongly on the learning rate (more than 10 points between the best and worst of the sweep)",
       spread > 0.10 if len(grpo_runs) > 1 else None, {n: acc[n] for n in grpo_runs})
print("\n" + claims.summary())

# %% [markdown]
# **What it means.** From a weak start, most groups of attempts are all wrong, so most of each
# GRPO batch is spent producing no gradient. The groups that do carry a signal spread it evenly
# over every token of an attempt: in a failed attempt the correct columns before the mistake are
# pushed down with the mistake, and only averaging over many rollouts separates them. OPD's
# teacher scores each token on its own, so the same rollout tells the student *where* it went
# wrong (notebook 04 shows that per-token reward on real samples).
#
# A student that does improve under GRPO sees the zero-advantage fraction fall (fewer all-wrong
# groups) and later rise again (more all-right groups): outcome RL's signal is richest in a middle
# band of difficulty. Compare the audit before and after training above to see how far this run
# moved along that path.
#
# **Try next.**
# * `scale_rewards=False` (Dr. GRPO: no division by the group's std) in `method_overrides`.
# * More attempts per problem (`num_generations=16`, same batch): fewer zero-advantage groups,
#   fewer distinct problems per step.
# * Start GRPO from a stronger student (notebook 02's SFT checkpoint): the sparse-credit tax
#   shrinks when more groups are mixed.

# %%
results = write_results(out, "03_outcome_rl_sparse", size, started=t_start, device=str(M.device), claims=claims,
                        numbers={"audit_start": audit_start, "audit_end": audit_end, "best_grpo": best,
                                 "credited_token_frac_mean": credited, "zero_adv_frac_mean": zero_adv,
                                 "start_accuracy": start_eval["eval/accuracy"],
                                 "runs": {r["run"]: {k: v for k, v in r.items() if k != "run"} for r in rows}},
                        config={"sizes": vars(S), "runs": {n: t.cfg.to_dict() for n, t in runs.items()}})
print(f"figures: {saved['html']}\nresults: {results}")
