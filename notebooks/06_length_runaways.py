# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 06 · Length runaways: a summed return over a mostly negative reward
#
# **The question.** OPD's best-documented failure is a length runaway: answers that grow until they
# hit the length cap, or shrink to nothing (`METHODS.md`, "Failure modes and stabilisers"). Can we
# provoke it on the toy pair, what does it look like in the records, does the trainer's early warning
# see it coming, and does the advertised fix remove it — measured over several seeds, with the same
# seeds for the broken and the fixed run?
#
# | failure | where it comes from | its signature here | fix tried |
# |---|---|---|---|
# | length runaway (both directions) | a summed, undiscounted return (`gamma = 1`, `reduction = "sum"`) | mean rollout length, truncated fraction | Stable-OPD (KL to the initial student + gold SFT), the vOPD baseline, the default objective |
#
# The other failure families have their own notebooks: the imbalanced token signal and the
# estimators' variance in `07_estimator_variance`, special tokens and teacher compatibility in
# `08_special_tokens_and_compat`. Every number printed as a claim below is measured in this run; where
# a phenomenon did not appear, the claim says so.

# %% tags=["parameters"]
size: str = "full"          # "smoke": a few steps (seconds, used by the tests); "full": the teaching size (minutes on 2 CPU cores; not yet timed since the split)
run_dir: str = "../runs/notebooks/06_length_runaways"   # where the dashboard HTML and results.json are written
mode: str = "live"          # "live": the dashboard redraws while training; "static": final figures only (headless runs)
device: str = "auto"        # "auto": CUDA when present, else CPU; or "cpu" / "cuda"

# %%
import time
t_start = time.time()
from pathlib import Path

import pandas as pd

from workbench import experiments as X
from workbench.claims import Claims, write_results
from workbench.metrics import advantage_by_repetition_samples
from workbench.runaway import collapse_summary, seed_frequency, warning_lead, warnings_of
from widgets import TrainingDashboard
from widgets import plots as P

S = X.pick_size(size, smoke=dict(steps=3, batch_size=8, seeds=(0,), eval_problems=16),
                full=dict(steps=100, batch_size=32, seeds=(0, 1, 2), eval_problems=128))
out = Path(run_dir)
out.mkdir(parents=True, exist_ok=True)
claims = Claims(size)
M = X.load_models("addition", device=device)
task, tok = M.task, M.tokenizer
LR = 1e-3        # the rate at which the runaway shows within 100 steps (at 3e-4 it did not within 100, docs/results.md)
COLLAPSE_LEN = 10    # "collapsed": mean rollout length over the last 10 steps below this (healthy: ~53 tokens)
common = dict(batch_size=S.batch_size, steps=S.steps, eval_every=S.steps, eval_problems=S.eval_problems,
              eval_sampled=False, lr=LR, device=device)

# %% [markdown]
# ## 1 · The runaway
#
# OPD's per-token reward `r_t = log q − log p` has expectation `−KL_t ≤ 0` under the student: on
# average every token *costs* something. With the default objective (`gamma = 0`, token-mean loss) each
# token is pushed toward the teacher on its own and the length is left alone. With `gamma = 1` each
# token's advantage is the *sum of the rewards after it* (`A_t = Σ_{k≥t} r_k`) and with
# `reduction="sum"` the loss is summed over the sequence: a longer answer collects more negative
# reward, so the cheapest answer is the shortest one — end at once. The same mechanism with a
# reward that is *positive* on average (a teacher that likes the student's filler or repetition)
# pays for never ending. Which direction happens is set by the sign of the mean per-token advantage —
# and with a normalised teacher that mean, under the student's own samples, is `−KL ≤ 0`: this
# mechanism alone can only shorten. Luo et al.'s inflation needs a *difference* between tokens
# (repetition penalised less than normal text); notebook 08 provokes the long direction another way, and
# notebook 12 tests Luo et al.'s own mechanism on a task whose answers vary in length and invite loops.
#
# Four runs per seed, all sampled-token OPD at lr 1e-3 from the zoo student:
# the **default** objective; **γ=1 sum**; **γ=1 sum + Stable-OPD** (the `stable_opd` preset's
# KL-to-initial-student 0.01 and gold-SFT 0.1); **γ=1 sum + vOPD** (the advantage `r_t + KL_t`,
# whose mean under the student is zero, so the summed return no longer grows with length).
# The dashboard shows seed 0; the trainer's early warning (truncation / repetition / short answers) is on in every run
# and its flag appears in the header and as red markers in the truncation panel when it fires.

