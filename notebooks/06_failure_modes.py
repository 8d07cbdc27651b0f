# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 06 · Failure modes and stabilisers: provoke them, watch the fix
#
# **The question.** OPD has a handful of documented ways to go wrong (`METHODS.md`, "Failure modes
# and stabilisers"). Which of them can we actually provoke on the toy pair, what does each look like
# in the records, and does the advertised fix remove it — measured over several seeds, with the same
# seeds for the broken and the fixed run?
#
# | failure | where it comes from | its signature here | fix tried |
# |---|---|---|---|
# | length runaway (both directions) | a summed, undiscounted return (`gamma = 1`, `reduction = "sum"`) | mean rollout length, truncated fraction | Stable-OPD (KL to the initial student + gold SFT), the vOPD baseline, the default objective |
# | imbalanced token signal | one sampled token per position; the reward is mostly a penalty | per-token reward histogram, gradient variance | full-vocabulary / top-K / vOPD estimators |
# | special-token mismatch | the teacher ends answers with another token | a huge penalty at EOS dominating the loss | a compatibility check before training, masking EOS positions |
# | teacher incompatibility | the teacher writes the scratchpad in another format | truncation jumping to ~1, accuracy to 0; top-1 overlap | Stable-OPD; an SFT cold start on the teacher's traces |
#
# Every number printed as a claim below is measured in this run; where a phenomenon did not appear,
# the claim says so.

# %% tags=["parameters"]
size: str = "full"          # "smoke": a few steps (seconds, used by the tests); "full": the teaching size (~10 minutes on 2 CPU cores)
run_dir: str = "../runs/notebooks/06_failure_modes"   # where the dashboard HTML and results.json are written
mode: str = "live"          # "live": the dashboard redraws while training; "static": final figures only (headless runs)
device: str = "auto"        # "auto": CUDA when present, else CPU; or "cpu" / "cuda"

# %%
import time
t_start = time.time()
from pathlib import Path

import pandas as pd

from workbench import experiments as X
from workbench.analysis import (estimator_gradients, reward_histogram, special_token_penalty,
                                teacher_with_moved_token, teacher_with_swapped_tokens)
from workbench.claims import Claims, write_results
from workbench.compat import check_special_tokens
from workbench.metrics import advantage_by_repetition_samples
from workbench.runaway import collapse_summary, jump_width, token_count_per_sample, truncation_summary
from widgets import TrainingDashboard
from widgets import plots as P

S = X.pick_size(size,
                smoke=dict(steps=3, batch_size=8, seeds=(0,), eval_problems=16, probe_problems=8, grad_repeats=2,
                           grad_batch=4, compat_steps=4, compat_batch=8, cold_steps=2),
                full=dict(steps=100, batch_size=32, seeds=(0, 1, 2), eval_problems=128, probe_problems=128,
                          grad_repeats=8, grad_batch=32, compat_steps=150, compat_batch=64, cold_steps=30))
out = Path(run_dir)
out.mkdir(parents=True, exist_ok=True)
claims = Claims(size)
M = X.load_models("addition", device=device)
task, tok = M.task, M.tokenizer
probe = X.held_out(task, S.probe_problems, seed=2)
student_eval = X.evaluate_model(M.student, tok, task, X.held_out(task, S.eval_problems), sampled=False)   # the trainer's eval set
LR = 1e-3        # the rate at which the runaway shows within 100 steps (at 3e-4 it did not within 100, docs/results.md)
COLLAPSE_LEN = 10    # "collapsed": mean rollout length over the last 10 steps below this (healthy: ~53 tokens)
common = dict(batch_size=S.batch_size, steps=S.steps, eval_every=S.steps, eval_problems=S.eval_problems,
              eval_sampled=False, lr=LR, device=device)

# %% [markdown]
# ## 1 · The length runaway: a summed return over a mostly negative reward
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
# (repetition penalised less than normal text); section 5 provokes the long direction another way.
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
def run_row(run):
    return {"run": run, **collapse_summary(log.records[run], COLLAPSE_LEN)}


rows = [run_row(r) for r in runs]
table = pd.DataFrame(rows).set_index("run")
collapse = {name: [row["collapsed"] for row in rows if row["run"].startswith(name + " · ")] for name in variants}
freq = {name: {"collapsed": sum(v), "seeds": len(v)} for name, v in collapse.items()}
P.show(P.metric_curves({r: log.series(r, "rollout/mean_length") for r in runs if r.endswith("seed %d" % S.seeds[0])},
                       "Mean rollout length, seed %d" % S.seeds[0], "tokens"))
