# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 08 · Special tokens and teacher compatibility: a teacher that speaks slightly differently
#
# **The question.** OPD scores the student's tokens with the teacher's log-probabilities, so it
# assumes the two agree on what the tokens *mean*. What happens when they do not — a teacher that ends
# its answers with another token, or writes the scratchpad in another format (Li et al.'s "thinking
# patterns")? Does a check before training catch it, what does it look like in the records, and do the
# documented fixes (masking, Stable-OPD, an SFT cold start) remove it — with the same seeds for the
# broken and the fixed run?
#
# | failure | where it comes from | its signature here | fix tried |
# |---|---|---|---|
# | special-token mismatch | the teacher ends answers with another token | a huge penalty at EOS dominating the loss | a compatibility check before training, masking EOS positions |
# | teacher incompatibility | the teacher writes the scratchpad in another format | truncation jumping to ~1, accuracy to 0; top-1 overlap | Stable-OPD; an SFT cold start on the teacher's traces |
#
# Length runaways with a compatible teacher are notebook 06, the estimators' variance notebook 07.
# Every number printed as a claim below is measured in this run; where a phenomenon did not appear, the
# claim says so.

# %% tags=["parameters"]
size: str = "full"          # "smoke": a few steps (seconds, used by the tests); "full": the teaching size (minutes on 2 CPU cores; not yet timed since the split)
run_dir: str = "../runs/notebooks/08_special_tokens_and_compat"   # where the dashboard HTML and results.json are written
mode: str = "live"          # "live": the dashboard redraws while training; "static": final figures only (headless runs)
device: str = "auto"        # "auto": CUDA when present, else CPU; or "cpu" / "cuda"

# %%
import time
t_start = time.time()
from pathlib import Path

import pandas as pd

from workbench import experiments as X
from workbench.analysis import special_token_penalty, teacher_with_moved_token, teacher_with_swapped_tokens
from workbench.claims import Claims, write_results
from workbench.compat import check_special_tokens
from workbench.runaway import (collapse_summary, jump_width, seed_frequency, token_counts, truncation_summary)
from widgets import TrainingDashboard
from widgets import plots as P

S = X.pick_size(size, smoke=dict(steps=3, batch_size=8, seeds=(0,), eval_problems=16, probe_problems=8,
                                 compat_steps=4, compat_batch=8, cold_steps=2),
                full=dict(steps=100, batch_size=32, seeds=(0, 1, 2), eval_problems=128, probe_problems=128,
                          compat_steps=150, compat_batch=64, cold_steps=30))
out = Path(run_dir)
out.mkdir(parents=True, exist_ok=True)
claims = Claims(size)
M = X.load_models("addition", device=device)
task, tok = M.task, M.tokenizer
probe = X.held_out(task, S.probe_problems, seed=2)
student_eval = X.evaluate_model(M.student, tok, task, X.held_out(task, S.eval_problems), sampled=False)   # the trainer's eval set
LR = 1e-3        # notebook 06's rate: failures show within 100 steps
s0 = S.seeds[0]
log = X.RecordLog(keep_samples_every=5)
common = dict(batch_size=S.batch_size, steps=S.steps, eval_every=S.steps, eval_problems=S.eval_problems,
              eval_sampled=False, lr=LR, device=device)

# %% [markdown]
# ## 1 · Special-token mismatch
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
penalty = {"zoo teacher": special_token_penalty(M.student, M.teacher, tok, probe, task=task),
           "teacher ending with <unk>": special_token_penalty(M.student, bad_teacher, tok, probe,
                                                              task=task)}
pd.DataFrame(penalty).T

# %% [markdown]
# Training against the mismatched teacher (default sampled-token OPD, lr 1e-3, seed 0), without and
# with the documented fix (`mask_special_tokens=True`: no teacher signal where the student wrote EOS),
# next to the same run against the zoo teacher (notebook 06's default run: same seed, same settings).
# lr 1e-3 is chosen to make failures show within 100 steps; it is too high for the sampled-token
# estimator to *learn* (its held-out accuracy falls in every run at this rate, `docs/results.md`), so
# compare lengths and truncation here, not accuracy.

