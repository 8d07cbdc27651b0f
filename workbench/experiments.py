"""The measurements behind the notebooks, kept here so a notebook cell stays a few lines.

    S = pick_size(size, smoke=dict(steps=2, ...), full=dict(steps=150, ...))
    log = RecordLog()                                   # a callback: keeps every record, by run
    trainer = train("opd", callbacks=[dash, log], steps=S.steps, device=device)
    table = rollout_table(trainer.student, trainer.tokenizer, task, problems)

What is measured where:
  * `RecordLog`            every per-step record of every run (no samples), a few sample batches,
                           and the evaluation curve with cumulative cost and training time;
  * `rollout_table`        one row per problem: completion, length, correct, operand digits;
  * `column_error_profile` exposure bias along the scratchpad: per column, the error rate on a
                           clean prefix vs after the model's own first mistake;
  * `grpo_credit_audit`    how much of a GRPO batch receives credit, and how much of the
                           blame lands on steps that were right;
  * `token_reward_by_column`  where the teacher's per-token reward is negative: before, at and
                           after the student's first mistake (the dense signal OPD gets);
  * `entropy_at_student_states`  student vs teacher entropy on the student's own prefixes;
  * `cost_table`           the literature-style cost table of a matched-budget comparison.

Training time (`train_s`) is the sum of the trainer's generate + teacher + update times:
held-out evaluation is excluded, so methods evaluated equally often compare fairly.
"""
from __future__ import annotations

import copy
import math
from types import SimpleNamespace

import torch

from . import losses as L
from . import pairs, zoo
from .analysis import column_steps
from .batching import decode_completions, prompt_batch
from .config import TrainConfig, generation_length
from .evaluation import evaluate
from .models import count_params, pick_device
from .rollout import completion_logits, sample
from .tasks import get_task
from .tokenizer import token_strings
from .trainer import Trainer

SIZES = ("smoke", "full")


# ---------------------------------------------------------------------------------------------
# sizes and runs
# ---------------------------------------------------------------------------------------------
def pick_size(size: str, **presets: dict) -> SimpleNamespace:
    """The preset for `size` as attributes (`S.steps`), refusing unknown sizes."""
    if size not in presets:
        raise ValueError(f"size must be one of {sorted(presets)}, got {size!r}")
    return SimpleNamespace(size=size, **presets[size])