print(pd.DataFrame(freq).T.assign(frequency=lambda d: d.collapsed.astype(str) + "/" + d.seeds.astype(str)))
table

# %% [markdown]
# What a collapsed run writes (its last recorded batch), and the default run's for comparison:

# %%
for name in ("γ=1 sum", "default"):
    step, samples = log.last_samples(f"{name} · seed {S.seeds[0]}")
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
# run how many steps the warning came before the length first fell below 10 tokens.

# %%
warned = {r: [(rec["step"], rec["warning"]) for rec in log.records[r] if rec.get("warning")] for r in runs}
print({r: w for r, w in warned.items() if w} or "no early warning fired in any run")
lead = {row["run"]: row["first step below 10 tokens"] - next((k for k, w in warned[row["run"]] if "length" in w), 10**9)
        for row in rows if row["collapsed"] and row["first step below 10 tokens"] is not None}
print("steps of warning before the length fell below 10 tokens:", lead)

# %% [markdown]
# ## 3 · The imbalanced token signal and estimator variance (Fu et al., vOPD)
#
# The per-token reward on the student's own samples, as the records store it (rounded to 4 decimals):
# how many tokens the teacher penalises, how many it rewards, and how much of the reward's total
# magnitude is penalty. A one-sample estimator turns a few large penalties into a noisy gradient. At the zoo student we compare the gradient spread of the sampled-token estimator,
# the vOPD baseline, the full-vocabulary reverse KL, the teacher's top-4 (renormalised) and top-4
# *without* renormalisation (Fu et al.'s ablation).

# %%
hist = {"zoo student": reward_histogram(X.scored_samples(M.student, M.teacher, tok, task, probe, seed=0)),
        "after default OPD (seed %d)" % S.seeds[0]:
            reward_histogram(X.scored_samples(runs["default · seed %d" % S.seeds[0]].student, M.teacher, tok, task,
                                              probe, seed=0))}
P.show(P.reward_histogram_figure(hist))
grads = estimator_gradients(M.student, M.teacher, tok, probe, repeats=S.grad_repeats, batch_size=S.grad_batch,
                            max_new_tokens=task.max_new_tokens, seed=0,
                            estimators=("sampled_token", "vopd", "full_kl", "topk", "topk_raw"))
for e in grads:
    grads[e]["variance / full_kl"] = grads[e]["variance"] / grads["full_kl"]["variance"]
P.show(P.estimator_figure(grads))
pd.DataFrame({k: {kk: vv for kk, vv in h.items() if kk not in ("edges", "counts", "quantiles")} | h["quantiles"]
              for k, h in hist.items()}).T, pd.DataFrame(grads).T

# %% [markdown]
# ## 4 · Special-token mismatch
#
# We build a teacher that ends its answers with a different token: a copy of the zoo teacher whose
# output rows for `<eos>` and `<unk>` are swapped (`teacher_with_moved_token`). It reads every id as
# before and still knows where an answer ends — it just *says* so with `<unk>`, as a teacher with
# another end-of-turn token would. Same tokenizer, so the tokenizer check (`compat.check_pair`) passes;
# the behavioural check `compat.check_special_tokens` scores gold solutions + the student's EOS with
# the teacher and refuses the pair.

# %%
bad_teacher = teacher_with_moved_token(M.teacher, tok.eos_token_id, tok.unk_token_id)
check_good = check_special_tokens(M.teacher, tok, probe, task=task, teacher_name="zoo teacher")
check_bad = check_special_tokens(bad_teacher, tok, probe, task=task, teacher_name="teacher ending with <unk>")
print(check_good, "\n")
print(check_bad)
penalty = {"zoo teacher": special_token_penalty(M.student, M.teacher, tok, probe, max_new_tokens=task.max_new_tokens),
           "teacher ending with <unk>": special_token_penalty(M.student, bad_teacher, tok, probe,
                                                              max_new_tokens=task.max_new_tokens)}
pd.DataFrame(penalty).T

