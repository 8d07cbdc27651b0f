# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
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
# | teacher incompatibility | student and teacher do not share "thinking patterns" | top-k overlap flat over training | SFT cold start (not built yet: see the end) |
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
                                teacher_with_moved_token)
from workbench.claims import Claims, write_results
from workbench.compat import check_special_tokens
from workbench.metrics import advantage_by_repetition_samples
from widgets import TrainingDashboard
from widgets import plots as P

S = X.pick_size(size,
                smoke=dict(steps=3, batch_size=8, seeds=(0,), eval_problems=16, probe_problems=8, grad_repeats=2,
                           grad_batch=4),
                full=dict(steps=100, batch_size=32, seeds=(0, 1, 2), eval_problems=128, probe_problems=128,
                          grad_repeats=8, grad_batch=32))
out = Path(run_dir)
out.mkdir(parents=True, exist_ok=True)
claims = Claims(size)
M = X.load_models("addition", device=device)
task, tok = M.task, M.tokenizer
probe = X.held_out(task, S.probe_problems, seed=2)
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
# pays for never ending: length inflation and truncation collapse (Luo et al.). Which direction
# happens is set by the sign of the mean per-token advantage.
#
# Four runs per seed, all sampled-token OPD at lr 1e-3 from the zoo student:
# the **default** objective; **γ=1 sum**; **γ=1 sum + Stable-OPD** (the `stable_opd` preset's
# KL-to-initial-student 0.01 and gold-SFT 0.1); **γ=1 sum + vOPD** (the advantage `r_t + KL_t`,
# whose mean under the student is zero, so the summed return no longer grows with length).
# The dashboard shows seed 0; the trainer's early warning (truncation / repetition) is on in every run
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
    recs = log.records[run]
    lengths = [r["rollout/mean_length"] for r in recs]
    last = lengths[-10:]
    first_short = next((r["step"] for r in recs if r["rollout/mean_length"] < COLLAPSE_LEN), None)
    return {"run": run, "start length": lengths[0], "final length (last 10 steps)": sum(last) / len(last),
            "collapsed": sum(last) / len(last) < COLLAPSE_LEN, "first step below 10 tokens": first_short,
            "max truncated frac": max(r["rollout/truncated_frac"] for r in recs),
            "final truncated frac (last 10 steps)": sum(r["rollout/truncated_frac"] for r in recs[-10:]) / len(recs[-10:]),
            "max repetition rate": max(r["rollout/repetition_rate"] for r in recs),
            "token reward at step 1": recs[0].get("teacher/token_reward_mean"),
            "advantage mean at step 1": recs[0].get("opd/advantage_mean"),
            "final eval accuracy": next((r["eval/accuracy"] for r in reversed(recs) if "eval/accuracy" in r), None),
            "warnings": sum(1 for r in recs if r.get("warning"))}


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
# truncated fraction or the repetition rate crosses its threshold or jumps; the dashboard flags it.
# It watches the *inflation* direction only: a collapse to short answers raises neither signal.

# %%
warned = {r: [(rec["step"], rec["warning"]) for rec in log.records[r] if rec.get("warning")] for r in runs}
print({r: w for r, w in warned.items() if w} or "no early warning fired in any run")

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
# ## 5 · Teacher compatibility: top-k overlap over training (Li et al.)
#
# `teacher/topk_overlap` in every record is `|top-4(student) ∩ top-4(teacher)| / 4` at the student's
# own prefixes. Li et al. see it rise from ~0.72 to > 0.91 in runs that work and stay flat in runs that
# fail. Besides the section-1 runs we add one run of the estimator that does learn from this student,
# the full-vocabulary reverse KL (`opd_full`, lr 1e-3, seed 0, same 100 steps).

# %%
kl_run = X.train("opd_full", [], log=log, seed=s0, name=f"full-vocab KL · seed {s0}", **common)
runs[kl_run.cfg.name] = kl_run
overlap = {r: log.series(r, "teacher/topk_overlap") for r in runs if not r.startswith("γ=1 sum + vOPD")}
P.show(P.metric_curves(overlap, "Top-4 overlap of student and teacher at the student's prefixes", "overlap",
                       smooth=5))
ov = {r: {"first 5 steps": log.mean(r, "teacher/topk_overlap", first=5),
          "last 5 steps": log.mean(r, "teacher/topk_overlap", last=5)} for r in runs}