# %%
dash = TrainingDashboard(mode=mode)
log = X.RecordLog(keep_samples_every=5)
variants = {"default": dict(method="opd"),
            "γ=1 sum": dict(method="opd", gamma=1.0, reduction="sum"),
            "γ=1 sum + Stable-OPD": dict(method="stable_opd", gamma=1.0, reduction="sum"),
            "γ=1 sum + vOPD": dict(method="opd", gamma=1.0, reduction="sum", vopd=True)}
runs = {}
for seed in S.seeds:
    for name, o in variants.items():
        o = dict(o)
        run = f"{name} · seed {seed}"
        runs[run] = X.train(o.pop("method"), [dash] if seed == S.seeds[0] else [], log=log, seed=seed, name=run,
                            **o, **common)
saved = dash.save(out / "dashboard_runaway.html", png=False)

# %%
s0 = S.seeds[0]
rows = {r: collapse_summary(log.records[r], COLLAPSE_LEN) for r in runs}
freq = seed_frequency(rows, variants, flags=("collapsed",))
P.show(P.metric_curves({r: log.series(r, "rollout/mean_length") for r in runs if r.endswith(f"seed {s0}")},
                       f"Mean rollout length, seed {s0}", "tokens"))
print(pd.DataFrame(freq).T.assign(frequency=lambda d: d.collapsed.astype(str) + "/" + d.seeds.astype(str)))
pd.DataFrame(rows).T

# %% [markdown]
# What a collapsed run writes (its last recorded batch), and the default run's for comparison:

# %%
for name in ("γ=1 sum", "default"):
    step, samples = log.last_samples(f"{name} · seed {s0}")
    print(f"{name}, step {step}:", ["".join(s["tokens"]) for s in samples[:4]])

# %% [markdown]
# **Repeated vs normal tokens.** Luo et al.'s signature of a truncation collapse is that repeated
# tokens are penalised *less* than normal ones (about −0.03 vs −0.16 nats), so repetition is the
# cheap way to fill a long answer. We split the per-token teacher reward `log q − log p` (the
# advantage at `gamma = 0`) of every sample batch kept from each run (every 5th step) by whether the
# token closes a 9-token n-gram (a whole scratchpad column) already written in the same answer.

# %%
rep_split = {r: advantage_by_repetition_samples([s for b in log.samples[r].values() for s in b]) for r in runs}
pd.DataFrame(rep_split).T

# %% [markdown]
# ## 2 · Early warning
#
# The trainer's `LengthAlarm` (`TrainConfig.warn_truncation / warn_repetition / warn_rise`,
# `on_warning="stop"` or `"checkpoint"` to act on it) puts `record["warning"]` on the step where the
# truncated fraction or the repetition rate crosses its threshold or jumps (inflation), or where the
# mean rollout length falls to `warn_shrink` (default 0.5) x the first step's (collapse to short
# answers); the dashboard flags it. Below: every warning of section 1's runs, and for each collapsed
# run how many steps the warning came before the length first fell below 10 tokens (`runaway.warning_lead`;
# None: no length warning fired before the collapse).

# %%
warned = {r: warnings_of(log.records[r]) for r in runs}
print({r: w for r, w in warned.items() if w} or "no early warning fired in any run")
lead = {r: warning_lead(log.records[r], COLLAPSE_LEN) for r, row in rows.items()
        if row["collapsed"] and row[f"first step below {COLLAPSE_LEN} tokens"] is not None}
print("steps of warning before the length fell below 10 tokens:", lead)

# %% [markdown]
# ## What this run showed

# %%
def rate(name):
    return freq[name]["collapsed"] / max(1, freq[name]["seeds"])


first_row = rows[f"default · seed {s0}"]
claims("With gamma = 1 and a summed loss the student's answers collapse to a few tokens within the run, in most seeds",
       rate("γ=1 sum") > 0.5, {"collapsed": freq["γ=1 sum"]["collapsed"], "seeds": freq["γ=1 sum"]["seeds"],
                                "steps": S.steps})
claims("The default objective (gamma = 0, token mean) does not collapse at the same lr and seeds",
       rate("default") == 0, {"collapsed": freq["default"]["collapsed"], "seeds": freq["default"]["seeds"]})
