# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 11 · Past the teacher: can a distilled student end better than the model that taught it?
#
# **The question.** Distillation copies a teacher, so the teacher looks like a ceiling. Yang et
# al. read OPD as KL-constrained RL instead (G-OPD): the per-token reward is
# `λ (log π_T − log π_ref)` with a KL anchor to the starting student π_ref, and the optimum is
# `π* ∝ π_ref · (π_T / π_ref)^λ`. At λ = 1 that is the teacher. At λ > 1 (ExOPD; they use
# 1.25) it extrapolates *past* the teacher, along the direction in which the teacher improves on
# the reference, and they report students that end above their teachers.
#
# **The setting the claim needs.** A teacher strong but not perfect (here 70–85%: a 100% teacher
# leaves nothing to go past) and a student with the capacity to do better than it. Both come
# from one supervised run of the ~130k-parameter student on the ~1M teacher's traces: stopped at
# 600 steps it is the *teacher* (0.81 on the zoo's 512 test problems), stopped at 250 steps it is
# the *student* (0.65); the same run taken to its plateau reaches 0.94, so the student's size does
# not stop it from passing its teacher.
#
# We run G-OPD with the full-vocabulary target `softmax(log π_ref + λ (log π_T − log π_ref))`
# (`loss="gopd_full"`, exact on an 18-token vocabulary) at λ ∈ {0.5, 1, 1.25, 1.5}, and the
# paper's own sampled-token estimator (`method="opd"` with `reward_scale=λ`) at λ = 1 and 1.25,
# three seeds each, from the same student; each loss's learning rate is chosen on a validation
# split at λ = 1.
#
# Every sentence about what *this* run showed is printed from measured numbers as
# `✓ shown in this run` or `✗ NOT shown in this run`; `? could not be measured` says the test's
# condition was not met. At `size="smoke"` nothing is evaluated.

# %% tags=["parameters"]
size: str = "full"          # "smoke": a few steps (seconds, used by the tests); "full": 3 seeds, the teaching size
run_dir: str = "../runs/notebooks/11_past_the_teacher"   # where the dashboard HTML and results.json go
mode: str = "live"          # "live": the dashboard redraws while training; "static": final figures only (headless runs)
device: str = "auto"        # "auto": CUDA when present, else CPU; or "cpu" / "cuda"
teacher: str = "addition-early-teacher"   # a zoo name or checkpoint directory: strong but not perfect
student: str = "addition-early-student"   # the same size as the teacher, weaker

# %%
import time
t_start = time.time()
from pathlib import Path

import pandas as pd

from workbench import compare as C
from workbench import experiments as X
from workbench import literature as LT
from workbench import zoo
from workbench.claims import Claims, write_results
from widgets import TrainingDashboard
from widgets import plots as P

S = X.pick_size(size,
                smoke=dict(budget_tokens=600, seeds=(0,), eval_problems=16, lrs=(1e-4,), lambdas=(1.0, 1.25),
                           sampled_lambdas=(1.0,), common=dict(batch_size=8, eval_sequences=8)),
                full=dict(budget_tokens=C.DEFAULT_BUDGET, seeds=C.DEFAULT_SEEDS, eval_problems=256,
                          lrs=(1e-4, 3e-4, 1e-3), lambdas=(0.5, 1.0, 1.25, 1.5), sampled_lambdas=(1.0, 1.25),
                          common={}))
out = Path(run_dir)
out.mkdir(parents=True, exist_ok=True)
claims = Claims(size)
pair = dict(teacher=teacher, student=student)
S

# %% [markdown]
# ## The pair, as the zoo measured it

# %%
rows = []
for role, name in pair.items():
    try:
        meta = zoo.metadata(name)
        rows.append({"role": role, "checkpoint": name, "SFT steps kept": meta["plateau"]["chosen_step"],
                     "test accuracy (greedy)": meta["eval"]["accuracy"], "parameters": meta["params"]})
    except (ValueError, FileNotFoundError, KeyError):
        rows.append({"role": role, "checkpoint": name})
pd.DataFrame(rows).set_index("role")

# %% [markdown]
# ## Learning rates, chosen on `val` at λ = 1
#
# One seed per point, each loss at λ = 1 (plain OPD); every λ of a loss then uses its rate, and
# the reported runs below use the `test` split.

# %%
sweep_rows, best = C.sweep("addition", grid={"opd_full": S.lrs, "opd": S.lrs}, seeds=(0,),
                           budget_tokens=S.budget_tokens, eval_problems=S.eval_problems, device=device, progress=None,
                           **pair, **S.common)
lrs = {m: best[m]["lr"] for m in ("opd_full", "opd")}
print(f"chosen on val: full-vocabulary lr = {lrs['opd_full']:g}, sampled-token lr = {lrs['opd']:g}")
pd.DataFrame(sweep_rows).set_index(["method", "lr"])[["val_accuracy_mean", "start_val_accuracy"]]

# %% [markdown]
# ## G-OPD at four reward scales, three seeds each
#
# The dashboard shows every run as it trains. λ = 0.5 stays between the student and the
# teacher; λ = 1 is the teacher's own distribution; λ > 1 asks for more than the teacher.