class RecordLog:
    """Callback keeping every record (scalars) of every run it watches, plus a few sample batches.

    `evals[run]`: one row per held-out evaluation with step, student/teacher tokens, FLOPs and
    `train_s` (cumulative training time without evaluation). `samples[run]`: {step: samples} for
    the first step and the latest one (and every `keep_samples_every` steps if > 0).
    """

    def __init__(self, keep_samples_every: int = 0):
        self.records: dict[str, list[dict]] = {}
        self.evals: dict[str, list[dict]] = {}
        self.samples: dict[str, dict[int, list]] = {}
        self.summaries: dict[str, dict] = {}
        self.keep_samples_every = keep_samples_every
        self._train_s: dict[str, float] = {}

    def on_start(self, info):
        run = str(info["run"])
        self.records.setdefault(run, [])
        self.evals.setdefault(run, [])
        self.samples.setdefault(run, {})
        self._train_s.setdefault(run, 0.0)

    def on_step(self, rec):
        run = str(rec["run"])
        if run not in self.records:
            self.on_start({"run": run})
        self._train_s[run] += sum(rec.get(k, 0.0) for k in ("time/generate_s", "time/teacher_s", "time/update_s"))
        row = {k: v for k, v in rec.items() if k != "samples"}
        row["train_s"] = self._train_s[run]
        self.records[run].append(row)
        if "eval/accuracy" in rec:
            self.evals[run].append(self._eval_row(row))
        keep = self.samples[run]
        if rec.get("samples"):
            k = rec["step"]
            if not keep or (self.keep_samples_every and k % self.keep_samples_every == 0):
                keep[k] = rec["samples"]
            else:   # keep the first batch and the latest one
                last = max(keep)
                if last != min(keep) and not (self.keep_samples_every and last % self.keep_samples_every == 0):
                    del keep[last]
                keep[k] = rec["samples"]

    def on_end(self, summary):
        self.summaries[str(summary.get("run"))] = dict(summary)

    @staticmethod
    def _eval_row(row: dict) -> dict:
        return {"step": row["step"], "student_tokens": row.get("cost/student_tokens", 0),
                "teacher_tokens": row.get("cost/teacher_tokens", 0), "flops": row.get("cost/flops", 0.0),
                "train_s": row.get("train_s", 0.0),
                **{k: v for k, v in row.items() if k.startswith("eval/")}}

    def add_eval(self, run: str, metrics: dict, step: int = 0) -> None:
        """Add an evaluation the trainer did not make itself (e.g. the shared step-0 baseline)."""
        self.evals.setdefault(run, [])
        row = self._eval_row({"step": step, "train_s": 0.0, **metrics})
        self.evals[run] = sorted(self.evals[run] + [row], key=lambda r: r["step"])

    def series(self, run: str, key: str, offset: int = 0) -> tuple[list[int], list[float]]:
        """(steps, values) of `key`; `offset` is added to the steps (a run that continues another, e.g. OPD after
        an SFT cold start, drawn after the steps it started from)."""
        rows = [r for r in self.records.get(run, []) if key in r]
        return [r["step"] + offset for r in rows], [r[key] for r in rows]

    def mean(self, run: str, key: str, first: int | None = None, last: int | None = None) -> float:
        """Mean of `key` over the run's first `first` or last `last` steps (all steps if neither)."""
        ys = self.series(run, key)[1]
        if first:
            ys = ys[:first]
        if last:
            ys = ys[-last:]
        return sum(ys) / len(ys) if ys else float("nan")

    def last_samples(self, run: str) -> tuple[int, list]:
        keep = self.samples.get(run) or {}
        if not keep:
            return 0, []
        k = max(keep)
        return k, keep[k]

    def first_samples(self, run: str) -> tuple[int, list]:
        keep = self.samples.get(run) or {}
        if not keep:
            return 0, []
        k = min(keep)
        return k, keep[k]

    def frame(self):
        import pandas as pd   # optional-import: pandas costs ~1 s to import; only the table view needs it
        return pd.DataFrame([dict(r, run=run) for run, rs in self.records.items() for r in rs])


class TokenBudget:
    """Callback: stop once `cost/student_tokens` (tokens the student generated or was trained on) reaches the budget."""

    def __init__(self, budget: int):
        self.budget = budget

    def on_step(self, rec):
        return rec["cost/student_tokens"] >= self.budget


def step_cap(task, budget_tokens: int, batch_size: int, safety: float = 2.0) -> int:
    """A step count the token budget ends first: `safety` x the budget over the task's mean reference
    sequence length (prompt + BOS + solution + EOS, measured on 64 train problems).

    The budget, not this cap, ends a run; the cap only bounds a run whose sequences are much shorter
    than the task's reference solutions (a length collapse), and is what a dashboard shows as the total.
    """
    ps = task.problems(64, seed=12345, split="train")
    per_seq = sum(len(p.prompt) + len(p.solution) + 2 for p in ps) / len(ps)
    return max(1, math.ceil(safety * budget_tokens / (batch_size * per_seq)))