# %% [markdown]
# Training against the mismatched teacher (default objective, lr 1e-3, seed 0), without and with the
# documented fix (`mask_special_tokens=True`: no teacher signal where the student wrote EOS). The
# compatible run is the default run of section 1 (same seed, same settings). lr 1e-3 is chosen to make
# failures show within 100 steps; it is too high for the sampled-token estimator to *learn* (its
# held-out accuracy falls in every run at this rate, `docs/results.md`), so compare lengths and
# truncation here, not accuracy.

# %%
dash2 = TrainingDashboard(mode=mode)
s0 = S.seeds[0]
mm_runs = {"mismatched teacher": X.train("opd", [dash2], log=log, teacher=bad_teacher, seed=s0,
                                         name="mismatched teacher", **common),
           "mismatched teacher + EOS masked": X.train("opd", [dash2], log=log, teacher=bad_teacher, seed=s0,
                                                      mask_special_tokens=True, name="mismatched teacher + EOS masked",
                                                      **common)}
dash2.save(out / "dashboard_mismatch.html", png=False)
mm_rows = [run_row(f"default · seed {s0}")] + [run_row(r) for r in mm_runs]
P.show(P.metric_curves({r["run"]: log.series(r["run"], "rollout/mean_length") for r in mm_rows},
                       "Mean rollout length: compatible vs mismatched teacher", "tokens"))
pd.DataFrame(mm_rows).set_index("run")

# %% [markdown]
# ## 5 · Teacher compatibility: a teacher that writes another scratchpad format (Li et al.)
#
# Li et al. find that OPD works when student and teacher share "thinking patterns", and that an SFT
# cold start on the teacher's own rollouts rescues a pair that does not. Their diagnostic is the top-k
# overlap of the two next-token distributions at the student's prefixes (flat in failing runs, rising
# in working ones). The smallest version of "another thinking pattern" we can build exactly: the zoo
# teacher with the ids of `,` (the column separator) and `<unk>` swapped in its embeddings
# (`analysis.teacher_with_swapped_tokens`). It is the same network under a relabelling: it writes
# `3+7+0=10<unk>2+6+1=09<unk>…|004690`, is exactly as accurate, and reads the student's `,` as an id
# it has never seen. Nothing else differs.

# %%
comma = tok.convert_tokens_to_ids(",")
alt_teacher = teacher_with_swapped_tokens(M.teacher, comma, tok.unk_token_id)
teacher_check = {"zoo teacher": X.evaluate_model(M.teacher, tok, task, probe, sampled=False),
                 "teacher with <unk> separators": X.evaluate_model(alt_teacher, tok, task, probe, sampled=False)}
print(pd.DataFrame(teacher_check).T)
for name, t in (("zoo teacher", M.teacher), ("teacher with <unk> separators", alt_teacher)):
    print(f"{name:30s}", "".join(X.rollout_table(t, tok, task, probe[:1], temperature=0.0)[0]["tokens"]))
sep_penalty = {name: special_token_penalty(M.student, t, tok, probe, token_id=comma, max_new_tokens=task.max_new_tokens)
               for name, t in (("zoo teacher", M.teacher), ("teacher with <unk> separators", alt_teacher))}
print("per-token reward log q - log p at the student's ',' vs at its other tokens (nats):")
pd.DataFrame(sep_penalty).T

# %% [markdown]
# Full-vocabulary OPD (`opd_full`, the estimator that learns from this student; lr 1e-3, batches of
# 64) against the new teacher over three seeds (against the zoo teacher once, seed 0, for reference),
# and two fixes with the same seeds: **Stable-OPD**'s terms
# (KL 0.01 to the initial student + gold-solution SFT 0.1) added to the same objective, and an **SFT
# cold start** — a few steps of SFT on the new teacher's traces, then OPD for the rest of the same step
# budget. One SFT-only run on the new teacher's traces is the control for the cold start. The dashboard
# shows seed 0.