pd.DataFrame(ov).T

# %% [markdown]
# **Not built yet:** an *incompatible* teacher that stalls OPD, and the SFT cold start that rescues it.
# The closest measured case is in `docs/results.md` (choosing the zoo student): a first student build
# that gave the teacher's tokens ~1e-8 probability did not move under full-vocabulary OPD. This notebook
# does not rerun it.
#
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
claims("A truncation spike above 0.5 (the early warning's threshold) occurred in some run",
       any(r["max truncated frac"] > 0.5 for r in rows + mm_rows),
       {"max truncated frac over all runs": max(r["max truncated frac"] for r in rows + mm_rows),
        "max repetition rate": max(r["max repetition rate"] for r in rows + mm_rows)})
claims("A sustained truncation collapse (Luo et al.: > 0.9 truncated, not recovering) occurred in some run",
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
d_ov = [ov[f"default · seed {s}"] for s in S.seeds]
claims("Top-4 overlap rises over training in the default runs (Li et al.'s sign of a working pair)",
       all(o["last 5 steps"] > o["first 5 steps"] for o in d_ov),
       {f"seed {s}": f"{o['first 5 steps']:.3f} -> {o['last 5 steps']:.3f}" for s, o in zip(S.seeds, d_ov)})
kl_ov, kl_acc = ov[kl_run.cfg.name], run_row(kl_run.cfg.name)["final eval accuracy"]
claims("Top-4 overlap rises in the full-vocabulary KL run, the estimator that learns from this student",
       kl_ov["last 5 steps"] > kl_ov["first 5 steps"] + 0.02,
       {"first 5 steps": kl_ov["first 5 steps"], "last 5 steps": kl_ov["last 5 steps"], "final accuracy": kl_acc,
        "sampled-token final accuracy": mm[f"default · seed {s0}"]["final eval accuracy"]})
print("\n" + claims.summary())

# %% [markdown]
# **What it means.** Read the claims, not the prose: at toy scale some of the literature's failure
# modes show and some do not. The summed, undiscounted return over a reward that is negative on
# average is the sharpest one here: the cheapest answer is the empty one. Stable-OPD was designed for
# the opposite runaway (Luo et al.: long, repetitive, truncated answers); its regularisers are token
# means while the summed OPD term grows with the answer's length, so at the preset's coefficients they
# can be outweighed — the claims above say whether they were. The fix that matches the mechanism is a
# zero-mean per-token advantage (vOPD) or no undiscounted sum at all (the default). A sustained
# inflation needs the opposite sign, a mean advantage above zero; short truncation spikes can appear
# on the way (the early warning catches them).
#
# Masking EOS removes the mismatched teacher's penalty, but it also removes *every* signal at the
# student's EOS: nothing then holds the ending in place, and if the other tokens are penalised on
# average, mass drifts to the unpenalised EOS. Masking is the documented fix for a mismatched *format*
# token that carries no information; for the end of the answer, aligning the two ids (score the
# student's EOS with the teacher's end token) is the better one — not built here.
#
# **Try next.**
# * `lr=3e-4` in `common`: does the collapse still happen within 100 steps, and when?
# * larger Stable-OPD coefficients (`kl_coef=1.0, sft_coef=5.0`) on the γ=1 sum runs.
# * `warn_truncation=0.2, on_warning="stop"` on the mismatched-teacher run: the trainer stops itself.

# %%
results = write_results(out, "06_failure_modes", size, started=t_start, device=str(M.device), claims=claims,
                        numbers={"collapse_frequency": freq, "runs": {r["run"]: r for r in rows + mm_rows[1:]},
                                 "advantage_by_repetition": rep_split, "warnings": warned,
                                 "reward_histogram": hist, "gradient_variance": grads,
                                 "special_token_check": {"zoo": check_good.special, "mismatched": check_bad.special},
                                 "special_token_penalty": penalty, "topk_overlap": ov,
                                 "topk_overlap_curves": {r: log.series(r, "teacher/topk_overlap") for r in runs}},
                        config={"sizes": vars(S), "lr": LR, "collapse_len": COLLAPSE_LEN,
                                "runs": {n: t.cfg.to_dict() for n, t in {**runs, **mm_runs}.items()}})
print(f"figures: {saved['html']}\nresults: {results}")