def train(method: str, callbacks=(), *, student=None, teacher=None, tokenizer=None, baseline: dict | None = None,
          log: RecordLog | None = None, budget_tokens: int | None = None, task=None, teacher_name: str | None = None,
          student_name: str | None = None, **overrides) -> Trainer:
    """Build a trainer for `method` (a preset plus overrides) and run it; returns the trainer.

    `student`/`tokenizer`: start from a model object (e.g. another run's student, copied) instead of
    the zoo student; `teacher`: score with a model object (used as is, not copied) instead of the zoo teacher. `baseline`: an evaluation of the starting model to put at step 0 of `log`'s curve.
    `budget_tokens`: stop once this many student tokens were processed. `task`: a Task object (or name / import
    path) to train on instead of `overrides["task"]`. `teacher_name`/`student_name`: the checkpoints the model
    objects were loaded from, recorded in the config (a run directory with them can be resumed).
    """
    overrides.update({k: v for k, v in (("teacher", teacher_name), ("student", student_name)) if v is not None})
    if task is not None and not isinstance(task, str):
        overrides.pop("task", None)                 # the object is the task; the config records its import path
    elif task is not None:
        overrides["task"], task = task, None
    cfg = TrainConfig.for_method(method, **overrides)
    if student is not None:
        student = copy.deepcopy(student)
    trainer = Trainer(cfg, student=student, teacher=teacher, tokenizer=tokenizer, task=task)
    cbs = list(callbacks)
    if log is not None:
        if log not in cbs:
            cbs.append(log)
        if baseline is not None:
            log.add_eval(cfg.name, baseline, step=0)
    if budget_tokens is not None:
        cbs.insert(0, TokenBudget(budget_tokens))
    trainer.run(callbacks=cbs)
    if log is not None:
        curve = log.evals.get(cfg.name, [])
        if not curve or curve[-1]["step"] != trainer.step_count:   # evaluate where the run ended
            last = log.records[cfg.name][-1] if log.records.get(cfg.name) else {}
            log.add_eval(cfg.name, {**{k: last.get(k) for k in ("cost/student_tokens", "cost/teacher_tokens",
                                                                 "cost/flops")}, "train_s": last.get("train_s", 0.0),
                                    **trainer.evaluate(step=trainer.step_count)}, step=trainer.step_count)
    return trainer


def load_models(task: str = "addition", device: str = "auto", teacher: str | None = None,
                student: str | None = None) -> SimpleNamespace:
    """The task and its zoo pair (or the given checkpoints: zoo names, directories, hub ids; `pairs.load_named_pair`):
    `.task .teacher .student .tokenizer .device .report` (the pair's `compat.CompatReport`)."""
    task_obj = get_task(task)
    dev = pick_device(device)
    t_name, s_name = zoo.default_pair(task_obj.name) if (teacher is None or student is None) else (teacher, student)
    t_name, s_name = teacher or t_name, student or s_name
    pair = pairs.load_named_pair(t_name, s_name, str(dev))   # student trainable: gradient analyses
    return SimpleNamespace(task=task_obj, teacher=pair.teacher.eval(), student=pair.student.eval(),
                           tokenizer=pair.tokenizer, device=dev, teacher_name=t_name, student_name=s_name,
                           report=pair.report)


def model_row(role: str, name: str, model, metrics: dict | None = None) -> dict:
    """A table row describing a model: role, checkpoint, parameters, layers, width, and given metrics."""
    cfg = model.config
    return {"role": role, "checkpoint": str(name), "params": count_params(model),
            "layers": getattr(cfg, "num_hidden_layers", None), "width": getattr(cfg, "hidden_size", None),
            **(metrics or {})}


def evaluate_model(model, tokenizer, task, problems, sampled: bool = True, seed: int = 0) -> dict:
    """Held-out metrics in the records' units: eval/accuracy (greedy), eval/sampled_accuracy (T = 1), ..."""
    g = evaluate(model, tokenizer, task, problems)
    out = {"eval/accuracy": g["accuracy"], "eval/mean_length": g["mean_length"],
           "eval/truncated_frac": g["truncated_frac"]}
    if sampled:
        dev = next(model.parameters()).device
        gen = torch.Generator(device=dev).manual_seed(seed)
        out["eval/sampled_accuracy"] = evaluate(model, tokenizer, task, problems, temperature=1.0,
                                                generator=gen)["accuracy"]
    return out


def matched_budget(methods, budget_tokens: int, callbacks=(), *, log: RecordLog | None = None,
                   baseline: dict | None = None, method_overrides: dict | None = None,
                   **common) -> tuple[dict, RecordLog]:
    """Train each method from the same student until it has processed `budget_tokens` student tokens.

    Returns ({run name: trainer}, log). `baseline`: the starting student's evaluation, put at step 0 of
    every curve (all methods start from the same model). The token budget ends each run (`step_cap`
    is only a safety net, and what the dashboard shows as the total).
    """
    log = log if log is not None else RecordLog()
    trainers = {}
    for m in methods:
        o = {**common, **(method_overrides or {}).get(m, {})}
        task = o.get("task", "addition")
        o.setdefault("steps", step_cap(get_task(task) if isinstance(task, str) else task, budget_tokens,
                                       o.get("batch_size", 64)))
        tr = train(m, callbacks, log=log, baseline=baseline, budget_tokens=budget_tokens, **o)
        trainers[tr.cfg.name] = tr
    return trainers, log