# %%
dash3 = TrainingDashboard(mode=mode)
cc = dict(batch_size=S.compat_batch, eval_problems=S.eval_problems, eval_sampled=False, lr=LR, device=device)
ev = max(1, S.compat_steps // 3)
compat_runs, cold_sft = {}, {}
for seed in S.seeds:
    cbs = [dash3] if seed == S.seeds[0] else []
    if seed == S.seeds[0]:
        compat_runs[f"compatible · seed {seed}"] = X.train("opd_full", cbs, log=log, seed=seed, steps=S.compat_steps,
                                                           eval_every=ev, name=f"compatible · seed {seed}", **cc)
    compat_runs[f"incompatible · seed {seed}"] = X.train(
        "opd_full", cbs, log=log, teacher=alt_teacher, seed=seed, steps=S.compat_steps, eval_every=ev,
        name=f"incompatible · seed {seed}", **cc)
    compat_runs[f"incompatible + Stable-OPD · seed {seed}"] = X.train(
        "opd_full", cbs, log=log, teacher=alt_teacher, seed=seed, steps=S.compat_steps, eval_every=ev,
        kl_coef=0.01, sft_coef=0.1, name=f"incompatible + Stable-OPD · seed {seed}", **cc)
    cold_sft[seed] = X.train("sft", cbs, log=log, teacher=alt_teacher, seed=seed, steps=S.cold_steps,
                             eval_every=S.cold_steps, name=f"cold-start SFT · seed {seed}", **cc)
    compat_runs[f"cold start + OPD · seed {seed}"] = X.train(
        "opd_full", cbs, log=log, teacher=alt_teacher, student=cold_sft[seed].student, tokenizer=tok, seed=seed,
        steps=S.compat_steps - S.cold_steps, eval_every=ev, name=f"cold start + OPD · seed {seed}", **cc)
s0 = S.seeds[0]
compat_runs[f"SFT only · seed {s0}"] = X.train("sft", [dash3], log=log, teacher=alt_teacher, seed=s0,
                                               steps=S.compat_steps, eval_every=ev, name=f"SFT only · seed {s0}", **cc)
dash3.save(out / "dashboard_compatibility.html", png=False)


# %%
def shifted(run, key):
    """A run's series; the OPD part of a cold start is drawn after its SFT steps."""
    xs, ys = log.series(run, key)
    return [x + (S.cold_steps if run.startswith("cold start") else 0) for x in xs], ys


crows = {r: {"run": r, **truncation_summary(log.records[r])} for r in compat_runs}
# "jumped": some step had >= 90% of rollouts truncated; "sustained": still > 90% over the last 10 steps
cfreq = {kind: {"jumped": sum(crows[f"{kind} · seed {s}"]["jumped"] for s in S.seeds),
                "sustained": sum(crows[f"{kind} · seed {s}"]["sustained"] for s in S.seeds), "seeds": len(S.seeds)}
         for kind in ("incompatible", "incompatible + Stable-OPD", "cold start + OPD")}
P.show(P.metric_curves({r: shifted(r, "rollout/truncated_frac") for r in compat_runs if r.endswith(f"seed {s0}")},
                       f"Truncated fraction of the student's rollouts, seed {s0} (cold start: OPD after {S.cold_steps} SFT steps)",
                       "truncated", y_range=[0, 1.05]))
P.show(P.metric_curves({r: shifted(r, "teacher/top1_overlap") for r in compat_runs
                        if r.endswith(f"seed {s0}") and not r.startswith("SFT")},
                       "Top-1 overlap of student and teacher at the student's prefixes", "overlap", smooth=5))
curves = {r: (X.continued(log.evals[r], log.evals[f"cold-start SFT · seed {s0}"]) if r.startswith("cold start")
              else log.evals[r]) for r in compat_runs if r.endswith(f"seed {s0}")}
curves = {r: [{"step": 0, "eval/accuracy": student_eval["eval/accuracy"]}] + c for r, c in curves.items()}
P.show(P.accuracy_curves(curves, x="step", teacher_accuracy=None, target_frac=None,
                         title=f"Held-out greedy accuracy, seed {s0}", x_title="step"))
print(pd.DataFrame(cfreq).T.assign(jump=lambda d: d.jumped.astype(str) + "/" + d.seeds.astype(str),
                                   still_at_end=lambda d: d.sustained.astype(str) + "/" + d.seeds.astype(str)))
pd.DataFrame(crows.values()).set_index("run")

# %% [markdown]
# What the incompatible run writes at its last recorded step, and how many column separators (`,` or
# `<unk>`) its recorded samples contain at the first and the last recorded step:

# %%
step, samples = log.last_samples(f"incompatible · seed {s0}")
print(f"step {step}:", ["".join(s["tokens"]) for s in samples[:3]])


seps = {r: {f"{t} per sample, {when}": token_count_per_sample(get(r)[1], t) for t in (",", tok.unk_token)
            for when, get in (("first", log.first_samples), ("last", log.last_samples))}
        for r in compat_runs if r.endswith(f"seed {s0}")}
pd.DataFrame(seps).T

# %% [markdown]
# ## What this run showed

# %%
def rate(name):
    return freq[name]["collapsed"] / max(1, freq[name]["seeds"])


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
        "mean token reward at step 1": rows[0]["token reward at step 1"]})
