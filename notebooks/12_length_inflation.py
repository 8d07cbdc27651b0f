# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 12 · Length inflation: when does OPD run away into loops, and does Stable-OPD stop it?
#
# **The question.** Luo et al. (arXiv 2604.08527) report OPD's signature failure: rollouts grow until
# they hit the length cap, the truncated fraction jumps from ~0.45 to above 0.95 within ~30 steps,
# repetition saturates and validation accuracy falls and stays down. Their mechanism: repeated tokens
# get a *less negative* teacher reward than normal ones (about −0.03 against −0.16 nats), so repeating
# is the cheap way to write. Their fix, Stable-OPD, adds a KL term to the initial student and a
# gold-solution SFT mixture. Notebook 06 could not test this fairly: every addition answer is 53 tokens
# long, and the long direction was provoked only with a relabelled teacher whose format the gold data
# contradicts.
#
# **The setting the claim needs.** Variable-length answers, a student that falls into loops, and gold
# data the teacher agrees with. The `repeat` task (`ab*3=` → `ab,ab,ab|3`; counts 1–19, answers of
# 3–78 characters, a cap of 89) has all three: the one hard decision is when to stop, and a student
# that over-counts goes on copying a unit it has already written — a loop. The student (~10k
# parameters) was SFT'd on the teacher's traces to its plateau and still miscounts (section 2 measures how
# often it goes on past the count).
#
# **Two teachers, one gold behaviour.** Both write every gold answer exactly (100% greedy) and stop after
# exactly `count` copies. They differ only where gold data never goes — on a prefix that already holds
# *more* copies than asked:
# * `repeat-teacher`, trained on gold answers only, counts: past the count it expects the answer to end;
# * `repeat-loop-teacher`, the same model fine-tuned to go on copying once a prefix has over-counted,
#   which is what large language models do on their own (a phrase repeated a few times makes the next
#   repeat more likely) — the teacher Luo et al. distilled from.
#
# Every sentence about what *this* run showed is printed from measured numbers as `✓ shown in this
# run` or `✗ NOT shown in this run`; `? could not be measured` says the test's condition was not
# met. At `size="smoke"` nothing is evaluated.

# %% tags=["parameters"]
size: str = "full"          # "smoke": a few steps (seconds, used by the tests); "full": 3 seeds x 150 steps (minutes)
run_dir: str = "../runs/notebooks/12_length_inflation"   # where the dashboard HTML and results.json go
mode: str = "live"          # "live": the dashboard redraws while training; "static": final figures only (headless runs)
device: str = "auto"        # "auto": CUDA when present, else CPU; or "cpu" / "cuda"

# %%
import time
t_start = time.time()
from pathlib import Path

import pandas as pd

from workbench import experiments as X
from workbench.analysis import another_copy_probability
from workbench.claims import Claims, write_results
from workbench.metrics import advantage_by_marker_samples
from workbench.runaway import truncation_collapse, truncation_summary, warnings_of
from widgets import TrainingDashboard
from widgets import plots as P

S = X.pick_size(size, smoke=dict(steps=3, batch_size=8, seeds=(0,), eval_problems=16, probe_problems=16),
                full=dict(steps=150, batch_size=32, seeds=(0, 1, 2), eval_problems=128, probe_problems=200))