@torch.no_grad()
def scored_samples(student, teacher, tokenizer, task, problems, *, seed: int = 0, temperature: float = 1.0,
                   max_new_tokens: int | None = None) -> list[dict]:
    """Student rollouts of `problems`, each token scored by the teacher: the records' sample format
    (docs/records.md), ready for `widgets.figures.token_heatmap`."""
    dev = next(student.parameters()).device
    gen = torch.Generator(device=dev).manual_seed(seed)
    ids, mask = prompt_batch(tokenizer, problems, dev)
    r = sample(student, ids, mask, max_new_tokens=generation_length(task, max_new_tokens),
               eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
               temperature=temperature, generator=gen)
    texts = decode_completions(tokenizer, r)
    s_lp = L.token_logprobs(completion_logits(student, r), r.completion_ids)
    t_lp = L.token_logprobs(completion_logits(teacher, r), r.completion_ids) if teacher is not None else None
    out = []
    for i, (p, text) in enumerate(zip(problems, texts)):
        n = int(r.lengths[i])
        v = task.verify(p, text, truncated=bool(r.truncated[i]))
        out.append({"prompt": p.prompt, "tokens": token_strings(tokenizer, r.completion_ids[i, :n].tolist()),
                    "token_reward": None if t_lp is None else [round(float(x), 4) for x in (t_lp[i, :n] - s_lp[i, :n])],
                    "student_logprob": [round(float(x), 4) for x in s_lp[i, :n]],
                    "correct": v.correct, "reward": v.reward, "truncated": bool(r.truncated[i])})
    return out


# ---------------------------------------------------------------------------------------------
# rollouts and the scratchpad
# ---------------------------------------------------------------------------------------------
def operand_digits(problem) -> int:
    """Digits of the longer operand (without zero padding)."""
    body = problem.prompt.rstrip("=")
    for sep in "+*":
        if sep in body:
            return max(len(x.lstrip("0") or "0") for x in body.split(sep))
    return len(body)


@torch.no_grad()
def rollout_table(model, tokenizer, task, problems, *, temperature: float = 0.0, max_new_tokens: int | None = None,
                  seed: int = 0, batch_size: int = 256) -> list[dict]:
    """One row per problem: prompt, completion, length (tokens incl. EOS), truncated, correct, digits, and
    `tokens` (the completion's tokens through EOS, special tokens included: the text drops them)."""
    dev = next(model.parameters()).device
    gen = torch.Generator(device=dev).manual_seed(seed)
    max_new = generation_length(task, max_new_tokens)
    rows = []
    for i in range(0, len(problems), batch_size):
        chunk = problems[i:i + batch_size]
        ids, mask = prompt_batch(tokenizer, chunk, dev)
        r = sample(model, ids, mask, max_new_tokens=max_new, eos_token_id=tokenizer.eos_token_id,
                   pad_token_id=tokenizer.pad_token_id, temperature=temperature, generator=gen)
        for p, text, n, tr, ids_ in zip(chunk, decode_completions(tokenizer, r), r.lengths.tolist(), r.truncated.tolist(),
                                        r.completion_ids.tolist()):
            rows.append({"prompt": p.prompt, "completion": text, "length": int(n), "truncated": bool(tr),
                         "correct": task.verify(p, text, truncated=tr).correct, "digits": operand_digits(p),
                         "problem": p, "tokens": tokenizer.convert_ids_to_tokens(ids_[:n])})
    return rows


def accuracy(rows: list[dict]) -> float:
    return sum(r["correct"] for r in rows) / len(rows) if rows else float("nan")


def accuracy_by_digits(rows: list[dict]) -> dict[int, float]:
    out: dict[int, list[bool]] = {}
    for r in rows:
        out.setdefault(r["digits"], []).append(r["correct"])
    return {d: sum(v) / len(v) for d, v in sorted(out.items())}