claims("Stable-OPD (KL 0.01 to the initial student + gold SFT 0.1) prevents the collapse with the same seeds",
       rate("γ=1 sum + Stable-OPD") < rate("γ=1 sum"),
       {"with Stable-OPD": freq["γ=1 sum + Stable-OPD"]["collapsed"], "without": freq["γ=1 sum"]["collapsed"],
        "seeds": len(S.seeds)})
claims("The vOPD baseline (zero-mean advantage) removes the collapse: the sign of the mean advantage sets the direction",
       rate("γ=1 sum + vOPD") < rate("γ=1 sum"),
       {"with vOPD": freq["γ=1 sum + vOPD"]["collapsed"], "without": freq["γ=1 sum"]["collapsed"],
        "mean token reward at step 1": first_row["token reward at step 1"]})
claims("The per-token reward is negative on average at the start, so a summed return pays for ending early",
       all(r["token reward at step 1"] < 0 for r in rows.values()),
       {"mean token reward at step 1 (seed %d)" % s0: first_row["token reward at step 1"]})

# %%
claims("The short-answer alarm (length <= 0.5 x the first step's) fired before the length fell below 10 tokens "
       "in every collapsed run", bool(lead) and all(v is not None and v > 0 for v in lead.values()),
       lead or {"collapsed runs": 0})
claims("A truncation spike above 0.5 (the early warning's threshold) occurred in some run",
       any(r["max truncated frac"] > 0.5 for r in rows.values()),
       {"max truncated frac over all runs": max(r["max truncated frac"] for r in rows.values()),
        "max repetition rate": max(r["max repetition rate"] for r in rows.values())})
claims("With the zoo teacher (sampled-token OPD) a sustained truncation collapse (Luo et al.: > 0.9 truncated, "
       "not recovering) occurred in some run",
       any(r["final truncated frac (last 10 steps)"] > 0.9 for r in rows.values()),
       {"largest final truncated frac": max(r["final truncated frac (last 10 steps)"] for r in rows.values())})
ov = {r: {"top-4 first 5": log.mean(r, "teacher/topk_overlap", first=5), "top-4 last 5": log.mean(r, "teacher/topk_overlap", last=5),
          "top-1 first 5": log.mean(r, "teacher/top1_overlap", first=5), "top-1 last 5": log.mean(r, "teacher/top1_overlap", last=5)}
      for r in runs}
print("\n" + claims.summary())

# %% [markdown]
# **What it means.** Read the claims, not the prose. **Short answers** come from a summed, undiscounted
# return over a reward that is negative on average: the cheapest answer is the empty one. The fix that
# matches the mechanism is a zero-mean per-token advantage (vOPD) or no undiscounted sum at all (the
# default). Stable-OPD's regularisers are token means while the summed OPD term grows with the answer's
# length, so at the preset's coefficients they can be outweighed — the claims say whether they were.
# The *long* direction (truncation) needs a reward that prefers some tokens to others; with the zoo
# teacher the claims above say whether it appeared at all. Notebook 08 builds a teacher that causes it;
# notebook 12 asks which teachers reward a loop, and whether Stable-OPD holds the runaway off.
#
# **Try next.**
# * `lr=3e-4` in `common`: does the γ=1 collapse still happen within 100 steps, and when?
# * `gamma=0.99` instead of 1: how much discounting keeps the summed return from paying for short answers?
# * stronger Stable-OPD (`kl_coef=0.1, sft_coef=1.0`) on the γ=1 sum run: does it prevent the collapse?
# * `warn_shrink=0.7, on_warning="stop"` on a γ=1 sum run: the trainer stops itself before the collapse.

# %%
results = write_results(out, "06_length_runaways", size, started=t_start, device=str(M.device), claims=claims,
                        numbers={"collapse_frequency": freq, "runs": rows,
                                 "advantage_by_repetition": rep_split, "warnings": warned, "overlap": ov,
                                 "overlap_curves": {r: {"top1": log.series(r, "teacher/top1_overlap"),
                                                        "top4": log.series(r, "teacher/topk_overlap")} for r in runs},
                                 "early_warning_lead": lead},
                        config={"sizes": vars(S), "lr": LR, "collapse_len": COLLAPSE_LEN,
                                "runs": {n: t.cfg.to_dict() for n, t in runs.items()}})
print(f"figures: {saved['html']}\nresults: {results}")