out = Path(run_dir)
out.mkdir(parents=True, exist_ok=True)
claims = Claims(size)
STUDENT = "repeat-student-sft"
TEACHERS = {"counting teacher": "repeat-teacher", "looping teacher": "repeat-loop-teacher"}
models = {name: X.load_models("repeat", device=device, teacher=ckpt, student=STUDENT) for name, ckpt in TEACHERS.items()}
M = models["counting teacher"]
task, tok = M.task, M.tokenizer
LR = 3e-4            # the `opd` and `stable_opd` presets' rate
EARLY = max(1, S.steps // 10)     # "before the collapse": the first 10% of steps, and before any truncation jump
S

# %% [markdown]
# ## 1 · The pair, and what the student writes
#
# Greedy and temperature-1 accuracy, mean length and truncated fraction on held-out problems, and a
# few of the student's temperature-1 answers.

# %%
probe = task.problems(S.probe_problems, seed=1, split="test")
evals = {"student": X.evaluate_model(M.student, tok, task, probe),
         **{name: X.evaluate_model(m.teacher, tok, task, probe) for name, m in models.items()}}
start = evals["student"]
print(pd.DataFrame(evals).T)
pd.DataFrame(X.rollout_table(M.student, tok, task, probe[:8], temperature=1.0, seed=0))[
    ["prompt", "completion", "length", "truncated", "correct"]]

# %% [markdown]
# ## 2 · Does the teacher reward a loop?
#
# After `count + d` copies the next token decides: `,` (another copy) or `|` (stop). At d = 0 stopping
# is right, at d = −1 another copy is; at d > 0 the prefix is already a loop. Where a teacher puts *more*
# probability on another copy than the student does, every further copy earns a positive reward
# `log q − log p`, and OPD teaches the loop.

# %%
p_copy = {"student": another_copy_probability(M.student, tok, probe),
          **{name: another_copy_probability(m.teacher, tok, probe) for name, m in models.items()}}
P.show(P.grouped_bars({name: {f"count{d:+d}": v for d, v in by.items()} for name, by in p_copy.items()},
                      "P(another copy) after count + d copies", "probability", y_range=(0, 1.15)))
claims.check("The test's condition: gold data is consistent with both teachers (each writes every gold answer of the "
             "probe problems greedily, goes on before the count and stops at it)",
             all(evals[t]["eval/accuracy"] == 1.0 and p_copy[t][-1] > 0.95 and p_copy[t][0] < 0.05 for t in TEACHERS),
             {t: {"greedy accuracy": evals[t]["eval/accuracy"], "P(another copy) at count-1, count+0":
                  [p_copy[t][-1], p_copy[t][0]]} for t in TEACHERS})
claims.check("The test's condition: the student over-counts (P(another copy) at count+0 >= 0.2) and is below its teachers",
             p_copy["student"][0] >= 0.2 and start["eval/accuracy"] < 0.8,
             {"P(another copy) at count+0": p_copy["student"][0], "greedy accuracy": start["eval/accuracy"]})
pd.DataFrame(p_copy)

# %% [markdown]
# ## 3 · OPD from each teacher, and Stable-OPD, three seeds each
#
# Sampled-token OPD (the default objective: per-token reward, token mean) from the same student, at the
# presets' rate, with the same seeds: from the counting teacher; from the looping teacher; and from the
# looping teacher with Stable-OPD at the `stable_opd` preset's weights (KL 0.01 to the initial student,
# gold SFT 0.1) and at heavier ones (KL 1.0, gold SFT 1.0: Luo et al. publish no coefficients), and each
# of the heavier weighting's terms alone (measured and tabled, not claimed: which guardrail does the work). The
# dashboard shows seed 0; the trainer's early warning (truncation ≥ 0.5, repetition ≥ 0.3, or a jump) is
# on in every run.

# %%
dash = TrainingDashboard(mode=mode)
log = X.RecordLog(keep_samples_every=1)
# the student on the runs' own held-out problems (the trainer evaluates on these), the curves' step-0 point
start_eval = X.evaluate_model(M.student, tok, task, X.held_out(task, S.eval_problems), sampled=False)
start_acc = start_eval["eval/accuracy"]
variants = {"OPD, counting teacher": ("counting teacher", "opd", {}),
            "OPD, looping teacher": ("looping teacher", "opd", {}),
            "Stable-OPD (0.01, 0.1), looping teacher": ("looping teacher", "stable_opd", {}),
            "Stable-OPD (1.0, 1.0), looping teacher": ("looping teacher", "stable_opd", dict(kl_coef=1.0, sft_coef=1.0)),
            # each of the heavier weighting's two terms alone: which guardrail does the work?
            "KL 1.0 only, looping teacher": ("looping teacher", "stable_opd", dict(kl_coef=1.0, sft_coef=0.0)),
            "gold SFT 1.0 only, looping teacher": ("looping teacher", "stable_opd", dict(kl_coef=0.0, sft_coef=1.0))}
runs = {}
for seed in S.seeds:
    for name, (teacher, method, extra) in variants.items():
        run = f"{name} · seed {seed}"
        m = models[teacher]
        runs[run] = X.train(method, [dash] if seed == S.seeds[0] else [], log=log, seed=seed, name=run, task=task,
                            student=m.student, teacher=m.teacher, tokenizer=tok, student_name=STUDENT,
                            teacher_name=TEACHERS[teacher], steps=S.steps, batch_size=S.batch_size, lr=LR,
                            eval_every=max(1, S.steps // 5), eval_problems=S.eval_problems, eval_sampled=False,
                            num_samples=S.batch_size, baseline=start_eval, device=device, **extra)
saved = dash.save(out / "dashboard.html", png=False)

# %%
rows = {r: {**truncation_summary(log.records[r]), "collapsed": truncation_collapse(log.records[r]),
            "first truncation warning": next((k for k, w in warnings_of(log.records[r]) if "truncation" in w), None)}
        for r in runs}


def runs_of(name):
    return [f"{name} · seed {s}" for s in S.seeds]


def collapsed_in(name):
    return [r.split(" · ")[1] for r in runs_of(name) if rows[r]["collapsed"]]


def final_acc(name):
    return [rows[r]["final eval accuracy"] for r in runs_of(name)]


freq = {name: {"collapsed": len(collapsed_in(name)), "seeds": len(S.seeds)} for name in variants}
s0 = S.seeds[0]
for key, title, unit in (("rollout/truncated_frac", f"Truncated fraction of the rollouts, seed {s0}", "fraction"),
                         ("rollout/mean_length", f"Mean rollout length, seed {s0}", "tokens")):
    P.show(P.metric_curves({r: log.series(r, key) for r in runs if r.endswith(f"seed {s0}")}, title, unit))
print(pd.DataFrame(freq).T)
pd.DataFrame(rows).T[["collapsed", "max truncated frac", "first step >= 0.9 truncated", "final truncated frac (last 10 steps)",
                      "first truncation warning", "max repetition rate", "final eval accuracy"]]

# %% [markdown]
# Luo et al.'s repetition rate (a zlib test on the last 48 characters) cannot tell a loop from a right
# answer on this task: a correct `abc,abc,…` answer of more than 48 characters compresses like a loop,
# so the repetition column and the trainer's repetition alarm fire from the counting teacher's runs too.
# Here the truncated fraction, and the loop tokens of section 4, carry the signal.

# %% [markdown]
# ## 4 · Repeated vs normal tokens, before anything collapses
#
# Luo et al.'s split, task-aware: a token is *repeated* when it belongs to a copy written after the
# asked-for count (`Repeat.loop_tokens`; an n-gram test would flag every correct answer, which repeats
# its word by design). Mean teacher reward `log q − log p` on each kind, over every rollout of the first
# 10% of steps of each plain OPD run (fewer if its truncated fraction reached 0.9 sooner).

# %%
def early_samples(run):
    jump = rows[run]["first step >= 0.9 truncated"]
    last = min(EARLY, jump - 1) if jump else EARLY
    return [s for step, batch in log.samples[run].items() if step <= last for s in batch]


split = {r: advantage_by_marker_samples(early_samples(r), task.loop_tokens) for r in runs if r.startswith("OPD")}
P.show(P.grouped_bars({kind: {r.replace("OPD, ", ""): split[r][key] for r in split}
                       for kind, key in (("repeated tokens", "marked"), ("normal tokens", "normal"))},
                      "Mean teacher reward log q − log p before the collapse", "nats per token"))
pd.DataFrame(split).T

# %% [markdown]
# ## What this run showed

# %%
loop_d = {t: {f"P(another copy) at count{d:+d}, teacher / student": [p_copy[t][d], p_copy["student"][d]]
              for d in (1, 2, 4)} for t in TEACHERS}
# the looping teacher was fine-tuned to go on copying: that it does is a check of how it was made, not evidence
claims.check("The looping teacher favours the loop (made so): past the count it gives another copy a higher "
             "probability than the student does", all(p_copy["looping teacher"][d] > p_copy["student"][d]
                                                     for d in (1, 2, 4)), loop_d["looping teacher"])
claims("A teacher trained only on gold answers (the counting teacher) favours the loop: past the count it gives another "
       "copy a higher probability than the student does (the condition for a loop to earn positive reward)",
       all(p_copy["counting teacher"][d] > p_copy["student"][d] for d in (1, 2, 4)),
       {**loop_d["counting teacher"], "P(another copy) at count+0 (stop is right), teacher": p_copy["counting teacher"][0]})
for teacher in TEACHERS:
    opd = runs_of(f"OPD, {teacher}")
    ok = all(split[r]["marked"] is not None and split[r]["normal"] is not None for r in opd)
    claims(f"Before any collapse, repeated tokens get a higher mean teacher reward than normal tokens in every seed "
           f"({teacher}; Luo et al.: about -0.03 against -0.16)",
           all(split[r]["marked"] > split[r]["normal"] for r in opd) if ok else None,
           {r.split(" · ")[1]: [split[r]["marked"], split[r]["normal"]] for r in opd}, source="Luo et al. 2604.08527")

# %%
for teacher in TEACHERS:
    name = f"OPD, {teacher}"
    claims(f"Sampled-token OPD from the {teacher} ends in a truncation collapse (truncated fraction >= 0.9 within 30 "
           "steps, still >= 0.75 over the last 10) in most seeds, and accuracy falls",
           freq[name]["collapsed"] > len(S.seeds) / 2 and all(a < start_acc for a in final_acc(name)),
           {"collapsed": freq[name]["collapsed"], "seeds": len(S.seeds),
            "max truncated frac": [rows[r]["max truncated frac"] for r in runs_of(name)],
            "final accuracy": final_acc(name), "start accuracy": start_acc},
           source="Luo et al. 2604.08527")
collapsed = collapsed_in("OPD, looping teacher")
for name in ("Stable-OPD (0.01, 0.1), looping teacher", "Stable-OPD (1.0, 1.0), looping teacher"):
    label = name.split(", looping")[0]
    claims(f"{label} prevents the collapse in every seed where OPD collapsed",
           all(not rows[f"{name} · {s}"]["collapsed"] for s in collapsed) if collapsed else None,
           {"OPD collapsed in": collapsed or "no seed", "Stable-OPD collapsed in": collapsed_in(name) or "no seed",
            "max truncated frac": [rows[r]["max truncated frac"] for r in runs_of(name)]},
           source="Luo et al. 2604.08527")
    base = final_acc("OPD, looping teacher")
    claims(f"{label} ends more accurate than OPD in every seed (Luo et al.: 36.1 vs 28.9 at 1.5B)",
           all(a > b for a, b in zip(final_acc(name), base)),
           {"Stable-OPD": final_acc(name), "OPD": base, "start": start_acc}, source="Luo et al. 2604.08527")
acc_table = pd.DataFrame({name: final_acc(name) for name in variants}, index=[f"seed {s}" for s in S.seeds]).T
print(acc_table.assign(mean=acc_table.mean(axis=1), std=acc_table.std(axis=1, ddof=0), start=start_acc))
print("\n" + claims.summary())

# %% [markdown]
# **What it means.** Read the claims, not this paragraph. The mechanism lives in the *teacher at the
# student's loop states*, a place gold data never visits, so gold-data quality cannot settle it. Where
# the teacher expects the answer to end, the extra copies carry the most negative reward of a rollout
# and OPD pushes the student out of its loops; where it expects more of a repeated unit, as a language
# model does, each extra copy is paid for, and a student that cannot count precisely can learn to go on
# everywhere. Section 2 measures which teacher is which; sections 3 and 4 whether the runaway and Luo et
# al.'s reward split followed. Gold SFT and a KL anchor pull against the runaway; how hard they must pull
# is what the two Stable-OPD weightings measure, and the single-term rows whether either does it alone.
#
# **Try next.**
# * `lr=1e-3`: how much sooner does the collapse come, and do the heavier Stable-OPD weights still hold?
# * KL 3.0 or gold SFT 3.0 alone (the `extra` dict of a variant): can one guardrail, pulled harder, do both jobs?
# * `vopd=True` on the looping teacher: does a zero-mean advantage help when the reward itself favours the loop?
# * `warn_truncation=0.3, on_warning="stop"`: the trainer stops itself at the start of the runaway.

# %%
results = write_results(out, "12_length_inflation", size, started=t_start, device=str(M.device), claims=claims,
                        numbers={"start": start, "start_on_the_runs_eval_problems": start_acc, "teachers": {n: evals[n] for n in TEACHERS},
                                 "p_another_copy": {n: {str(d): v for d, v in by.items()} for n, by in p_copy.items()},
                                 "collapse_frequency": freq, "runs": rows, "reward_split_before_collapse": split,
                                 "final_accuracy": {name: final_acc(name) for name in variants}},
                        config={"sizes": vars(S), "lr": LR, "early_steps": EARLY, "teachers": TEACHERS,
                                "student": STUDENT, "runs": {n: t.cfg.to_dict() for n, t in runs.items()}})
print(f"figures: {saved['html']}\nresults: {results}")