def column_error_profile(task, problems, completions: list[str]) -> dict:
    """Exposure bias along the scratchpad, column by column (see `analysis.column_steps`).

    For column k: `clean_err[k]` = error rate of column k when every earlier column was right;
    `after_err[k]` = error rate of column k when an earlier column was already wrong (the model
    continues from its own mistake). Plus the pooled rates `before` / `after` and counts.
    An error is judged locally: right digits from the prompt, carry-in equal to the model's own
    previous carry-out, right arithmetic (`ok_local`).
    """
    clean, after = {}, {}
    for p, c in zip(problems, completions):
        seen_error = False
        for s in column_steps(task, p, c):
            bucket = after if seen_error else clean
            n, e = bucket.get(s["column"], (0, 0))
            bucket[s["column"]] = (n + 1, e + (0 if s["ok_local"] else 1))
            seen_error = seen_error or not s["ok_local"]
    cols = sorted(set(clean) | set(after))

    def rate(b, k):
        n, e = b.get(k, (0, 0))
        return e / n if n else None

    tot = lambda b: (sum(n for n, _ in b.values()), sum(e for _, e in b.values()))  # noqa: E731
    (nc, ec), (na, ea) = tot(clean), tot(after)
    n_err = sum(1 for p, c in zip(problems, completions)
                if any(not s["ok_local"] for s in column_steps(task, p, c)))
    return {"columns": cols, "clean_err": [rate(clean, k) for k in cols], "after_err": [rate(after, k) for k in cols],
            "clean_n": [clean.get(k, (0, 0))[0] for k in cols], "after_n": [after.get(k, (0, 0))[0] for k in cols],
            "before": ec / nc if nc else float("nan"), "after": ea / na if na else float("nan"),
            "n_columns_after": na, "n_with_error": n_err, "n": len(problems)}


def error_profile(task, rows: list[dict]) -> dict:
    """`column_error_profile` of a `rollout_table`'s rows."""
    return column_error_profile(task, [r["problem"] for r in rows], [r["completion"] for r in rows])


def failure_sites(task, rows: list[dict]) -> dict:
    """Where a `rollout_table`'s failures happen: in a scratchpad column (some column wrong on the
    model's own prefix), or only in the answer after the separator (every column locally right)."""
    col = ans = 0
    for r in rows:
        if r["correct"]:
            continue
        if any(not s["ok_local"] for s in column_steps(task, r["problem"], r["completion"])):
            col += 1
        else:
            ans += 1
    return {"failures": col + ans, "in_a_column": col, "answer_only": ans, "n": len(rows)}


def continued(curve: list[dict], after: list[dict]) -> list[dict]:
    """Shift a continuation run's curve so that it starts where the run `after` ended
    (step, tokens, FLOPs and training time all accumulate)."""
    if not after:
        return list(curve)
    end = after[-1]
    keys = ("step", "student_tokens", "teacher_tokens", "flops", "train_s")
    return [{**c, **{k: c.get(k, 0) + end.get(k, 0) for k in keys}} for c in curve]


def _first_mistake_column(task, problem, completion: str) -> int | None:
    return next((s["column"] for s in column_steps(task, problem, completion) if not s["ok_local"]), None)


def _column_of_chars(completion: str) -> list[int]:
    """Scratchpad column index of each character of a completion (-1 after the answer separator)."""
    out, col, in_answer = [], 0, False
    for ch in completion:
        if ch == "|":
            in_answer = True
        out.append(-1 if in_answer else col)
        if ch == "," and not in_answer:
            col += 1
    return out


def _sample_groups(model, tokenizer, task, problems, G: int, seed: int, max_new_tokens: int | None):
    dev = next(model.parameters()).device
    gen = torch.Generator(device=dev).manual_seed(seed)
    flat = [p for p in problems for _ in range(G)]
    ids, mask = prompt_batch(tokenizer, flat, dev)
    r = sample(model, ids, mask, max_new_tokens=generation_length(task, max_new_tokens),
               eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, temperature=1.0,
               generator=gen)
    texts = decode_completions(tokenizer, r)
    rewards = torch.tensor([task.verify(p, t, truncated=tr).reward
                            for p, t, tr in zip(flat, texts, r.truncated.tolist())])
    return flat, r, texts, rewards