# %%
dash = TrainingDashboard(mode=mode)


def run(method: str, lam: float) -> dict:
    loss = {"loss": "gopd_full"} if method == "opd_full" else {}
    return C.compare("addition", "plateau", methods=(method,), seeds=S.seeds, budget_tokens=S.budget_tokens,
                     eval_problems=S.eval_problems, device=device, callbacks=[dash],
                     method_overrides={method: {"lr": lrs[method], "reward_scale": lam, **loss}}, **pair, **S.common)


full = {lam: run("opd_full", lam) for lam in S.lambdas}
sampled = {lam: run("opd", lam) for lam in S.sampled_lambdas}
saved = dash.save(out / "dashboard.html", png=False)
teacher_acc, start_acc = full[1.0]["teacher_accuracy"], full[1.0]["start_accuracy"]

# %% [markdown]
# ## Results
#
# Final held-out accuracy per λ (mean and spread over seeds), against the teacher's accuracy on
# the same problems; then every seed's curve.

# %%
by_lambda = {lam: r["rows"][0] for lam, r in full.items()}
by_lambda_sampled = {lam: r["rows"][0] for lam, r in sampled.items()}
table = pd.DataFrame(
    [{"target": "full vocabulary", "lambda": lam, "final accuracy": r["final_accuracy_mean"],
      "std": r["final_accuracy_std"], "by seed": r["final_accuracy_by_seed"]} for lam, r in by_lambda.items()]
    + [{"target": "sampled token", "lambda": lam, "final accuracy": r["final_accuracy_mean"],
        "std": r["final_accuracy_std"], "by seed": r["final_accuracy_by_seed"]} for lam, r in by_lambda_sampled.items()])
P.show(P.grouped_bars({"full-vocabulary target": {"start": start_acc,
                                                  **{f"λ={lam:g}": r["final_accuracy_mean"] for lam, r in by_lambda.items()},
                                                  "teacher": teacher_acc},
                       "sampled-token estimator": {f"λ={lam:g}": r["final_accuracy_mean"]
                                                   for lam, r in by_lambda_sampled.items()}},
                      "Final held-out accuracy by reward scale λ (mean over seeds)", "accuracy"))
curves = {f"λ={lam:g}/{run_}": pts for lam, r in full.items() for run_, pts in r["log"].evals.items()}
P.show(P.seed_curves(curves, x="student_tokens", teacher_accuracy=teacher_acc))
table

# %% [markdown]
# ## What this run showed
#
# The rules are the claim's words: "goes past the teacher" needs the mean over seeds at λ = 1.25
# to reach the teacher's accuracy; "above λ = 1" needs a higher mean. Both are reported as not
# measurable if the teacher, measured here on the test problems, is outside 70–85%.

# %%
claims.check("every run started from the same student (its accuracy is the shared step-0 point of every curve)",
             all(pts[0]["eval/accuracy"] == start_acc for r in (*full.values(), *sampled.values())
                 for pts in r["log"].evals.values()))
for v in LT.exopd_verdicts(by_lambda, teacher_acc) + LT.exopd_verdicts(by_lambda_sampled, teacher_acc,
                                                                      target="sampled-token"):
    claims(v["text"], v["holds"], v["evidence"], source=v.get("source"))
order = sorted(by_lambda, key=lambda lam: -by_lambda[lam]["final_accuracy_mean"])
print("ordering (full-vocabulary target, best first): " + " > ".join(f"λ={lam:g}" for lam in order))
print("\n" + claims.summary())

# %% [markdown]
# **How to read it.** The extrapolated target sharpens what the teacher does *differently* from
# the student: where the teacher is more confident than the reference, λ > 1 asks for still more
# confidence. That can only help if the teacher's differences point the right way more often
# than not, which is why the literature's teachers are strong; with λ too large the target
# over-commits to the teacher's mistakes too.
#
# **Try next.**
# * `teacher="addition-teacher"`: a perfect teacher; the verdicts say why the test is then void.
# * More λ values, or `budget_tokens` doubled: does the ordering hold with longer training?

# %%
numbers = {"teacher": teacher, "student": student, "teacher_accuracy": teacher_acc, "start_accuracy": start_acc,
           "lr": lrs, "val sweep": {f"{r['method']} {r['lr']:g}": r["val_accuracy_mean"] for r in sweep_rows},
           "ordering": [f"{lam:g}" for lam in order],
           "G-OPD lambda (full vocabulary)": {f"{lam:g}": {"mean": r["final_accuracy_mean"],
                                                           "std": r["final_accuracy_std"],
                                                           "by_seed": r["final_accuracy_by_seed"]}
                                              for lam, r in by_lambda.items()},
           "G-OPD lambda (sampled token)": {f"{lam:g}": {"mean": r["final_accuracy_mean"],
                                                         "std": r["final_accuracy_std"],
                                                         "by_seed": r["final_accuracy_by_seed"]}
                                            for lam, r in by_lambda_sampled.items()},
           "_curves": curves}
results = write_results(out, "11_past_the_teacher", size, started=t_start, device=device, claims=claims,
                        numbers=numbers, config={"sizes": vars(S), **pair})
print(f"figures: {saved['html']}\nresults: {results}")
