"""The fair tests of the literature's other claims (notebook 09): which testbed, the probes run on each
trained student, and the verdict rules, each saying what its claim's words say.

The probes are in their own modules (`modes`: pass@k and scratchpad orders; `injection`: mistakes forced
into the prefix; `analysis.teacher_signal_by_position` and `analysis.estimator_gradients`); this module
only ties them to the runs of a comparison and turns their numbers into verdicts:

    task, note = testbed_task("addition-orders", size)
    res = compare.compare(task, "plateau", methods=("sft", "opd", "grpo"), out=dir, overwrite=True, ...)
    students = trained_students(res, dir, device)           # {(method, seed): model}
    probes = {k: probe_student(m, ...) for k, m in students.items()}
    for v in exposure_verdicts(probes) + mode_verdicts(probes, start_probe): claims(v["text"], v["holds"], ...)

A verdict is {"text", "holds" (True / False / None: could not be measured), "evidence", "source"}.
"""
from __future__ import annotations

from pathlib import Path

from . import zoo
from .metrics import pool_position_profiles
from .injection import exposure_profile, greedy_continuations
from .modes import mode_profile
from .compare import start_student
from .pairs import load_checkpoint
from .runs import latest_checkpoint

FALLBACK_TASK = "addition"      # the shipped pair: what a smoke run uses while another task's pair is not built
GKD = "GKD (Agarwal et al. 2024): on-policy data removes the train-inference mismatch of SFT"
MODE = "reverse KL is mode-seeking (Thinking Machines 2025; Gu et al., MiniLLM 2024)"
HORIZON = "Li et al. (arXiv 2604.13016), Fu et al. (arXiv 2603.25562)"
EXOPD = "Yang et al., G-OPD / ExOPD (arXiv 2602.12125)"
VARIANCE = "Fu et al. (arXiv 2603.25562); vOPD (arXiv 2605.07865)"


def _built(name: str) -> bool:
    try:
        zoo.path(name)
        return True
    except (FileNotFoundError, ValueError):
        return False


def testbed_task(task: str, size: str, student: str | None = None) -> tuple[str, str | None]:
    """(task to run, note or None). At size "smoke" a task whose zoo teacher or plateau student is not built
    falls back to `FALLBACK_TASK` (the note says so); at any other size that is an error naming the build."""
    need = [zoo.default_pair(task)[0], student or start_student(task, "plateau")]
    missing = [n for n in need if not _built(n)]
    if not missing:
        return task, None
    if size == "smoke":
        return FALLBACK_TASK, (f"the {task!r} checkpoints {missing} are not built: this smoke run uses the "
                               f"{FALLBACK_TASK!r} pair instead")
    raise FileNotFoundError(f"the {task!r} checkpoints {missing} are not built; build them with "
                            f"`python -m workbench zoo build --only {' '.join(missing)}`")


def trained_students(res: dict, out, device: str) -> dict:
    """{(method, seed): the student at the end of that run}, loaded from the checkpoints `compare(out=out)` wrote."""
    students = {}
    for run in res["runs"]:
        ck = latest_checkpoint(Path(out) / run["method"] / f"seed{run['seed']}")
        if ck is None:
            raise FileNotFoundError(f"no checkpoint under {out}/{run['method']}/seed{run['seed']}; run compare with "
                                    "out= set so that each run saves its student")
        students[(run["method"], run["seed"])] = load_checkpoint("student", str(ck), device, trainable=False)[0].eval()
    return students


def probe_student(model, tokenizer, task, problems, *, n: int = 16, seed: int = 0, kind: str = "carry") -> dict:
    """The per-student numbers the claims read: `modes` (pass@k, orders, entropy: `modes.mode_profile`) and
    `exposure` (`injection.exposure_profile`, greedy continuations after an injected mistake)."""
    return {"modes": mode_profile(model, tokenizer, task, problems, n=n, seed=seed),
            "exposure": exposure_profile(greedy_continuations(model, tokenizer, task), task, problems, kind=kind,
                                         seed=seed)}


