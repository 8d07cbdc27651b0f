"""Matched-cost comparison of post-training methods from one starting student, over seeds.

    rows = compare()                      # the default protocol, 3 seeds: one row per method + the target
    python -m workbench compare --json    # the same, one JSON line per method, then a line with the target

Protocols (`protocol=`):
  * "plateau" (default, the literature's) — the student is first SFT-trained on the teacher's traces
    until held-out accuracy stops improving (`workbench/plateau.py`, zoo `<task>-student-sft`); then
    continued SFT, GRPO and OPD run from that checkpoint, each with a cost ledger. This is how
    Thinking Machines' on-policy distillation post and the Qwen3 report compare them. Continued SFT
    continues the plateau run: it trains on traces of the teacher that run used (`sft_source`), which
    for `addition-orders` is the addition teacher, not the many-order teacher OPD learns from.
  * "weak" — from the shipped weak student (`<task>-student`), before any SFT on the task's own
    distribution: a different question (what gets a student off the ground), kept because it teaches
    something about GRPO's sparse credit.

"OPD" is the canonical sampled-token estimator (`loss="sampled_token"`, the `opd` preset); named
variants (`opd_full`: full-vocabulary reverse KL) can be added to `methods`.

Budgets and target. Every method trains until it has processed `budget_tokens` student tokens (the
trainer's `cost/student_tokens`: tokens it generated or was trained on, prompts included), so the
step count follows the tokens actually processed. OPD variants run first; every non-OPD method
then gets at least `rival_factor` x the student tokens OPD (`opd`) needed to reach the target (the
most any seed needed; the plain budget when no OPD seed reached it), so a "never" is a measured
never within that multiple. The target is `target_frac` x the teacher's
greedy accuracy on the same held-out test problems (default 0.99: the shipped teacher scores 1.000,
and a 256-problem evaluation resolves about one point near the top). Every number is a mean over `seeds` with its
standard deviation; a method's `*_to_target` is null unless every seed reached the target
(`seeds_reached` says how many did). A run's final accuracy is the mean of its last three evaluations.
Held-out evaluations come every `eval_sequences` training sequences whatever a method's batch size.
Learning rates (and batch sizes) are `PROTOCOL_SETTINGS`, chosen on the `val` split (`sweep`), never
on the reported `test`.
"""
from __future__ import annotations

import math
import statistics
from pathlib import Path

from . import zoo
from .config import PRESETS
from .experiments import RecordLog, cost_table, evaluate_model, held_out, train
from .experiments import step_cap
from .models import pick_device
from .pairs import check, load_named_pair, load_teacher_model
from .tasks import get_task

PROTOCOLS = ("plateau", "weak")
# per (task, starting student), each method's settings chosen by `sweep` on the val split (docs/measurements.md); a
# method, or a student, not listed uses its preset's. Precedence: these < options common to all methods <
# `method_overrides`.
PROTOCOL_SETTINGS = {
    # 2026-12-07, one seed, 300k student tokens each, val accuracy = mean of the last three evaluations
    # (start 0.938): opd 3e-5/64 0.934, 1e-4/64 0.919, 1e-4/256 0.927, 3e-4/256 0.909; opd_full 1e-4 0.923,
    # 3e-4 0.919; sft 3e-4 0.928, 1e-3 0.839; grpo 1e-5 0.938, 3e-5 0.934
    ("addition", "addition-student-sft"): {"opd": {"lr": 3e-5}, "opd_full": {"lr": 1e-4}, "sft": {"lr": 3e-4},
                                           "grpo": {"lr": 1e-5}},
    # the weak protocol keeps the presets' rates (swept at 1.2M tokens from the weak student, docs/measurements.md)
    ("addition", "addition-student"): {},
    # 2026-12-07, one seed, 300k student tokens, val (start 0.898; this student's greedy accuracy swings by several
    # points between nearby checkpoints, docs/testbed.md): opd 3e-5/64 0.874, 1e-4/64 0.859, 1e-4/256 0.884,
    # 3e-4/256 0.849; opd_full 1e-4 0.952, 3e-4 0.975, 1e-3 0.896; sft 1e-4 0.893, 3e-4 0.892, 1e-3 0.853;
    # grpo 1e-5 0.863, 3e-5 0.846, 1e-4 0.842
    # 2026-12-07, one seed, 300k student tokens, val (start 0.949): opd 3e-5/64 0.957, 1e-4/64 0.949, 1e-4/256
    # 0.948, 3e-4/256 0.917; opd_full 1e-4 0.951, 3e-4 0.943, 1e-3 0.858; sft (addition-teacher traces) 1e-4 0.956,
    # 3e-4 0.952, 1e-3 0.927; grpo 1e-5 0.947, 3e-5 0.954, 1e-4 0.935
    ("addition-orders", "addition-student-sft"): {"opd": {"lr": 3e-5}, "opd_full": {"lr": 1e-4}, "sft": {"lr": 1e-4},
                                                  "grpo": {"lr": 3e-5}},
    # notebook 09's starting point (its mode-seeking test needs a student SFT'd on the many-order traces)
    ("addition-orders", "addition-orders-student-sft"): {"opd": {"lr": 1e-4, "batch_size": 256},
                                                         "opd_full": {"lr": 3e-4}, "sft": {"lr": 1e-4},
                                                         "grpo": {"lr": 1e-5}},
}
# the testbed the comparisons run on by default, chosen by the four conditions of docs/testbed.md (all measured to
# hold for this task's teacher and plateau student; `addition`'s teacher is near-deterministic)
DEFAULT_TASK = "addition-orders"
DEFAULT_METHODS = ("opd", "sft", "grpo")
DEFAULT_SEEDS = (0, 1, 2)
DEFAULT_BUDGET = 400_000
RIVAL_FACTOR = 5
TARGET_FRAC = 0.99    # 99% of the teacher: its 100% less about one standard error of a 256-problem evaluation
OPD_METHODS = ("opd", "opd_full", "exopd", "stable_opd", "gkd")


