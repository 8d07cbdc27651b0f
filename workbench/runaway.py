"""Summaries of a length runaway from a run's per-step records (docs/records.md).

Notebooks 06 (length runaways) and 08 (special tokens and teacher compatibility) ask the same questions
of every run: did the mean length collapse (`collapse_summary`),
did the truncated fraction jump (some step with at least `high` of the rollouts truncated), how many
steps did the jump take (from the last step under `low`), did it stay there (mean over the last `last`
steps above `high`), when did the trainer's early warning fire, and how did the student/teacher top-k
overlap move (`truncation_summary`); over seeds, how often each kind of run did it (`seed_frequency`),
and how early the warning came (`warning_lead`). Plain functions on
lists of record dicts, so they work on a `RecordLog`, a run directory's `metrics.jsonl` or a
dashboard's store alike.
"""
from __future__ import annotations

TRUNC = "rollout/truncated_frac"


def _mean(xs) -> float | None:
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def _first_index_at(records: list[dict], key: str, high: float) -> int | None:
    return next((i for i, r in enumerate(records) if r.get(key) is not None and r[key] >= high), None)


def first_step_at(records: list[dict], key: str = TRUNC, high: float = 0.9) -> int | None:
    """The first step whose `key` is at least `high` (None: never)."""
    k = _first_index_at(records, key, high)
    return None if k is None else records[k]["step"]


def jump_width(records: list[dict], low: float = 0.1, high: float = 0.9, key: str = TRUNC) -> int | None:
    """Steps from the last step under `low` to the first step at or above `high` (None: no such jump)."""
    k = _first_index_at(records, key, high)
    if k is None:
        return None
    j = next((i for i in range(k, -1, -1) if records[i].get(key) is not None and records[i][key] < low), None)
    return None if j is None else records[k]["step"] - records[j]["step"]


def truncation_summary(records: list[dict], high: float = 0.9, last: int = 10, window: int = 5) -> dict:
    """One row per run: the truncation jump and whether it stayed, the first early warning, the largest
    repetition rate, top-1 / top-k overlap over the first and last `window` steps, the last evaluation."""
    if not records:
        raise ValueError("no records: the run has not logged a step yet")
    tr = [r[TRUNC] for r in records]
    first = first_step_at(records, TRUNC, high)
    tail = _mean(tr[-last:])
    evals = [r["eval/accuracy"] for r in records if r.get("eval/accuracy") is not None]

    def ends(key):
        ys = [r.get(key) for r in records]
        return _mean(ys[:window]), _mean(ys[-window:])

    t1, tk = ends("teacher/top1_overlap"), ends("teacher/topk_overlap")
    return {"max truncated frac": max(tr), f"final truncated frac (last {last} steps)": tail,
            "jumped": first is not None, "sustained": tail > high,
            f"first step >= {high} truncated": first,
            "first warning": next((r["step"] for r in records if r.get("warning")), None),
            "max repetition rate": max(r.get("rollout/repetition_rate", 0.0) for r in records),
            f"top-1 overlap, first {window}": t1[0], f"top-1 overlap, last {window}": t1[1],
            f"top-4 overlap, first {window}": tk[0], f"top-4 overlap, last {window}": tk[1],
            "final eval accuracy": evals[-1] if evals else None}


def collapse_summary(records: list[dict], collapse_len: float = 10.0, last: int = 10) -> dict:
    """One row per run for a length collapse (the opposite runaway): start and final mean rollout length,
    whether the mean over the last `last` steps is below `collapse_len` tokens and the first step below
    it, the truncation and repetition extremes, the step-1 token reward and advantage, the last evaluation,
    and how many steps carried a trainer warning."""
    if not records:
        raise ValueError("no records: the run has not logged a step yet")
    lengths = [r["rollout/mean_length"] for r in records]
    final = _mean(lengths[-last:])
    evals = [r["eval/accuracy"] for r in records if r.get("eval/accuracy") is not None]
    return {"start length": lengths[0], f"final length (last {last} steps)": final,
            "collapsed": final < collapse_len,
            f"first step below {collapse_len:g} tokens": next((r["step"] for r in records
                                                               if r["rollout/mean_length"] < collapse_len), None),
            "max truncated frac": max(r[TRUNC] for r in records),
            f"final truncated frac (last {last} steps)": _mean(r[TRUNC] for r in records[-last:]),
            "max repetition rate": max(r.get("rollout/repetition_rate", 0.0) for r in records),
            "token reward at step 1": records[0].get("teacher/token_reward_mean"),
            "advantage mean at step 1": records[0].get("opd/advantage_mean"),
            "final eval accuracy": evals[-1] if evals else None,
            "warnings": sum(1 for r in records if r.get("warning"))}


def token_count_per_sample(samples: list[dict], token: str) -> float:
    """Mean number of occurrences of `token` per recorded sample (records' `samples[*]["tokens"]`)."""
    return sum(s["tokens"].count(token) for s in samples) / max(1, len(samples))


def token_counts(first: list[dict], last: list[dict], tokens) -> dict:
    """Mean occurrences per sample of each of `tokens` in a run's first and last recorded sample batches."""
    return {f"{t} per sample, {when}": token_count_per_sample(samples, t)
            for t in tokens for when, samples in (("first", first), ("last", last))}


def seed_frequency(rows: dict[str, dict], kinds, flags=("collapsed",)) -> dict[str, dict]:
    """Over seeds, how many runs of each kind had each boolean flag set.

    `rows`: one summary row (`collapse_summary`, `truncation_summary`) per run, the runs named
    "KIND · seed S" (the notebooks' convention). Returns {kind: {flag: count, ..., "seeds": n}}.
    """
    out = {}
    for kind in kinds:
        mine = [row for run, row in rows.items() if run.startswith(kind + " · seed ")]
        if not mine:
            raise ValueError(f"no run named {kind!r} · seed S among {sorted(rows)}")
        out[kind] = {**{f: sum(bool(row[f]) for row in mine) for f in flags}, "seeds": len(mine)}
    return out


def warnings_of(records: list[dict]) -> list[tuple[int, str]]:
    """(step, text) of every step that carried a trainer early warning (`record["warning"]`)."""
    return [(r["step"], r["warning"]) for r in records if r.get("warning")]


def warning_lead(records: list[dict], collapse_len: float = 10.0, about: str = "length") -> int | None:
    """Steps from the first warning whose text mentions `about` to the first step whose mean rollout length
    is below `collapse_len` (positive: the warning came first). None when the length never fell that low
    or no such warning fired."""
    below = next((r["step"] for r in records if r["rollout/mean_length"] < collapse_len), None)
    warned = next((k for k, w in warnings_of(records) if about in w), None)
    return None if below is None or warned is None else below - warned


def truncation_collapse(records: list[dict], high: float = 0.9, within: int = 30, stay: float = 0.75,
                        last: int = 10) -> bool:
    """Luo et al.'s truncation collapse, read from a run's records: the truncated fraction reaches `high` within
    the first `within` steps and does not recover (its mean over the last `last` steps is still at least `stay`).
    The paper's own numbers: from ~0.45 to above 0.95 within ~30 steps; with 32 rollouts a step, one
    rollout is 0.03 of the fraction, so `high` = 0.9 and `stay` = 0.75 leave room for a few that still end."""
    if not records:
        raise ValueError("no records: the run has not logged a step yet")
    first = first_step_at(records, TRUNC, high)
    tail = _mean(r[TRUNC] for r in records[-last:])
    return first is not None and first <= within and tail >= stay