claims("The per-token reward is negative on average at the start, so a summed return pays for ending early",
       all(r["token reward at step 1"] < 0 for r in rows),
       {"mean token reward at step 1 (seed %d)" % s0: rows[0]["token reward at step 1"]})
claims("The short-answer alarm (length <= 0.5 x the first step's) fired before the length fell below 10 tokens "
       "in every collapsed run", bool(lead) and all(v > 0 for v in lead.values()), lead or {"collapsed runs": 0})
claims("A truncation spike above 0.5 (the early warning's threshold) occurred in some run",
       any(r["max truncated frac"] > 0.5 for r in rows + mm_rows),
       {"max truncated frac over all runs": max(r["max truncated frac"] for r in rows + mm_rows),
        "max repetition rate": max(r["max repetition rate"] for r in rows + mm_rows)})
claims("In sections 1 and 4 (sampled-token OPD, teachers with the student's scratchpad format) a sustained truncation "
       "collapse (Luo et al.: > 0.9 truncated, not recovering) occurred in some run",
       any(r["final truncated frac (last 10 steps)"] > 0.9 for r in rows + mm_rows),
       {"largest final truncated frac": max(r["final truncated frac (last 10 steps)"] for r in rows + mm_rows)})

# %%
z = hist["zoo student"]
claims("The token signal is imbalanced: over 90% of the reward mass is penalty, carried by a few percent of the tokens",
       z["neg_mass_frac"] is not None and z["neg_mass_frac"] > 0.9 and z["neg_frac"] < 0.1,
       {"negative mass share": z["neg_mass_frac"], "tokens < -0.01": z["neg_frac"], "tokens > 0.01": z["pos_frac"],
        "|r| <= 0.01": z["near_zero_frac"], "min": z["min"]})
claims("The full-vocabulary gradient is less noisy than the sampled-token one",
       grads["full_kl"]["variance"] < grads["sampled_token"]["variance"],
       {"sampled_token / full_kl": grads["sampled_token"]["variance / full_kl"]})
claims("The vOPD baseline lowers the sampled-token gradient variance",
       grads["vopd"]["variance"] < grads["sampled_token"]["variance"],
       {"vopd / sampled_token": grads["vopd"]["variance"] / grads["sampled_token"]["variance"]})
claims("Top-4 without renormalisation points away from the full-vocabulary gradient more than renormalised top-4",
       grads["topk_raw"]["cosine_to_full_kl"] < grads["topk"]["cosine_to_full_kl"],
       {"cosine top-4": grads["topk"]["cosine_to_full_kl"], "cosine top-4 raw": grads["topk_raw"]["cosine_to_full_kl"]})

# %%
pb = penalty["teacher ending with <unk>"]
claims("A teacher ending with another token charges each student EOS more than 10 nats, dominating the loss "
       "(> 20% of it from < 5% of the tokens)",
       pb["at_token"] is not None and pb["at_token"] < -10 and pb["share_of_loss"] > 0.2
       and pb["positions"] / pb["tokens"] < 0.05,
       {"EOS reward (nats)": pb["at_token"], "other tokens": pb["other"], "share of loss": pb["share_of_loss"],
        "share of tokens": pb["positions"] / max(1, pb["tokens"])})
claims("The compatibility check refuses the mismatched teacher and passes the zoo teacher",
       (not check_bad.ok) and check_good.ok,
       {"teacher EOS log-prob (mismatched)": check_bad.special["eos_logprob"],
        "teacher EOS log-prob (zoo)": check_good.special["eos_logprob"]})
mm = {r["run"]: r for r in mm_rows}
claims("Against the mismatched teacher the student's answers get longer than against the compatible one",
       mm["mismatched teacher"]["final length (last 10 steps)"] > mm[f"default · seed {s0}"]["final length (last 10 steps)"] + 2,
       {"mismatched": mm["mismatched teacher"]["final length (last 10 steps)"],
        "compatible": mm[f"default · seed {s0}"]["final length (last 10 steps)"],
        "max truncated (mismatched)": mm["mismatched teacher"]["max truncated frac"]})