def start_student(task: str, protocol: str) -> str:
    """The zoo entry a protocol starts from (a checkpoint directory may be passed instead as `student=`)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose one of {sorted(PROTOCOLS)}")
    if protocol == "plateau":
        return zoo.PLATEAU_STUDENTS.get(task, f"{task}-student-sft")
    return zoo.default_pair(task)[1]


def sft_source(student, teacher):
    """Whose traces continued SFT (and the rest of the off-policy corner) trains on: the teacher the student's
    own plateau run used (its zoo recipe), so that continued SFT continues that run, as in Thinking Machines'
    comparison (more of the same SFT data); the protocol's teacher for any other student (and for models passed
    as objects)."""
    if isinstance(student, str) and isinstance(teacher, (str, Path)):
        recipe = zoo.RECIPES.get(student)
        if isinstance(recipe, zoo.PlateauRecipe):
            return recipe.teacher
    return teacher


def _mean_std(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return None, None
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def _all_or_none(xs):
    return None if any(x is None for x in xs) else statistics.fmean(xs)


def compare(task=DEFAULT_TASK, protocol: str = "plateau", methods=DEFAULT_METHODS, seeds=DEFAULT_SEEDS,
            budget_tokens: int = DEFAULT_BUDGET, rival_factor: float = RIVAL_FACTOR,
            target_frac: float = TARGET_FRAC, teacher=None, student=None, tokenizer=None,
            eval_sequences: int = 640, eval_problems: int = 256, eval_split: str = "test", device: str = "auto",
            out: str | None = None,
            method_overrides: dict | None = None, callbacks=(), log: RecordLog | None = None, progress=print,
            **common) -> dict:
    """Run `methods` x `seeds` from the protocol's student; return {"rows", "target_accuracy", "runs", "log", ...}.

    `task`: a name, an import path `module:Class` or a Task object. `teacher`/`student`: zoo names or checkpoint
    directories (default: the task's zoo pair and the protocol's student), or model objects (then pass their
    `tokenizer`). Every run trains its own deep copy of the student, so the object passed in is never changed.
    `out`: a run directory per run, `out/<method>/seed<k>` (each records the task, so it can be resumed).

    `rows`: one dict per method with the JSON contract of `python -m workbench compare --json`
    (method, seeds, final_accuracy_mean/std, student_tokens_to_target, flops_to_target,
    wall_s_to_target, ...). `runs`: one cost-table row per (method, seed). `log`: the RecordLog of
    every run (curves for figures).
    """
    methods = list(methods)
    if not methods:
        raise ValueError("methods is empty; name at least one method, e.g. ('opd', 'sft', 'grpo')")
    if not seeds:
        raise ValueError("seeds is empty; pass at least one seed, e.g. (0, 1, 2)")
    if budget_tokens <= 0 or rival_factor < 1 or not 0 < target_frac <= 1:
        raise ValueError(f"need budget_tokens > 0, rival_factor >= 1 and 0 < target_frac <= 1; got "
                         f"{budget_tokens}, {rival_factor}, {target_frac}")
    task_obj = get_task(task)
    objects = [m for m in (teacher, student) if m is not None and not isinstance(m, (str, Path))]
    if objects and tokenizer is None:
        raise ValueError("a teacher or student passed as a model object needs its tokenizer: compare(..., "
                         "tokenizer=tok)")
    if teacher is None or student is None:
        t_default = zoo.default_pair(task_obj.name)[0] if teacher is None else None
        s_default = start_student(task_obj.name, protocol) if student is None else None
        teacher, student = teacher if teacher is not None else t_default, student if student is not None else s_default
    t_name = str(teacher) if isinstance(teacher, (str, Path)) else "<object>"
    s_name = str(student) if isinstance(student, (str, Path)) else "<object>"
    dev = pick_device(device)
    if objects:
        if isinstance(teacher, (str, Path)) or isinstance(student, (str, Path)):
            raise ValueError("pass the teacher and the student both as names/paths or both as model objects")
        t_model, s_model, tok = teacher.to(dev).eval(), student.to(dev), tokenizer
    else:
        pair = load_named_pair(t_name, s_name, str(dev), alignment=common.get("alignment", "exact"),
                               dtype=common.get("dtype"), teacher_device=common.get("teacher_device"))
        t_model, s_model, tok = pair.teacher, pair.student, pair.tokenizer
    # the off-policy corner (methods trained on teacher-written traces: sft, filtered_sft) continues the plateau run
    off_policy = {m for m in methods if PRESETS.get(m, {}).get("source") == "teacher"}
    sft_name = str(sft_source(student, teacher)) if off_policy and t_name != "<object>" else t_name
    sft_model = t_model
    if sft_name != t_name:      # a second teacher: checked against the student, loaded alone (the student is loaded)
        check(sft_name, s_name, alignment=common.get("alignment", "exact")).raise_if_errors()
        sft_model = load_teacher_model(sft_name, dev, dtype=common.get("dtype"),
                                       teacher_device=common.get("teacher_device"),
                                       alignment=common.get("alignment", "exact"), student_config=s_model.config)[0]
    problems = held_out(task_obj, eval_problems, split=eval_split)
    teacher_eval = evaluate_model(t_model, tok, task_obj, problems, sampled=False)
    start_eval = evaluate_model(s_model, tok, task_obj, problems)
    target = target_frac * teacher_eval["eval/accuracy"]
    log = log if log is not None else RecordLog()
    overrides = method_overrides or {}
    # OPD variants first: the rivals' budgets are set from what OPD needed
    order = sorted(methods, key=lambda m: m not in OPD_METHODS)
    budgets, runs = {}, []
    for m in order:
        need = [r["student_tokens_to_target"] for r in runs
                if r["method"] == "opd" and r["student_tokens_to_target"] is not None]
        budget = budget_tokens
        if m not in OPD_METHODS and need:
            budget = max(budget_tokens, math.ceil(rival_factor * max(need)))
        budgets[m] = budget
        for seed in seeds:
            name = f"{m}/seed{seed}"
            o = {"seed": seed, "eval_problems": eval_problems,
                 "eval_split": eval_split, **PROTOCOL_SETTINGS.get((task_obj.name, s_name), {}).get(m, {}),
                 "eval_sampled": False, "device": device, "name": name, **common, **overrides.get(m, {})}
            batch = o.get("batch_size", 64)
            o.setdefault("eval_every", max(1, eval_sequences // batch))   # the same token resolution at any batch
            o.setdefault("steps", step_cap(task_obj, budget, batch))
            if out:
                o["out"] = str(Path(out) / m / f"seed{seed}")
            if progress:
                progress(f"compare [{protocol}] {name}: budget {budget:,} student tokens")
            t_run = sft_model if m in off_policy else t_model
            names = ({} if t_name == "<object>" else
                     {"teacher_name": sft_name if m in off_policy else t_name, "student_name": s_name})
            tr = train(m, callbacks, student=s_model, teacher=t_run, tokenizer=tok, log=log, task=task_obj,
                       baseline=start_eval, budget_tokens=budget, **names, **o)
            row = cost_table(log, [name], teacher_eval["eval/accuracy"], target_frac)[0]
            runs.append({**row, "method": m, "seed": seed, "lr": tr.cfg.lr, "budget_tokens": budget})
            if progress:
                hit = row["student_tokens_to_target"]
                progress(f"  {name}: final {row['last3_accuracy']:.3f}, target {target:.3f} "
                         f"{'reached at ' + format(hit, ',') + ' tokens' if hit is not None else 'not reached'}, "
                         f"{row['train_s']:.0f}s training")
    rows = []
    for m in methods:
        rs = [r for r in runs if r["method"] == m]
        mean, std = _mean_std([r["last3_accuracy"] for r in rs])
        rows.append({"method": m, "seeds": [r["seed"] for r in rs], "lr": rs[0]["lr"],
                     "budget_tokens": budgets[m],
                     "final_accuracy_mean": mean, "final_accuracy_std": std,
                     "final_accuracy_by_seed": [r["last3_accuracy"] for r in rs],
                     "seeds_reached": sum(r["student_tokens_to_target"] is not None for r in rs),
                     "student_tokens_to_target": _all_or_none([r["student_tokens_to_target"] for r in rs]),
                     "flops_to_target": _all_or_none([r["flops_to_target"] for r in rs]),
                     "wall_s_to_target": _all_or_none([r["train_s_to_target"] for r in rs]),
                     "student_tokens_to_target_by_seed": [r["student_tokens_to_target"] for r in rs],
                     "flops_to_target_by_seed": [r["flops_to_target"] for r in rs],
                     "target_accuracy": target})
    return {"rows": rows, "runs": runs, "target_accuracy": target, "target_frac": target_frac,
            "eval_problems": eval_problems,
            "teacher_accuracy": teacher_eval["eval/accuracy"], "start_accuracy": start_eval["eval/accuracy"],
            "start_eval": start_eval, "protocol": protocol, "teacher": t_name, "student": s_name,
            "sft_teacher": sft_name, "log": log}


# a small grid per method; chosen on the `val` split (not the reported `test`). An entry is a learning rate or a
# dict of overrides (e.g. OPD's batch size: the sampled-token estimator's few informative tokens per step make
# its gradient noisy at small batches, docs/testbed.md)
DEFAULT_SWEEP = {"sft": (1e-4, 3e-4, 1e-3), "grpo": (1e-5, 3e-5, 1e-4),
                 "opd": (3e-5, 1e-4, {"lr": 1e-4, "batch_size": 256}, {"lr": 3e-4, "batch_size": 256}),
                 "opd_full": (1e-4, 3e-4, 1e-3)}


def sweep(task: str = DEFAULT_TASK, protocol: str = "plateau", grid: dict | None = None, seeds=(0,),
          budget_tokens: int = DEFAULT_BUDGET, progress=print, **common) -> tuple[list[dict], dict]:
    """Each method at each setting of `grid`, evaluated on the `val` split; returns (rows, best settings per method).

    "Best" is the highest final `val` accuracy (mean of the last three evaluations, over `seeds`); the best
    settings are dicts of overrides, ready for `PROTOCOL_SETTINGS`.
    """
    grid = grid or DEFAULT_SWEEP
    rows, best, best_acc = [], {}, {}
    for method, points in grid.items():
        for point in points:
            o = dict(point) if isinstance(point, dict) else {"lr": point}
            res = compare(task, protocol, methods=(method,), seeds=seeds, budget_tokens=budget_tokens,
                          method_overrides={method: o}, eval_split="val", progress=progress, **common)
            r = res["rows"][0]
            rows.append({"method": method, **o, "val_accuracy_mean": r["final_accuracy_mean"],
                         "val_accuracy_std": r["final_accuracy_std"], "start_val_accuracy": res["start_accuracy"],
                         "student_tokens_to_target": r["student_tokens_to_target"]})
            if method not in best or r["final_accuracy_mean"] > best_acc[method]:     # ties: the first point
                best[method], best_acc[method] = o, r["final_accuracy_mean"]
    return rows, best


# ---------------------------------------------------------------------------------------------
# the headline: a table, verdicts whose rules are the claims' words, and what results.json keeps
# ---------------------------------------------------------------------------------------------
def standard_error(p: float, n: int) -> float:
    """One standard error of an accuracy p measured on n problems."""
    return math.sqrt(max(p * (1 - p), 1.0 / n) / n)


def headline_table(res: dict) -> list[dict]:
    """One row per method for the notebook and docs/results.md (means over seeds with their spread)."""
    out = []
    for r in res["rows"]:
        n = len(r["seeds"])
        out.append({"method": r["method"], "lr": r["lr"], "budget (student tokens)": r["budget_tokens"],
                    "final accuracy (mean ± std)": f"{r['final_accuracy_mean']:.3f} ± {r['final_accuracy_std']:.3f}",
                    "seeds at target": f"{r['seeds_reached']}/{n}",
                    "student tokens to target": r["student_tokens_to_target"],
                    "FLOPs to target": r["flops_to_target"], "train s to target": r["wall_s_to_target"]})
    return out


def _per_seed_ratio(res, rival: str, key: str, total_key: str) -> tuple[dict | None, dict]:
    """Per seed: rival's cost to target / OPD's (a rival that never got there: its whole spend, a lower bound).

    Returns (ratios of the seeds where the rival reached the target, lower bounds of those where it did not);
    (None, {}) when OPD missed the target in some seed, so no ratio is defined."""
    opd = {r["seed"]: r for r in res["runs"] if r["method"] == "opd"}
    riv = {r["seed"]: r for r in res["runs"] if r["method"] == rival}
    ratios, bounds = {}, {}
    for seed, o in opd.items():
        if o[key] is None or seed not in riv:
            return None, {}
        x = riv[seed]
        if x[key] is not None:
            ratios[seed] = x[key] / max(o[key], 1)
        else:
            bounds[seed] = x[total_key] / max(o[key], 1)     # never: at least its whole spend
    return ratios, bounds


def verdicts(res: dict) -> list[dict]:
    """The literature's claims about this comparison, each with a rule that says what its words say."""
    out = []
    runs = res["runs"]
    start, target = res["start_accuracy"], res["target_accuracy"]
    eval_n = res.get("eval_problems", 256)
    se = standard_error(start, eval_n)
    opd = [r for r in runs if r["method"] == "opd"]
    if opd:
        finals = {r["seed"]: r["last3_accuracy"] for r in opd}
        frm = {"plateau": "From the plateaued student", "weak": "From the weak zoo student"}[res.get("protocol", "plateau")]
        out.append({"text": f"{frm}, OPD raises held-out accuracy by more than one standard error of the "
                            "evaluation in every seed",
                    "holds": all(f > start + se for f in finals.values()),
                    "evidence": {"start": start, "one SE": se, **{f"seed {s}": f for s, f in finals.items()}}})
        out.append({"text": "OPD reaches the target accuracy in every seed within its budget",
                    "holds": all(r["student_tokens_to_target"] is not None for r in opd),
                    "evidence": {"target": target,
                                 **{f"seed {r['seed']}": r["student_tokens_to_target"] or "never" for r in opd}}})
    for rival, key, total, factor, unit, src in (
            ("grpo", "student_tokens_to_target", "student_tokens", 5, "student tokens",
             "Qwen3 report, Table 21 (RL 17,920 vs OPD 1,800 GPU-hours); essay"),
            ("sft", "flops_to_target", "flops", 3, "FLOPs",
             "Thinking Machines (2025): 9-30x less compute than SFT")):
        if not opd or not any(r["method"] == rival for r in runs):
            continue
        ratios, bounds = _per_seed_ratio(res, rival, key, total)
        text = (f"OPD reaches the target with at least {factor}x fewer {unit} than "
                f"{'GRPO' if rival == 'grpo' else 'continued SFT'}, in every seed")
        if ratios is None:
            holds, ev = None, {"OPD": "did not reach the target in every seed"}
        else:
            known = list(ratios.values()) + list(bounds.values())
            if all(v >= factor for v in known):
                holds = True
            elif any(v < factor for v in ratios.values()):
                holds = False
            else:
                holds = None        # a rival that never got there, with a budget too small to bound the ratio
            ev = {**{f"seed {s} ratio": v for s, v in ratios.items()},
                  **{f"seed {s} ratio (lower bound: {rival} never)": v for s, v in bounds.items()}}
        out.append({"text": text, "holds": holds, "evidence": ev, "source": src})
    return out