# %%
dash = TrainingDashboard(mode=mode)
mm_runs = {name: X.train("opd", [dash], log=log, teacher=t, seed=s0, name=name, **o, **common)
           for name, t, o in ((f"zoo teacher · seed {s0}", M.teacher, {}),
                              ("mismatched teacher", bad_teacher, {}),
                              ("mismatched teacher + EOS masked", bad_teacher, dict(mask_special_tokens=True)))}
dash.save(out / "dashboard_mismatch.html", png=False)
mm = {r: collapse_summary(log.records[r]) for r in mm_runs}
P.show(P.metric_curves({r: log.series(r, "rollout/mean_length") for r in mm},
                       "Mean rollout length: compatible vs mismatched teacher", "tokens"))
pd.DataFrame(mm).T

# %% [markdown]
# ## 2 · Teacher compatibility: a teacher that writes another scratchpad format (Li et al.)
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
sep_penalty = {name: special_token_penalty(M.student, t, tok, probe, token_id=comma, task=task)
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
    cbs = [dash3] if seed == s0 else []
    if seed == s0:
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
compat_runs[f"SFT only · seed {s0}"] = X.train("sft", [dash3], log=log, teacher=alt_teacher, seed=s0,
                                               steps=S.compat_steps, eval_every=ev, name=f"SFT only · seed {s0}", **cc)
dash3.save(out / "dashboard_compatibility.html", png=False)

# %%
# the OPD part of a cold start is drawn after its SFT steps
offset = {r: S.cold_steps if r.startswith("cold start") else 0 for r in compat_runs}
crows = {r: truncation_summary(log.records[r]) for r in compat_runs}
# "jumped": some step had >= 90% of rollouts truncated; "sustained": still > 90% over the last 10 steps
cfreq = seed_frequency(crows, ("incompatible", "incompatible + Stable-OPD", "cold start + OPD"),
                       flags=("jumped", "sustained"))
P.show(P.metric_curves({r: log.series(r, "rollout/truncated_frac", offset[r]) for r in compat_runs if r.endswith(f"seed {s0}")},
                       f"Truncated fraction of the student's rollouts, seed {s0} (cold start: OPD after {S.cold_steps} SFT steps)",
                       "truncated", y_range=[0, 1.05]))
P.show(P.metric_curves({r: log.series(r, "teacher/top1_overlap", offset[r]) for r in compat_runs
                        if r.endswith(f"seed {s0}") and not r.startswith("SFT")},
                       "Top-1 overlap of student and teacher at the student's prefixes", "overlap", smooth=5))
curves = {r: (X.continued(log.evals[r], log.evals[f"cold-start SFT · seed {s0}"]) if r.startswith("cold start")
              else log.evals[r]) for r in compat_runs if r.endswith(f"seed {s0}")}
curves = {r: [{"step": 0, "eval/accuracy": student_eval["eval/accuracy"]}] + c for r, c in curves.items()}
P.show(P.accuracy_curves(curves, x="step", teacher_accuracy=None, target_frac=None,
                         title=f"Held-out greedy accuracy, seed {s0}", x_title="step"))
print(pd.DataFrame(cfreq).T.assign(jump=lambda d: d.jumped.astype(str) + "/" + d.seeds.astype(str),
                                   still_at_end=lambda d: d.sustained.astype(str) + "/" + d.seeds.astype(str)))
pd.DataFrame(crows).T

# %% [markdown]
# What the incompatible run writes at its last recorded step, and how many column separators (`,` or
# `<unk>`) its recorded samples contain at the first and the last recorded step:

# %%
step, samples = log.last_samples(f"incompatible · seed {s0}")
print(f"step {step}:", ["".join(s["tokens"]) for s in samples[:3]])
seps = {r: token_counts(log.first_samples(r)[1], log.last_samples(r)[1], (",", tok.unk_token))
        for r in compat_runs if r.endswith(f"seed {s0}")}
pd.DataFrame(seps).T

# %% [markdown]
# ## What this run showed

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
zoo_run, mk = mm[f"zoo teacher · seed {s0}"], mm["mismatched teacher + EOS masked"]
claims("Against the mismatched teacher the student's answers get longer than against the compatible one",
       mm["mismatched teacher"]["final length (last 10 steps)"] > zoo_run["final length (last 10 steps)"] + 2,
       {"mismatched": mm["mismatched teacher"]["final length (last 10 steps)"],
        "compatible": zoo_run["final length (last 10 steps)"],
        "max truncated (mismatched)": mm["mismatched teacher"]["max truncated frac"]})
claims("Masking EOS positions removes the truncation the mismatched teacher causes (max truncated <= the compatible run's)",
       mk["max truncated frac"] <= zoo_run["max truncated frac"],
       {"masked": mk["max truncated frac"], "unmasked": mm["mismatched teacher"]["max truncated frac"],
        "compatible": zoo_run["max truncated frac"]})
claims("With EOS masked the answers keep the compatible run's length (within 5 tokens)",
       abs(mk["final length (last 10 steps)"] - zoo_run["final length (last 10 steps)"]) <= 5,
       {"masked": mk["final length (last 10 steps)"], "compatible": zoo_run["final length (last 10 steps)"],
        "first step below 10 tokens (masked)": mk["first step below 10 tokens"]})
claims("Against the mismatched teacher (sampled-token OPD) a sustained truncation collapse (Luo et al.: > 0.9 "
       "truncated, not recovering) occurred in some run",
       any(mm[r]["final truncated frac (last 10 steps)"] > 0.9 for r in ("mismatched teacher", "mismatched teacher + EOS masked")),
       {r: {"final truncated frac": mm[r]["final truncated frac (last 10 steps)"], "max": mm[r]["max truncated frac"]}
        for r in ("mismatched teacher", "mismatched teacher + EOS masked")})

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
      for r in compat_runs}