mk = mm["mismatched teacher + EOS masked"]
claims("Masking EOS positions removes the truncation the mismatched teacher causes (max truncated <= the compatible run's)",
       mk["max truncated frac"] <= mm[f"default · seed {s0}"]["max truncated frac"],
       {"masked": mk["max truncated frac"], "unmasked": mm["mismatched teacher"]["max truncated frac"],
        "compatible": mm[f"default · seed {s0}"]["max truncated frac"]})
claims("With EOS masked the answers keep the compatible run's length (within 5 tokens)",
       abs(mk["final length (last 10 steps)"] - mm[f"default · seed {s0}"]["final length (last 10 steps)"]) <= 5,
       {"masked": mk["final length (last 10 steps)"], "compatible": mm[f"default · seed {s0}"]["final length (last 10 steps)"],
        "first step below 10 tokens (masked)": mk["first step below 10 tokens"]})

# %%
inc = {s: crows[f"incompatible · seed {s}"] for s in S.seeds}
collapsed_inc = [s for s in S.seeds if inc[s]["jumped"]]
start_acc = student_eval["eval/accuracy"]
claims("The teacher with <unk> separators is exactly as accurate as the zoo teacher (the same network, relabelled)",
       teacher_check["teacher with <unk> separators"]["eval/accuracy"] == teacher_check["zoo teacher"]["eval/accuracy"],
       {n: v["eval/accuracy"] for n, v in teacher_check.items()})
sp = sep_penalty["teacher with <unk> separators"]
claims("The new teacher charges each of the student's ',' more than 10 nats (it never emits that id)",
       sp["at_token"] is not None and sp["at_token"] < -10,
       {"reward at ',' (nats)": sp["at_token"], "other tokens": sp["other"], "share of loss": sp["share_of_loss"],
        "zoo teacher at ','": sep_penalty["zoo teacher"]["at_token"]})
inc0 = seps[f"incompatible · seed {s0}"]
claims("Against it the student stops writing ',' and does not write the teacher's <unk> instead (recorded samples, seed %d)" % s0,
       inc0[", per sample, last"] < 0.5 * inc0[", per sample, first"]
       and inc0[f"{tok.unk_token} per sample, last"] < 0.5 * inc0[", per sample, first"], inc0)

# %%
claims("OPD against a teacher with another scratchpad format ends in a truncation collapse in most seeds "
       "(>= 90% of rollouts truncated at some step, and still > 90% over the last 10 steps)",
       cfreq["incompatible"]["sustained"] > len(S.seeds) / 2,
       {"jumped": cfreq["incompatible"]["jumped"], "still at the end": cfreq["incompatible"]["sustained"],
        "seeds": len(S.seeds), "first step >= 0.9 truncated": [inc[s]["first step >= 0.9 truncated"] for s in S.seeds]})
widths = {s: jump_width(log.records[f"incompatible · seed {s}"]) for s in collapsed_inc}
claims("The truncated fraction jumps from under 0.1 to over 0.9 within 20 steps (Luo et al.'s signature: ~30 steps)",
       bool(widths) and all(w is not None and w <= 20 for w in widths.values()),
       {f"seed {s}": w for s, w in widths.items()} or {"collapsed seeds": 0})
claims("Held-out accuracy falls below the start and stays there (final < start - 0.05 in every collapsed seed)",
       bool(collapsed_inc) and all(inc[s]["final eval accuracy"] < start_acc - 0.05 for s in collapsed_inc),
       {"start": start_acc, **{f"seed {s}": inc[s]["final eval accuracy"] for s in S.seeds}})
claims("Repetition rises with the truncation in most collapsed seeds (repetition rate above 0.3, as in Luo et al.)",
       sum(inc[s]["max repetition rate"] > 0.3 for s in collapsed_inc) > len(collapsed_inc) / 2,
       {f"seed {s} max repetition rate": inc[s]["max repetition rate"] for s in S.seeds})
