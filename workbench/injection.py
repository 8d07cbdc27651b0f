"""Exposure bias, measured by injecting mistakes: does a student recover after a wrong token in its prefix?

GKD (Agarwal et al. 2024, "On-Policy Distillation of Language Models: Learning from Self-Generated
Mistakes") argues that a student trained only on clean teacher text (SFT) never sees its own mistakes
in its prefix, so after one its errors compound; a student trained on its own rollouts (OPD) has seen
such prefixes and should keep executing the procedure. Waiting for natural mistakes gives few post-error
states (a plateaued student makes few); forcing one gives as many as we like.

For each held-out problem and each column j (of the `addition` / `addition-orders` scratchpads), the
student continues greedily from two prefixes: the *injected* one — the reference trace up to column j
with exactly one wrong token in column j's written total — and the *control* — the same reference
prefix with column j right. Comparing the two at the same columns isolates what the mistake did.

    gen = greedy_continuations(student, tok, task)
    prof = exposure_profile(gen, task, problems, kind="carry")
    prof["injected"]["error_by_distance"], prof["control"]["error_by_distance"]
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from .analysis import column_steps
from .batching import decode_completions
from .config import generation_length
from .rollout import pad_prompts, sample
from .tasks.arithmetic import AdditionOrders
from .tasks.base import ANSWER_SEP, Problem
from .tokenizer import encode_text

KINDS = ("carry", "units")


@dataclass(frozen=True)
class Injection:
    problem: Problem
    column: int             # j: the column whose written total holds the injected mistake (or is right: control)
    prefix: str             # completion text forced before the model continues: columns 0..j, each with its ","
    injected: bool          # False: the control prefix (the reference up to and including column j)
    implied_carry: int      # the carry-in column j+1 must use to be right given the prefix as written
    true_carry: int         # the carry-in of column j+1 in the reference
    implied_answer: str     # the answer a correct procedure reaches from the prefix as written


def _columns(problem: Problem) -> tuple[list[str], str, str]:
    sa, sb = problem.prompt.rstrip("=").split("+")
    return problem.solution.split(ANSWER_SEP)[0].rstrip(",").split(","), sa, sb


def _finish(sa: str, sb: str, written_units: list[int], carry: int) -> str:
    """The answer from columns whose units digits were written, continued correctly with `carry`."""
    digits = list(written_units)
    for i in range(len(digits), len(sa)):
        total = int(sa[-1 - i]) + int(sb[-1 - i]) + carry
        digits.append(total % 10)
        carry = total // 10
    return (str(carry) + "".join(str(d) for d in reversed(digits))).zfill(len(sa) + 1)


def injections(task, problems, *, kind: str = "carry", columns=None, seed: int = 0) -> list[Injection]:
    """For each problem and each column j in `columns` (default: every column with at least one after it),
    the control prefix and the injected one, in that order.

    kind="carry": the tens digit of column j's total (its carry-out) is flipped 0 <-> 1, so column j+1's
    carry-in given the written prefix is the wrong one; kind="units": the units digit is replaced by another
    digit (drawn with `seed`), the carry stays right and only the answer's digit j is affected.
    """
    if task.name not in ("addition", "addition-orders"):
        raise ValueError(f"mistake injection reads the addition scratchpads, not {task.name!r}; "
                         "use task 'addition' or 'addition-orders'")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    rng = random.Random(f"inject:{kind}:{seed}")
    out = []
    for p in problems:
        cols, sa, sb = _columns(p)
        js = range(len(cols) - 1) if columns is None else [j for j in columns if 0 <= j < len(cols) - 1]
        for j in js:
            units = [int(c[-1]) for c in cols[:j + 1]]
            true_carry = int(cols[j][-2])
            head = "".join(c + "," for c in cols[:j])
            lhs = cols[j][:-2]
            out.append(Injection(p, j, head + cols[j] + ",", False, true_carry, true_carry,
                                 _finish(sa, sb, units, true_carry)))
            tens, unit = int(cols[j][-2]), int(cols[j][-1])
            if kind == "carry":
                tens = 1 - tens
            else:
                unit = rng.choice([d for d in range(10) if d != unit])
            units[-1] = unit
            out.append(Injection(p, j, f"{head}{lhs}{tens}{unit},", True, tens, true_carry,
                                 _finish(sa, sb, units, tens)))
    return out


def grade(task, inj: Injection, completion: str) -> dict:
    """One continuation, graded after the injection point.

    `completion` is the whole completion text (the forced prefix followed by the model's continuation).
    For each later column j+d (d = 1, 2, ...) `errors[d-1]` is True when that column is missing, malformed,
    or not right *given the model's own prefix*: its summands are not the column's two digits and the
    carry-in the previous written total implies (any order on `addition-orders`), or its total is not their
    sum (`analysis.column_steps`' `ok_local`). That is "an error after the mistake": a student that
    executes the procedure on whatever prefix it is given makes none, whatever the injected digit was.
    Also: `follows_prefix` / `reverts` — column j+1 is right with the implied carry / with the true
    carry instead (the two differ only for kind="carry"); `answer_implied` / `answer_true` — the final
    answer equals what a correct procedure reaches from the prefix as written / the problem's answer.
    """
    p, j = inj.problem, inj.column
    sa = p.prompt.rstrip("=").split("+")[0]
    steps = column_steps(task, p, completion)
    n_after = len(sa) - 1 - j
    errors = [not (j + d < len(steps) and steps[j + d]["ok_local"]) for d in range(1, n_after + 1)]
    nxt = completion.split(ANSWER_SEP)[0].rstrip(",").split(",")
    nxt = nxt[j + 1] if len(nxt) > j + 1 else ""
    answer = task.parse_answer(completion)
    return {"errors": errors, "follows_prefix": _right_with(nxt, p, j + 1, inj.implied_carry),
            "reverts": _right_with(nxt, p, j + 1, inj.true_carry),
            "answer_implied": answer == inj.implied_answer, "answer_true": answer == p.answer}


def _right_with(col: str, p: Problem, i: int, carry: int) -> bool:
    """Is `col` column i written right (any order of its summands) with carry-in `carry`?"""
    sa, sb = p.prompt.rstrip("=").split("+")
    return AdditionOrders.column_right(col, sa[-1 - i], sb[-1 - i], carry)


def exposure_profile(generate, task, problems, *, kind: str = "carry", columns=None, seed: int = 0) -> dict:
    """Inject, continue with `generate`, grade; aggregate the injected and the control prefixes apart.

    `generate(pairs)` takes [(problem, prefix text)] and returns the model's continuation of each prefix
    (`greedy_continuations` builds one from a model). Returns {"kind", "states": post-error column states
    graded, "injected": stats, "control": stats} with stats = {"error_by_distance": [rate at d = 1, 2, ...],
    "n_by_distance", "error_rate" (over all graded columns), "follows_prefix", "reverts", "answer_implied",
    "answer_true", "prefixes"}.
    """
    injs = injections(task, problems, kind=kind, columns=columns, seed=seed)
    conts = generate([(i.problem, i.prefix) for i in injs])
    if len(conts) != len(injs):
        raise ValueError(f"generate returned {len(conts)} continuations for {len(injs)} prefixes")
    out = {"kind": kind}
    for key, flag in (("injected", True), ("control", False)):
        gs = [grade(task, i, i.prefix + c) for i, c in zip(injs, conts) if i.injected == flag]
        width = max((len(g["errors"]) for g in gs), default=0)
        n_d = [sum(len(g["errors"]) > d for g in gs) for d in range(width)]
        e_d = [sum(g["errors"][d] for g in gs if len(g["errors"]) > d) for d in range(width)]
        share = (lambda k: sum(g[k] for g in gs) / len(gs) if gs else None)
        out[key] = {"error_by_distance": [e / n if n else None for e, n in zip(e_d, n_d)], "n_by_distance": n_d,
                    "error_rate": sum(e_d) / sum(n_d) if sum(n_d) else None, "prefixes": len(gs),
                    **{k: share(k) for k in ("follows_prefix", "reverts", "answer_implied", "answer_true")}}
    out["states"] = sum(out["injected"]["n_by_distance"])
    return out


def greedy_continuations(model, tokenizer, task, *, batch_size: int = 256, max_new_tokens: int | None = None):
    """`generate` for `exposure_profile`: the model's greedy continuation of each (problem, prefix), i.e.
    conditioned on the task's prompt tokens followed by the prefix's tokens, up to EOS (not included)."""
    max_new = generation_length(task, max_new_tokens)

    @torch.no_grad()
    def generate(pairs):
        dev = next(model.parameters()).device
        out = []
        for i in range(0, len(pairs), batch_size):
            chunk = pairs[i:i + batch_size]
            ids, mask = pad_prompts([task.encode_prompt(tokenizer, p.prompt) + encode_text(tokenizer, pre)
                                     for p, pre in chunk], tokenizer.pad_token_id, dev)
            r = sample(model, ids, mask, max_new_tokens=max_new, eos_token_id=tokenizer.eos_token_id,
                       pad_token_id=tokenizer.pad_token_id, temperature=0.0)
            out += decode_completions(tokenizer, r)
        return out
    return generate