print("\n" + claims.summary())

# %% [markdown]
# **What it means.** Read the claims, not the prose. A teacher that *says* the same thing with another
# token charges the student's token tens of nats at every position where it appears, and that one
# position can dominate the whole loss. The behavioural check (`compat.check_special_tokens`) sees it
# before any training; the tokenizer check cannot, because the vocabularies are identical.
#
# **Long, truncated answers** came, here, from a teacher that writes the scratchpad in another
# format. Its reward at the student's `,` is a penalty of tens of nats (it never emits that id), so
# full-vocabulary OPD pushes the separator out of the student's columns. The student has never
# produced the teacher's `<unk>`; the separator counts above show whether it gets there, and the
# printed samples what the columns look like by then. Rollouts that hit the length cap are answers
# whose `|` never came: the column procedure broke on the way from one format to the other. Note the
# difference from Luo et al.'s mechanism (repetition rewarded more than normal text): here the driver is
# a format the teacher refuses, and repetition is a side effect, when it appears at all. A cold start
# that first teaches the student the teacher's format removes the cause; a KL anchor to the initial
# student only slows the drift (compare the first steps at 0.9 truncated with and without Stable-OPD
# above).
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
# * stronger Stable-OPD on the incompatible teacher (`kl_coef=0.1, sft_coef=1.0`): does it prevent the
#   jump, or only delay it?
# * `mask_special_tokens`-style masking of the `,` positions instead of a cold start (the student then
#   keeps its own format; does the rest of the signal still teach it to add?).
# * `warn_truncation=0.2, on_warning="stop"` on an incompatible-teacher run: the trainer stops itself.

# %%
results = write_results(out, "08_special_tokens_and_compat", size, started=t_start, device=str(M.device), claims=claims,
                        numbers={"special_token_check": {"zoo": check_good.special, "mismatched": check_bad.special},
                                 "special_token_penalty": penalty, "runs": mm, "overlap": ov,
                                 "compatibility": {"teacher_check": teacher_check, "collapse_frequency": cfreq,
                                                   "runs": crows, "jump_width": widths,
                                                   "separator_penalty": sep_penalty, "separators_seed0": seps,
                                                   "cold_start_end_accuracy": cold_end, "start_accuracy": start_acc},
                                 "overlap_curves": {r: {"top1": log.series(r, "teacher/top1_overlap"),
                                                        "top4": log.series(r, "teacher/topk_overlap")}
                                                    for r in compat_runs}},
                        config={"sizes": vars(S), "lr": LR,
                                "runs": {n: t.cfg.to_dict() for n, t in {**mm_runs, **compat_runs}.items()}})
print(f"results: {results}")