@torch.no_grad()
def grpo_credit_audit(model, tokenizer, task, problems, *, num_generations: int = 8, seed: int = 0,
                      max_new_tokens: int | None = None) -> dict:
    """Where GRPO's one-reward-per-rollout credit lands, for G rollouts of each problem at T = 1.

    Returns the fraction of groups with zero advantage (all right or all wrong), the fraction of
    tokens that receive any credit, and — for rollouts pushed down (negative advantage) — the
    fraction of their scratchpad tokens that lie *before* the rollout's first mistake: correct
    steps blamed for a later error. OPD's per-token reward credits every token separately.
    """
    flat, r, texts, rewards = _sample_groups(model, tokenizer, task, problems, num_generations, seed, max_new_tokens)
    adv = L.grpo_advantages(rewards, num_generations)
    mask = r.completion_mask.cpu()
    lengths = mask.sum(1)
    credited = float((lengths * (adv != 0).float()).sum() / lengths.sum())
    neg_tokens, neg_correct, pos_tokens = 0, 0, 0
    for p, t, a in zip(flat, texts, adv.tolist()):
        if a < 0:
            first = _first_mistake_column(task, p, t)
            cols = _column_of_chars(t)
            scratch = [c for c in cols if c >= 0]
            neg_tokens += len(scratch)
            neg_correct += sum(1 for c in scratch if first is None or c < first)
        elif a > 0:
            pos_tokens += len(t)
    return {"zero_adv_frac": L.zero_adv_frac(rewards, num_generations), "credited_token_frac": credited,
            "reward_mean": float(rewards.mean()), "blamed_correct_frac": neg_correct / neg_tokens if neg_tokens else None,
            "negative_scratch_tokens": neg_tokens, "positive_tokens": pos_tokens,
            "groups": len(problems), "num_generations": num_generations}


@torch.no_grad()
def token_reward_by_column(student, teacher, tokenizer, task, problems, *, seed: int = 0,
                           max_new_tokens: int | None = None) -> dict:
    """The teacher's per-token reward log q - log p on student samples (T = 1), split by position
    relative to each sample's first scratchpad mistake: `before`, `at` (the first wrong column),
    `after`, and on correct samples. Also the fraction of sampled tokens with a negative reward.

    At the wrong tokens of the first wrong column (where the student's token is not the teacher's
    top choice) it reports how confident the student was: `at_student_p` (mean probability of the
    token it sampled) and `at_student_p_teacher_top` (mean probability the student gave the
    teacher's preferred token). When the latter is tiny, a one-sample estimator almost never
    samples the right token, so it can push the wrong one down but hardly pull the right one up.
    """
    flat, r, texts, rewards = _sample_groups(student, tokenizer, task, problems, 1, seed, max_new_tokens)
    s_logits, t_logits = completion_logits(student, r), completion_logits(teacher, r)
    s_lp = L.token_logprobs(s_logits, r.completion_ids)
    t_lp = L.token_logprobs(t_logits, r.completion_ids)
    rew = (t_lp - s_lp).cpu()
    s_prob = s_lp.exp().cpu()
    t_top = t_logits.argmax(-1)
    s_prob_t_top = torch.softmax(s_logits, -1).gather(-1, t_top[..., None]).squeeze(-1).cpu()
    differs = (t_top != r.completion_ids).cpu()
    buckets = {"correct_samples": [], "before": [], "at": [], "after": []}
    at_p, at_p_top = [], []
    for i, (p, t) in enumerate(zip(flat, texts)):
        cols = _column_of_chars(t)
        vals = rew[i, :len(t)].tolist()
        if rewards[i] > 0:
            buckets["correct_samples"] += vals
            continue
        first = _first_mistake_column(task, p, t)
        for j, (c, v) in enumerate(zip(cols, vals)):
            if first is None or c < 0:
                continue
            where = "before" if c < first else "at" if c == first else "after"
            buckets[where].append(v)
            if where == "at" and differs[i, j]:
                at_p.append(float(s_prob[i, j]))
                at_p_top.append(float(s_prob_t_top[i, j]))
    m = r.completion_mask.bool().cpu()
    out = {k: (sum(v) / len(v) if v else None) for k, v in buckets.items()}
    out.update({f"n_{k}": len(v) for k, v in buckets.items()})
    out["neg_frac"] = float((rew[m] < 0).float().mean())
    out["at_wrong_tokens"] = len(at_p)
    out["at_student_p"] = sum(at_p) / len(at_p) if at_p else None
    out["at_student_p_teacher_top"] = sum(at_p_top) / len(at_p_top) if at_p_top else None
    out["min_mean_bucket"] = min((k for k in ("before", "at", "after") if out[k] is not None),
                                 key=lambda k: out[k], default=None)
    return out