claims("The early warning fired before the collapse was complete in every collapsed run",
       bool(collapsed_inc) and all(inc[s]["first warning"] is not None and inc[s]["first warning"] < inc[s]["first step >= 0.9 truncated"]
                                   for s in collapsed_inc),
       {f"seed {s}": f"warning at {inc[s]['first warning']}, >= 0.9 truncated at {inc[s]['first step >= 0.9 truncated']}"
        for s in collapsed_inc})

# %%
st = {s: crows[f"incompatible + Stable-OPD · seed {s}"] for s in S.seeds}
claims("Stable-OPD's terms (KL 0.01 to the initial student + gold SFT 0.1) remove the truncation jump with the same seeds",
       cfreq["incompatible + Stable-OPD"]["jumped"] < cfreq["incompatible"]["jumped"],
       {"jumped with Stable-OPD": cfreq["incompatible + Stable-OPD"]["jumped"], "without": cfreq["incompatible"]["jumped"],
        "first step >= 0.9 truncated, with / without": [(st[s]["first step >= 0.9 truncated"], inc[s]["first step >= 0.9 truncated"])
                                                        for s in S.seeds],
        "final accuracy with Stable-OPD": [st[s]["final eval accuracy"] for s in S.seeds]})
claims("Stable-OPD's terms delay the jump in every seed (first step at >= 0.9 truncated comes later)",
       all(inc[s]["first step >= 0.9 truncated"] is not None and (st[s]["first step >= 0.9 truncated"] is None or
           st[s]["first step >= 0.9 truncated"] > inc[s]["first step >= 0.9 truncated"]) for s in S.seeds),
       {f"seed {s}": f"{inc[s]['first step >= 0.9 truncated']} -> {st[s]['first step >= 0.9 truncated']}" for s in S.seeds})
claims(f"An SFT cold start on the new teacher's traces ({S.cold_steps} steps) removes the truncation jump with the same seeds",
       cfreq["cold start + OPD"]["jumped"] < cfreq["incompatible"]["jumped"],
       {"jumped with cold start": cfreq["cold start + OPD"]["jumped"], "without": cfreq["incompatible"]["jumped"],
        "max truncated with cold start": [crows[f"cold start + OPD · seed {s}"]["max truncated frac"] for s in S.seeds]})
cold = {s: crows[f"cold start + OPD · seed {s}"]["final eval accuracy"] for s in S.seeds}
cold_end = {s: log.evals[f"cold-start SFT · seed {s}"][-1]["eval/accuracy"] for s in S.seeds}
claims("After the cold start, OPD against the new teacher adds accuracy (final > the cold start's end + 0.03, every seed)",
       all(cold[s] > cold_end[s] + 0.03 for s in S.seeds),
       {f"seed {s}": f"{cold_end[s]:.3f} -> {cold[s]:.3f}" for s in S.seeds})
claims("Cold start + OPD ends more accurate than SFT alone on the new teacher's traces for the same number of steps",
       cold[s0] > crows[f"SFT only · seed {s0}"]["final eval accuracy"] + 0.03,
       {"cold start + OPD": cold[s0], "SFT only": crows[f"SFT only · seed {s0}"]["final eval accuracy"], "seed": s0})

# %%
works = [f"compatible · seed {s0}"] + [f"cold start + OPD · seed {s}" for s in S.seeds]
fails = [f"incompatible · seed {s}" for s in collapsed_inc]
rise = {r: crows[r]["top-1 overlap, last 5"] - crows[r]["top-1 overlap, first 5"] for r in works + fails}
top1 = {r: f"{crows[r]['top-1 overlap, first 5']:.3f} -> {crows[r]['top-1 overlap, last 5']:.3f}" for r in works + fails}
claims("Top-1 overlap rises (by > 0.02) in the runs that work and not in the collapsed ones (Li et al.'s diagnostic)",
       all(rise[r] > 0.02 for r in works) and all(rise[r] <= 0.02 for r in fails), top1)
claims("Top-1 overlap ends above 0.91 (Li et al.'s level in successful runs) in every run that works and below it in "
       "every collapsed one", bool(fails) and all(crows[r]["top-1 overlap, last 5"] > 0.91 for r in works)
       and all(crows[r]["top-1 overlap, last 5"] <= 0.91 for r in fails), top1)
ov = {r: {"top-4 first 5": log.mean(r, "teacher/topk_overlap", first=5), "top-4 last 5": log.mean(r, "teacher/topk_overlap", last=5),
          "top-1 first 5": log.mean(r, "teacher/top1_overlap", first=5), "top-1 last 5": log.mean(r, "teacher/top1_overlap", last=5)}
      for r in list(runs) + list(compat_runs)}
