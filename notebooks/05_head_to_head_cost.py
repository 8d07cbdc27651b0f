# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 05 · Head to head: what does it cost to reach the teacher?
#
# **The question.** The essay's closing argument is economic: OPD is "the cheapest known answer"
# to pushing a capability from an expensive model into a cheap one — SFT imports distribution
# shift, outcome RL "pays the sparse-credit tax in compute", OPD pays neither. The published
# anchors are large: in the Qwen3 report, RL from the same starting point reached AIME'24 67.6
# in 17,920 GPU-hours while OPD reached 74.4 in 1,800; the Thinking Machines write-up reports
# OPD reaching its score at 9–30x less compute than SFT.
#
# Here we test the claim at toy scale, in the units the literature uses. All four corners of
# the 2x2 start from the same student and spend the same budget of student tokens; for each we
# count student tokens, teacher tokens (generated for SFT, scored for OPD) and FLOPs, and record
# the training time (evaluation excluded) until held-out accuracy first reaches 90% of the
# teacher's.
#
# | | dense | sparse |
# |---|---|---|
# | **off-policy** (teacher's text) | `sft` | `filtered_sft` (teacher traces kept only if the verifier accepts them) |
# | **on-policy** (student's rollouts) | `opd` | `grpo` |

# %% tags=["parameters"]
size: str = "full"          # "smoke": a few steps (seconds, used by the tests); "full": the teaching size (minutes on 2 CPU cores)
run_dir: str = "../runs/notebooks/05_head_to_head_cost"   # where the dashboard HTML and results.json are written
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
                full=dict(budget_tokens=1_200_000, batch_size=64, eval_every=20, eval_problems=256))
out = Path(run_dir)
out.mkdir(parents=True, exist_ok=True)
claims = Claims(size)
M = X.load_models("addition", device=device)
task, tok = M.task, M.tokenizer
problems = X.held_out(task, S.eval_problems)
teacher_eval = X.evaluate_model(M.teacher, tok, task, problems)
start_eval = X.evaluate_model(M.student, tok, task, problems)
print(f"teacher {teacher_eval['eval/accuracy']:.3f}, student {start_eval['eval/accuracy']:.3f}; "
      f"target = 90% of the teacher = {0.9 * teacher_eval['eval/accuracy']:.3f}")

# %% [markdown]
# ## Four corners, one budget, one dashboard
#
# Learning rates are each method's best in a small sweep at this budget (`docs/results.md`):
# 1e-3 for SFT (and for reward-filtered SFT, which differs from it only by the filter), 3e-5 for
# GRPO (notebook 03 has its sweep), 1e-3 for OPD. OPD uses the exact full-vocabulary reverse KL
# (`loss="full_kl"`; notebook 04 shows why the one-sample estimator barely learns from this
# student). Cost units (`workbench/costs.py`): a forward pass costs 2N FLOPs per token for a
# model with N parameters, forward + backward 6N.

# %%
dash = TrainingDashboard(mode=mode)
runs, log = X.matched_budget(("sft", "filtered_sft", "grpo", "opd"), S.budget_tokens, callbacks=[dash],
                             baseline=start_eval, batch_size=S.batch_size, eval_every=S.eval_every,
                             method_overrides={"filtered_sft": {"lr": 1e-3}, "opd": {"loss": "full_kl", "lr": 1e-3}},
                             eval_problems=S.eval_problems, eval_sampled=False, device=device)
saved = dash.save(out / "dashboard.html", png=False)

# %%
P.show(P.two_by_two(log.evals, {"sft": (1, 1), "filtered_sft": (1, 2), "opd": (2, 1), "grpo": (2, 2)},
                    teacher_eval["eval/accuracy"]))

# %% [markdown]
# ## The cost table
#
# Cumulative cost at the first evaluation that reaches 90% of the teacher's accuracy
# ("never": not within the budget). Evaluations happen every `eval_every` steps, so the costs
# to the target are resolved to that granularity.

# %%
rows = X.cost_table(log, list(runs), teacher_eval["eval/accuracy"])
table = pd.DataFrame(rows).set_index("run")[["final_accuracy", "last3_accuracy", "student_tokens_to_target", "teacher_tokens_to_target",
                                            "flops_to_target", "train_s_to_target", "student_tokens", "teacher_tokens",
                                            "flops", "train_s"]]
table

# %%
kept = log.mean("filtered_sft", "filter/kept_frac")
print(f"reward-filtered SFT kept {kept:.1%} of the teacher's traces on average: with a teacher this accurate "
      "the off-policy sparse corner trains on almost the same data as SFT")
P.show(P.cost_bars(rows))
P.show(P.accuracy_curves(log.evals, x="flops", teacher_accuracy=teacher_eval["eval/accuracy"],
                         title="Held-out accuracy vs FLOPs spent (teacher generation and scoring included)"))
P.show(P.accuracy_curves(log.evals, x="train_s", teacher_accuracy=teacher_eval["eval/accuracy"],
                         title="Held-out accuracy vs training time on this machine"))

# %% [markdown]
# ## The economic claim, tested at toy scale

# %%
r = {row["run"]: row for row in rows}
reached = [n for n in r if r[n]["flops_to_target"] is not None]
claims("OPD reaches 90% of the teacher's accuracy within the budget", r["opd"]["flops_to_target"] is not None,
       {"OPD final": r["opd"]["final_accuracy"], "target": r["opd"]["target_accuracy"]})