def signal_over_training(log, prefix: str = "opd/", parts: int = 2) -> dict:
    """The teacher's per-position signal through training: the `teacher/by_position` profiles the trainer
    recorded (evaluation steps) of every run named `prefix...` in `log` (a RecordLog), split into `parts`
    consecutive stretches of each run and pooled per stretch over runs. Returns {"part 1 of 2": profile, ...}."""
    stretches = [[] for _ in range(parts)]
    for run, recs in log.records.items():
        if not run.startswith(prefix):
            continue
        profs = [r["teacher/by_position"] for r in recs if r.get("teacher/by_position")]
        for i, p in enumerate(profs):
            stretches[min(parts - 1, i * parts // max(len(profs), 1))].append(p)
    return {f"part {i + 1} of {parts}": pool_position_profiles(ps) for i, ps in enumerate(stretches)}


def _seeds(probes: dict, method: str) -> dict:
    return {s: p for (m, s), p in sorted(probes.items()) if m == method}


def _every(xs) -> bool | None:
    xs = list(xs)
    return None if not xs or any(x is None for x in xs) else all(xs)


def exposure_verdicts(probes: dict) -> list[dict]:
    """Item 1 (GKD): "SFT's errors compound after the first mistake; OPD's do not".

    Two rules, per seed (a seed's SFT and OPD students share the injected prefixes): SFT's error rate on the
    columns after an injected mistake exceeds its rate after the clean control prefix (compounding); and
    the rise the mistake causes (after-mistake rate minus clean rate) is smaller for OPD than for SFT — the
    rise, not the after-mistake rate itself, so that a student that is simply more accurate everywhere does
    not pass for one that recovers. "Error" is `injection.grade`'s: a later column not right given the
    student's own prefix."""
    sft, opd = _seeds(probes, "sft"), _seeds(probes, "opd")
    if not sft or not opd:
        return []
    rate = (lambda p, key: p["exposure"][key]["error_rate"])
    rise = (lambda p: rate(p, "injected") - rate(p, "control"))
    out = [{"text": "After an injected mistake the SFT student's errors compound: its error rate on the later columns "
                    "exceeds its rate after a clean prefix, in every seed",
            "holds": _every(rate(p, "injected") > rate(p, "control") for p in sft.values()),
            "evidence": {**{f"seed {s} after mistake": rate(p, "injected") for s, p in sft.items()},
                         **{f"seed {s} clean": rate(p, "control") for s, p in sft.items()},
                         "post-error states per seed": next(iter(sft.values()))["exposure"]["states"]},
            "source": GKD},
           {"text": "OPD's errors do not compound as SFT's do: the rise in error rate an injected mistake causes "
                    "(later columns, against the clean prefix) is smaller for the OPD student than for the SFT "
                    "student, in every seed",
            "holds": _every(rise(opd[s]) < rise(sft[s]) for s in sft if s in opd),
            "evidence": {**{f"seed {s} OPD rise": rise(p) for s, p in opd.items()},
                         **{f"seed {s} SFT rise": rise(p) for s, p in sft.items()}},
            "source": GKD}]
    return out


def mode_verdicts(probes: dict, start: dict, k: int = 16) -> list[dict]:
    """Item 2: "OPD is mode-seeking; its pass@1 gains exceed its pass@k gains".

    Rules, per seed: the OPD student writes a smaller share of blended columns (mixture rate) than the SFT
    student; its per-state order entropy is lower than SFT's (it commits to a style); and its pass@1 gain
    over the starting student is positive and exceeds its pass@k gain (k = `k`; a pass@1 that fell is no
    gain, whatever pass@k did). `start` is the starting student's probe."""
    sft, opd = _seeds(probes, "sft"), _seeds(probes, "opd")
    if not sft or not opd:
        return []
    orders = (lambda p, key: (p["modes"]["orders"] or {}).get(key))
    pk = (lambda p, j: p["modes"]["pass_at_k"].get(j))
    both = [s for s in sft if s in opd]
    gain = {s: (pk(opd[s], 1) - pk(start, 1), pk(opd[s], k) - pk(start, k)) if pk(opd[s], k) is not None else None
            for s in opd}
    return [{"text": "OPD blends the teacher's scratchpad styles less than SFT: a smaller share of invalid (mixed) "
                     "columns, in every seed",
             "holds": _every(None if orders(opd[s], "mixture_rate") is None else
                             orders(opd[s], "mixture_rate") < orders(sft[s], "mixture_rate") for s in both),
             "evidence": {**{f"seed {s} OPD": orders(opd[s], "mixture_rate") for s in both},
                          **{f"seed {s} SFT": orders(sft[s], "mixture_rate") for s in both}}, "source": MODE},
            {"text": "OPD commits to a style: its per-state entropy over column orders is below SFT's, in every seed",
             "holds": _every(None if orders(opd[s], "order_entropy") is None else
                             orders(opd[s], "order_entropy") < orders(sft[s], "order_entropy") for s in both),
             "evidence": {**{f"seed {s} OPD": orders(opd[s], "order_entropy") for s in both},
                          **{f"seed {s} SFT": orders(sft[s], "order_entropy") for s in both},
                          "start": orders(start, "order_entropy")}, "source": MODE},
            {"text": f"OPD's pass@1 gain over the starting student is positive and exceeds its pass@{k} gain, in "
                     "every seed",
             "holds": _every(None if g is None else g[0] > max(g[1], 0.0) for g in gain.values()),
             "evidence": {**{f"seed {s} pass@1 gain": g and g[0] for s, g in gain.items()},
                          **{f"seed {s} pass@{k} gain": g and g[1] for s, g in gain.items()}}, "source": MODE}]


def horizon_verdicts(by_k: dict, start_accuracy: float, k: int = 16, frac: float = 0.5) -> list[dict]:
    """Item 5: "the teacher's benefit decays with prefix length", read through its ablation: if the benefit
    sits early, supervising only the first `k` tokens recovers most — at least `frac` (our reading of "most";
    the papers give no threshold) — of full supervision's accuracy gain over the start (mean over seeds).
    Not measurable when full supervision gained nothing. `by_k`: {horizon (None = every token): comparison
    row (final_accuracy_mean, ...)}."""
    if None not in by_k or k not in by_k:
        return []
    full = by_k[None]["final_accuracy_mean"] - start_accuracy
    cut = by_k[k]["final_accuracy_mean"] - start_accuracy
    return [{"text": f"Teacher supervision on the first {k} tokens alone recovers most (at least {frac:.0%}) of "
                     f"full supervision's accuracy gain over the start (mean over seeds)",
             "holds": None if full <= 0 else cut >= frac * full,
             "evidence": {"start": start_accuracy, "gain, every token": full, f"gain, first {k} tokens": cut,
                          **({} if full > 0 else {"note": "full supervision did not raise accuracy: no gain to "
                                                          "recover"})},
             "source": HORIZON}]


def _of(target: str) -> str:
    # the full-vocabulary wording is the one notebook 09's committed results carry; other targets name themselves
    return "" if target == "full-vocabulary" else f", {target} target"


def exopd_verdicts(by_lambda: dict, teacher_accuracy: float, fair=(0.70, 0.85), target: str = "full-vocabulary"
                   ) -> list[dict]:
    """Item 4 (ExOPD): "with reward scale lambda > 1 the student goes past the teacher".

    The fair test needs a teacher strong but not perfect (accuracy within `fair`); outside it the claims are
    reported as not measurable (holds=None), with the teacher's accuracy as evidence. Rules: lambda = 1.25
    ends above lambda = 1 (mean over seeds), and reaches or exceeds the teacher's accuracy (mean over seeds).
    `by_lambda`: {lambda: comparison row}; `target` names the loss in the claims' text ("full-vocabulary" target
    or "sampled-token" estimator)."""
    if 1.0 not in by_lambda or 1.25 not in by_lambda:
        return []
    fair_ok = fair[0] <= teacher_accuracy <= fair[1]
    a1, a125 = by_lambda[1.0]["final_accuracy_mean"], by_lambda[1.25]["final_accuracy_mean"]
    ev = {"teacher": teacher_accuracy,
          **{f"lambda {lam}": r["final_accuracy_mean"] for lam, r in sorted(by_lambda.items())}}
    if not fair_ok:
        ev["condition"] = f"teacher accuracy outside {fair}: the test cannot show going past the teacher"
    return [{"text": f"ExOPD (lambda = 1.25, {target} target) ends above G-OPD at lambda = 1 (mean over seeds)",
             "holds": (a125 > a1) if fair_ok else None, "evidence": ev, "source": EXOPD},
            {"text": f"ExOPD (lambda = 1.25{_of(target)}) reaches or exceeds the teacher's accuracy (mean over seeds)",
             "holds": (a125 >= teacher_accuracy) if fair_ok else None, "evidence": ev, "source": EXOPD}]


def variance_verdicts(ratios: dict, factor: float = 2.0) -> list[dict]:
    """Item 6: "vOPD / top-K reduce the sampled-token estimator's gradient variance about 2x": per estimator,
    the variance-reduction factor (`analysis.variance_ratios`) is at least `factor` in every seed."""
    names = {"vopd": "vOPD's control variate", "topk": "Top-K (renormalised) matching",
             "topk_sampled": "Top-K with the sampled token in its support"}
    return [{"text": f"{names[e]} reduces the sampled-token gradient variance at least {factor:g}x, in every seed",
             "holds": all(x >= factor for x in r["by_seed"]),
             "evidence": {"mean": r["mean"], "std": r["std"], "min": r["min"], "max": r["max"]}, "source": VARIANCE}
            for e, r in ratios.items() if e in names]


def mode_rows(probes: dict, **others) -> list[dict]:
    """One table row per probed student ("method/seedN", then `others` by name, e.g. start=..., teacher=...):
    pass@1, pass@max k, mixture rate, order entropy, distinct orders, token entropy, error after a mistake."""
    rows = []
    for name, p in [(f"{m}/seed{s}", p) for (m, s), p in sorted(probes.items())] + list(others.items()):
        pk, o = p["modes"]["pass_at_k"], p["modes"]["orders"] or {}
        rows.append({"student": name, "pass@1": pk[1], f"pass@{max(pk)}": pk[max(pk)],
                     "mixture rate": o.get("mixture_rate"), "order entropy (nats)": o.get("order_entropy"),
                     "distinct orders": o.get("distinct_orders"), "token entropy (nats)": p["modes"]["token_entropy"],
                     "error after mistake": p["exposure"]["injected"]["error_rate"],
                     "error after clean prefix": p["exposure"]["control"]["error_rate"]})
    return rows