def results_numbers(res: dict, table: list[dict]) -> dict:
    """What a notebook keeps of a comparison in results.json: the headline table, per-seed runs, every curve."""
    return {"headline": {row["method"]: {k: v for k, v in row.items() if k != "method"} for row in table},
            "protocol": res["protocol"], "teacher": res["teacher"], "student": res["student"],
            "continued SFT's teacher": res.get("sft_teacher", res["teacher"]),
            "teacher_accuracy": res["teacher_accuracy"], "start_accuracy": res["start_accuracy"],
            "target_accuracy": res["target_accuracy"], "target_frac": res["target_frac"],
            # where no method reaches the target there is no cost ratio to report; how far each one moved is the
            # measured part of the diagnosis: (mean final accuracy - start) in standard errors of the evaluation
            "gain over the start, in standard errors": {
                r["method"]: None if r["final_accuracy_mean"] is None else
                (r["final_accuracy_mean"] - res["start_accuracy"]) / standard_error(res["start_accuracy"],
                                                                                    res["eval_problems"])
                for r in res["rows"]},
            # bulk data ("_" keys are kept in results.json but not rendered into docs/results.md)
            "_rows": res["rows"], "_runs": res["runs"], "_curves": res["log"].evals}


def results_config(res: dict, sizes) -> dict:
    return {"sizes": vars(sizes), "protocol": res["protocol"], "lrs": {r["method"]: r["lr"] for r in res["rows"]}}