print("\n" + claims.summary())

# %% [markdown]
# **What it means.** Read the claims, not the prose: at toy scale some of the literature's failure
# modes show and some do not. Two runaways, two causes:
#
# * **Short answers** come from a summed, undiscounted return over a reward that is negative on
#   average: the cheapest answer is the empty one. The fix that matches the mechanism is a zero-mean
#   per-token advantage (vOPD) or no undiscounted sum at all (the default). Stable-OPD's regularisers
#   are token means while the summed OPD term grows with the answer's length, so at the preset's
#   coefficients they can be outweighed — the claims say whether they were.
# * **Long, truncated answers** came, here, from a teacher that writes the scratchpad in another
#   format. Its reward at the student's `,` is a penalty of tens of nats (it never emits that id), so
#   full-vocabulary OPD pushes the separator out of the student's columns. The student has never
#   produced the teacher's `<unk>`; the separator counts above show whether it gets there, and the
#   printed samples what the columns look like by then. Rollouts that hit the length cap are answers
#   whose `|` never came: the column procedure broke on the way from one format to the other. Note the difference from Luo et al.'s
#   mechanism (repetition rewarded more than normal text): here the driver is a format the teacher
#   refuses, and repetition is a side effect, when it appears at all. A cold start that first teaches
#   the student the teacher's format removes the cause; a KL anchor to the initial student only slows
#   the drift (compare the first steps at 0.9 truncated with and without Stable-OPD above).
#
# Whether OPD after the cold start beats plain SFT on the same teacher's traces at this budget is
# one of the claims above; on this toy, where the teacher's traces are near-unique, SFT is strong (see
# notebook 02). Li et al.'s top-k overlap needs k = 1 on an 18-token vocabulary: top-4 is dominated
# by the order of tokens neither model gives any mass.
#
# Masking EOS removes the mismatched teacher's penalty, but it also removes *every* signal at the
# student's EOS: nothing then holds the ending in place, and if the other tokens are penalised on
# average, mass drifts to the unpenalised EOS. Masking is the documented fix for a mismatched *format*
# token that carries no information; for the end of the answer, aligning the two ids (score the
# student's EOS with the teacher's end token) is the better one — not built here.
#
# **Try next.**
# * `lr=3e-4` in `common`: does the γ=1 collapse still happen within 100 steps, and when?
# * stronger Stable-OPD on the incompatible teacher (`kl_coef=0.1, sft_coef=1.0`): does it prevent the
#   jump, or only delay it?
# * `mask_special_tokens`-style masking of the `,` positions instead of a cold start (the student then
#   keeps its own format; does the rest of the signal still teach it to add?).
# * `warn_truncation=0.2, on_warning="stop"` on an incompatible-teacher run: the trainer stops itself.

# %%
results = write_results(out, "06_failure_modes", size, started=t_start, device=str(M.device), claims=claims,
                        numbers={"collapse_frequency": freq, "runs": {r["run"]: r for r in rows + mm_rows[1:]},
                                 "advantage_by_repetition": rep_split, "warnings": warned,
                                 "reward_histogram": hist, "gradient_variance": grads,
                                 "special_token_check": {"zoo": check_good.special, "mismatched": check_bad.special},
                                 "special_token_penalty": penalty, "overlap": ov,
                                 "compatibility": {"teacher_check": teacher_check, "collapse_frequency": cfreq,
                                                   "runs": crows, "jump_width": widths,
                                                   "separator_penalty": sep_penalty, "separators_seed0": seps,
                                                   "cold_start_end_accuracy": cold_end, "start_accuracy": start_acc},
                                 "overlap_curves": {r: {"top1": log.series(r, "teacher/top1_overlap"),
                                                        "top4": log.series(r, "teacher/topk_overlap")}
                                                    for r in list(runs) + list(compat_runs)},
                                 "early_warning_lead": lead},
                        config={"sizes": vars(S), "lr": LR, "collapse_len": COLLAPSE_LEN,
                                "runs": {n: t.cfg.to_dict() for n, t in {**runs, **mm_runs, **compat_runs}.items()}})
print(f"figures: {saved['html']}\nresults: {results}")