claims("OPD needs fewer student tokens than GRPO to reach 90% of the teacher",
       None if r["opd"]["student_tokens_to_target"] is None else
       (r["grpo"]["student_tokens_to_target"] is None or
        r["opd"]["student_tokens_to_target"] < r["grpo"]["student_tokens_to_target"]),
       {"OPD": r["opd"]["student_tokens_to_target"] or "never", "GRPO": r["grpo"]["student_tokens_to_target"] or "never"},
       source="Qwen3 report, Table 21 (RL 17,920 vs OPD 1,800 GPU-hours)")
claims("OPD needs fewer FLOPs than SFT to reach 90% of the teacher (teacher generation counted for SFT)",
       None if r["opd"]["flops_to_target"] is None else
       (r["sft"]["flops_to_target"] is None or r["opd"]["flops_to_target"] < r["sft"]["flops_to_target"]),
       {"OPD": r["opd"]["flops_to_target"] or "never", "SFT": r["sft"]["flops_to_target"] or "never",
        "SFT/OPD": X.ratio(r["sft"]["flops_to_target"], r["opd"]["flops_to_target"])},
       source="Thinking Machines (2025): 9-30x less compute than SFT")
cheapest = min(reached, key=lambda n: r[n]["flops_to_target"]) if reached else None
claims("OPD is the cheapest of the four corners to reach 90% of the teacher, in FLOPs (the essay's economic claim)",
       None if cheapest is None else cheapest == "opd",
       {n: r[n]["flops_to_target"] or "never" for n in r}, source="essay §8")
claims("OPD ends more accurate than SFT by more than 3 points, averaged over each run's last three evaluations "
       "(so not an accident of where one evaluation fell)",
       r["opd"]["last3_accuracy"] > r["sft"]["last3_accuracy"] + 0.03,
       {"OPD": r["opd"]["last3_accuracy"], "SFT": r["sft"]["last3_accuracy"], "SFT best": r["sft"]["best_accuracy"]})

# %% [markdown]
# Direction is one thing; size is another. The published gaps are an order of magnitude.

# %%
sft_ratio = X.ratio(r["sft"]["flops_to_target"], r["opd"]["flops_to_target"])
claims("The size of OPD's FLOPs advantage over SFT matches the literature's (at least 9x, the low end of 9-30x)",
       None if sft_ratio is None else sft_ratio >= 9, {"SFT/OPD FLOPs to target": sft_ratio},
       source="Thinking Machines (2025)")
grpo_bound = X.ratio(r["grpo"]["student_tokens_to_target"] or r["grpo"]["student_tokens"], r["opd"]["student_tokens_to_target"])
claims("The size of OPD's advantage over GRPO matches the Qwen3 report's ~10x (GRPO tokens to target / OPD's >= 10; "
       "when GRPO never gets there, its whole budget is a lower bound)",
       None if grpo_bound is None else (True if grpo_bound >= 10 else
                                        (False if r["grpo"]["student_tokens_to_target"] else None)),
       {"GRPO/OPD tokens" + ("" if r["grpo"]["student_tokens_to_target"] else " (lower bound)"): grpo_bound},
       source="Qwen3 report, Table 21")
fastest = min(reached, key=lambda n: r[n]["train_s_to_target"]) if reached else None
claims("OPD is also the fastest in training time on this machine",
       None if fastest is None else fastest == "opd", {n: r[n]["train_s_to_target"] or "never" for n in r})
print("\n" + claims.summary())

# %% [markdown]
# **What it means, stated honestly.** The table is the whole answer at this scale; the lines
# above say which parts of the claim it supports. Three things about the toy shape it:
#
# * **The teacher is several times the student.** OPD pays one teacher forward per sampled token and SFT one
#   teacher *generation* per trace token; both are dominated by the teacher's 2N FLOPs per token,
#   so at equal student tokens SFT and OPD cost about the same, and GRPO (no teacher) is the
#   cheapest per token. Cost-to-target is where they differ: it depends on how fast each
#   method's accuracy rises.
# * **SFT's best case.** Our teacher's traces are nearly unique and the student's failures are a
#   coverage gap (high digits it never saw), which imitation fills directly. The literature's
#   OPD-vs-SFT comparison starts *after* SFT has plateaued (notebook 02).
# * **Sparse credit from a weak start.** GRPO from a weak student sees mostly all-wrong groups
#   (notebook 03); with a stronger start its gap to OPD narrows.
#
# * **Noise in "time to target".** SFT's accuracy at learning rate 1e-3 oscillates by several
#   points from one evaluation to the next once it is near the target, so whether one of its
#   evaluations lands above 90% is partly luck; notebook 00 runs the same SFT/OPD pair with other
#   evaluation points and reports its own ordering. The line comparing the last three
#   evaluations is the check that depends least on one evaluation. Training times come from a machine shared with
#   other jobs: read them as rough.
#
# Where a line above says ✗, the toy did not reproduce that part of the claim under these
# conditions; `EXPERIMENTS.md` lists the conditions under which the published results hold.
#
# **Try next.** Start all four corners from a plateaued SFT checkpoint (notebook 02's recipe:
# `X.train("sft", ...)`, then `matched_budget(..., student=sft.student, tokenizer=tok)`), or sweep
# each method's learning rate with `method_overrides` and keep the best of each (fair tuning).

# %%
results = write_results(out, "05_head_to_head_cost", size, started=t_start, device=str(M.device), claims=claims,
                        numbers={"teacher_accuracy": teacher_eval["eval/accuracy"], "filtered_sft_kept_frac": kept,
                                 "student_accuracy": start_eval["eval/accuracy"],
                                 "methods": {n: {k: v for k, v in row.items() if k != "run"} for n, row in r.items()}},
                        config={"sizes": vars(S), "methods": {n: t.cfg.to_dict() for n, t in runs.items()}})
print(f"figures: {saved['html']}\nresults: {results}")