@torch.no_grad()
def entropy_at_student_states(student, teacher, tokenizer, task, problems, *, seed: int = 0,
                              max_new_tokens: int | None = None) -> dict:
    """Mean per-token entropy (nats) of student and teacher at the student's own sampled prefixes,
    plus the reverse KL(student || teacher) and forward KL(teacher || student) there."""
    _, r, _, _ = _sample_groups(student, tokenizer, task, problems, 1, seed, max_new_tokens)
    s, t = completion_logits(student, r), completion_logits(teacher, r)
    m = r.completion_mask
    return {"student_entropy": L.entropy(s, m)[0].item(), "teacher_entropy": L.entropy(t, m)[0].item(),
            "reverse_kl": L.full_reverse_kl(s, t, m)[0].item(), "forward_kl": L.full_reverse_kl(t, s, m)[0].item()}


# ---------------------------------------------------------------------------------------------
# costs
# ---------------------------------------------------------------------------------------------
def first_reach(curve: list[dict], target: float, key: str = "eval/accuracy") -> dict | None:
    """The first evaluation row whose `key` reaches `target` (None if never)."""
    return next((c for c in curve if c.get(key) is not None and c[key] >= target), None)


def cost_table(log: RecordLog, runs: list[str], teacher_accuracy: float, target_frac: float = 0.9) -> list[dict]:
    """One row per run: final accuracy, total cost, and the cost to reach `target_frac` x teacher accuracy.

    `last3_accuracy` averages the last three evaluations: a run whose accuracy oscillates from one
    evaluation to the next is compared more fairly by it than by its final evaluation alone.

    Costs are cumulative at the first evaluation that reaches the target (resolution: `eval_every`).
    """
    target = target_frac * teacher_accuracy
    rows = []
    for run in runs:
        curve = log.evals.get(run, [])
        recs = log.records.get(run, [])
        last = recs[-1] if recs else {}
        hit = first_reach(curve, target)
        best = max((c["eval/accuracy"] for c in curve), default=float("nan"))
        rows.append({
            "run": run, "method": last.get("method"), "steps": last.get("step", 0),
            "final_accuracy": curve[-1]["eval/accuracy"] if curve else float("nan"), "best_accuracy": best,
            "last3_accuracy": sum(c["eval/accuracy"] for c in curve[-3:]) / len(curve[-3:]) if curve else float("nan"),
            "student_tokens": last.get("cost/student_tokens", 0), "teacher_tokens": last.get("cost/teacher_tokens", 0),
            "flops": last.get("cost/flops", 0.0), "train_s": last.get("train_s", 0.0),
            "student_tokens_to_target": hit["student_tokens"] if hit else None,
            "teacher_tokens_to_target": hit["teacher_tokens"] if hit else None,
            "flops_to_target": hit["flops"] if hit else None,
            "train_s_to_target": hit["train_s"] if hit else None,
            "target_accuracy": target})
    return rows


def kl_drift(log: RecordLog, key: str = "teacher/reverse_kl", frac: float = 0.2) -> dict[str, dict]:
    """Per run: the mean of `key` over its first and its last `frac` of steps (at least one step each).

    A run whose objective is the reverse KL should end below where it started; averaging a share of the
    steps at each end keeps one noisy batch from deciding.
    """
    out = {}
    for run, recs in log.records.items():
        ys = [r[key] for r in recs if key in r]
        if not ys:
            continue
        k = max(1, int(len(ys) * frac))
        out[run] = {"steps": len(ys), "kl_start": sum(ys[:k]) / k, "kl_end": sum(ys[-k:]) / k}
    return out


def ratio(a, b) -> float | None:
    """a / b, None when either is missing (e.g. a method never reached the target)."""
    if a is None or b is None or b == 0 or (isinstance(a, float) and math.isnan(a)):
        return None
    return a / b


def held_out(task, n: int, split: str = "test", seed: int = 0):
    """`n` fixed held-out problems of a split (the trainer's own eval set for split='test', seed=0)."""
    return task.problems(n, seed=seed, split=split)

