"""Analyses the notebooks show: scratchpad columns graded on the model's own prefix, and estimator
gradient variance. (`experiments.column_error_profile` aggregates `column_steps` per column.)

Kept out of the notebooks so that they stay a few lines per cell, and tested
(tests/test_analysis.py) against hand-made completions.
"""
from __future__ import annotations

import copy
import re

import torch

from . import losses as L
from .batching import prompt_batch
from .config import generation_length
from .metrics import pool_position_profiles, teacher_position_profile
from .rollout import completion_logits, sample
from .tasks.arithmetic import AdditionOrders
from .tasks.repeat import Repeat
from .tokenizer import encode_text

_ADD_COL = re.compile(r"^(\d)\+(\d)\+(\d)=(\d\d)$")
_MUL_COL = re.compile(r"^(\d)\*(\d)\+(\d)=(\d\d)$")


def column_steps(task, problem, completion: str) -> list[dict]:
    """Grade each scratchpad column of an `addition`/`multiply` completion.

    For column i: `ok_reference` — the column equals the reference solution's;
    `ok_local` — the column is right *given the student's own previous column*
    (right operand digits from the prompt, carry-in = its own previous carry-out,
    right arithmetic). After a first mistake, `ok_local` tells whether the model
    still executes the procedure correctly on its own, off-distribution prefix —
    the quantity exposure bias is about.

    `addition-orders` columns may write their summands in any order: there a column is right when its
    summands are the column's two digits and carry-in *as a multiset* (and `ok_reference` compares
    multisets and totals with the reference column, whose order was drawn at random).
    """
    orders = task.name == "addition-orders"
    pat = _ADD_COL if task.name in ("addition", "addition-orders") else _MUL_COL if task.name == "multiply" else None
    if pat is None:
        raise ValueError(f"column_steps understands the addition and multiply scratchpads (and addition-orders), "
                         f"not {task.name!r}")
    scratch = completion.split("|")[0]
    ref_cols = problem.solution.split("|")[0].rstrip(",").split(",")
    cols = scratch.rstrip(",").split(",") if scratch else []
    if task.name != "multiply":
        a, b = problem.prompt.rstrip("=").split("+")
        digits = list(zip(reversed(a), reversed(b)))
    else:
        a, d = problem.prompt.rstrip("=").split("*")
        digits = [(x, d) for x in reversed(a)]
    out, carry = [], 0
    for i, col in enumerate(cols):
        m = pat.match(col)
        ok_ref = i < len(ref_cols) and (col == ref_cols[i] or (orders and _same_column(col, ref_cols[i])))
        if not m or i >= len(digits):
            out.append({"column": i, "ok_reference": ok_ref, "ok_local": False, "parsed": False})
            carry = 0
            continue
        x, y, c, total = int(m[1]), int(m[2]), int(m[3]), int(m[4])
        if orders:      # any order of the two digits and the carry-in
            ok_local = AdditionOrders.column_right(col, digits[i][0], digits[i][1], carry)
        else:
            want = (x + y + c) if task.name == "addition" else (x * y + c)
            ok_local = (str(x), str(y)) == tuple(digits[i]) and c == carry and total == want
        out.append({"column": i, "ok_reference": ok_ref, "ok_local": ok_local, "parsed": True})
        carry = total // 10
    return out


def _rollout_length(task, max_new_tokens: int | None) -> int:
    """The analyses sample as far as training does: `config.generation_length` (the task's length unless
    `max_new_tokens` is given). No fixed default: a guess here once cut rollouts short of the task's length."""
    if task is None and max_new_tokens is None:
        raise ValueError("pass task= (rollouts as long as the task's max_new_tokens, as in training) or "
                         "max_new_tokens=")
    return generation_length(task, max_new_tokens)


def _same_column(col: str, ref: str) -> bool:
    """Two `a+b+c=TT` columns with the same summands (any order) and the same total."""
    m, r = _ADD_COL.match(col), _ADD_COL.match(ref)
    return bool(m and r) and sorted(m.group(1, 2, 3)) == sorted(r.group(1, 2, 3)) and m[4] == r[4]


ESTIMATORS = ("sampled_token", "vopd", "full_kl", "topk")
# ask for these by name: top-K without renormalisation (Fu et al.'s ablation), and top-K whose support also holds
# the token the student sampled (so the sampled token's own mass is always matched, as Fu et al.'s variant does)
EXTRA_ESTIMATORS = ("topk_raw", "topk_sampled")


def estimator_gradients(student, teacher, tokenizer, problems, *, estimators=ESTIMATORS, repeats: int = 8,
                        batch_size: int = 16, topk: int = 4, task=None, max_new_tokens: int | None = None,
                        seed: int = 0) -> dict:
    """Gradient variance of OPD estimators at the current student (parameters are not updated).

    Each repeat samples a fresh minibatch of `batch_size` rollouts and computes every estimator's
    gradient on it; per estimator we report the mean squared distance of the minibatch gradients
    from the full-vocabulary reverse-KL gradient averaged over all repeats (the analytic target),
    and the cosine between its mean gradient and that target. Lower variance = fewer samples
    needed per step for the same signal. Rollouts are `_rollout_length(task, max_new_tokens)` tokens at most.
    """
    max_new = _rollout_length(task, max_new_tokens)
    params = [p for p in student.parameters() if p.requires_grad]
    dev = params[0].device
    gen = torch.Generator(device=dev).manual_seed(seed)
    grads = {e: [] for e in estimators}
    for rep in range(repeats):
        chunk = [problems[(rep * batch_size + i) % len(problems)] for i in range(batch_size)]
        ids, mask = prompt_batch(tokenizer, chunk, dev)
        r = sample(student, ids, mask, max_new_tokens=max_new, eos_token_id=tokenizer.eos_token_id,
                   pad_token_id=tokenizer.pad_token_id, temperature=1.0, generator=gen)
        with torch.no_grad():
            t_logits = completion_logits(teacher, r)
        for e in estimators:
            s_logits = completion_logits(student, r)
            m = r.completion_mask
            s_lp = L.token_logprobs(s_logits, r.completion_ids)
            t_lp = L.token_logprobs(t_logits, r.completion_ids)
            if e in ("sampled_token", "vopd"):
                adv = L.opd_token_rewards(s_lp, t_lp)
                if e == "vopd":
                    adv = L.vopd_advantages(adv, L.full_reverse_kl(s_logits.detach(), t_logits, m)[1])
                # surrogate whose gradient estimates grad KL: minimise -A log p
                loss = L.sampled_token_opd_loss(s_lp, adv, m)
            elif e == "full_kl":
                loss = L.full_reverse_kl(s_logits, t_logits, m)[0]
            elif e in ("topk", "topk_raw", "topk_sampled"):
                loss = L.topk_reverse_kl(s_logits, t_logits, m, k=topk, renormalize=e != "topk_raw",
                                         sampled_ids=r.completion_ids if e == "topk_sampled" else None)[0]
            else:
                raise ValueError(f"unknown estimator {e!r}; choose from {ESTIMATORS + EXTRA_ESTIMATORS}")
            g = torch.autograd.grad(loss, params)
            grads[e].append(torch.cat([x.reshape(-1) for x in g]).detach())
    target = torch.stack(grads["full_kl"]).mean(0) if "full_kl" in grads else None
    out = {}
    for e, gs in grads.items():
        G = torch.stack(gs)
        mean = G.mean(0)
        var = ((G - mean) ** 2).sum(1).mean().item()
        row = {"variance": var, "mean_norm": mean.norm().item()}
        if target is not None:
            row["cosine_to_full_kl"] = torch.nn.functional.cosine_similarity(mean, target, dim=0).item()
        out[e] = row
    return out


def variance_ratios(per_seed: list[dict], baseline: str = "sampled_token") -> dict:
    """Variance-reduction factors over seeds: for each estimator, `baseline`'s gradient variance divided by
    the estimator's, per seed (`per_seed`: one `estimator_gradients` result per seed).

    A factor of 2 is "halves the variance" (the vOPD / top-K claims, Fu et al.). Returns {estimator:
    {"by_seed", "mean", "std" (sample std; 0 for one seed), "min", "max"}}; the baseline itself is left out.
    """
    if not per_seed:
        raise ValueError("variance_ratios: no seeds")
    out = {}
    for e in per_seed[0]:
        if e == baseline:
            continue
        xs = [g[baseline]["variance"] / g[e]["variance"] if g[e]["variance"] > 0 else float("inf") for g in per_seed]
        mean = sum(xs) / len(xs)
        std = (sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)) ** 0.5 if len(xs) > 1 else 0.0
        out[e] = {"by_seed": xs, "mean": mean, "std": std, "min": min(xs), "max": max(xs)}
    return out


# ---------------------------------------------------------------------------------------------
# special-token mismatch (Fu et al.): a teacher that ends its answers with a different token
# ---------------------------------------------------------------------------------------------
def teacher_with_moved_token(teacher, token_id: int, to_id: int):
    """A copy of `teacher` whose output layer has rows `token_id` and `to_id` swapped.

    Everything the teacher computes is unchanged except which id it *emits*: where it used to put
    its end-of-sequence mass on `token_id` it now puts it on `to_id`, exactly what a teacher trained
    with a different EOS (or format) token id does when it scores another tokenizer's ids. Tied input
    embeddings are untied first, so the teacher still *reads* every id as before.
    """

    t = copy.deepcopy(teacher)
    head = t.get_output_embeddings()
    w = head.weight.detach().clone()
    w[[token_id, to_id]] = w[[to_id, token_id]]
    head.weight = torch.nn.Parameter(w, requires_grad=False)
    if getattr(head, "bias", None) is not None:
        b = head.bias.detach().clone()
        b[[token_id, to_id]] = b[[to_id, token_id]]
        head.bias = torch.nn.Parameter(b, requires_grad=False)
    t.config.tie_word_embeddings = False
    if hasattr(t.config, "get_text_config"):
        t.config.get_text_config().tie_word_embeddings = False
    return t.eval()


def teacher_with_swapped_tokens(teacher, a: int, b: int):
    """A copy of `teacher` that reads *and* writes token `b` wherever it used token `a`, and vice versa.

    Rows `a` and `b` of the input embeddings and of the output layer are swapped together (tied weights
    stay tied), so the copy is exactly the same model under a relabelling of two ids: given a prompt
    without either token, its completions are the original's with `a` and `b` exchanged, and it is just
    as accurate. Swapping a scratchpad token (e.g. the column separator `,`) with an id the student never
    uses (`<unk>`) gives a teacher with a *different scratchpad format* — Li et al.'s incompatible
    thinking pattern in its smallest form: it scores the student's `,` as an id it never emits, and
    reads it, in the student's prefixes, as an id it never saw.
    """

    t = copy.deepcopy(teacher)
    emb, head = t.get_input_embeddings(), t.get_output_embeddings()
    tied = head is not None and head.weight.data_ptr() == emb.weight.data_ptr()
    with torch.no_grad():
        for w in [emb.weight] + ([] if tied or head is None else [head.weight]):
            w[[a, b]] = w[[b, a]].clone()
        if head is not None and getattr(head, "bias", None) is not None:
            head.bias[[a, b]] = head.bias[[b, a]].clone()
    return t.eval()


@torch.no_grad()
def special_token_penalty(student, teacher, tokenizer, problems, *, token_id: int | None = None,
                          task=None, max_new_tokens: int | None = None, seed: int = 0) -> dict:
    """Per-token teacher reward r_t = log q - log p on student rollouts, split at `token_id` (default EOS).

    Returns the mean reward at that token's positions and at all other positions (nats), the share of
    the batch's total negative reward that sits at those positions, the share of the token-mean OPD
    loss they carry, and how many positions there were.
    """
    token_id = tokenizer.eos_token_id if token_id is None else token_id
    max_new = _rollout_length(task, max_new_tokens)
    dev = next(student.parameters()).device
    gen = torch.Generator(device=dev).manual_seed(seed)
    ids, mask = prompt_batch(tokenizer, problems, dev)
    r = sample(student, ids, mask, max_new_tokens=max_new, eos_token_id=tokenizer.eos_token_id,
               pad_token_id=tokenizer.pad_token_id, temperature=1.0, generator=gen)
    m = r.completion_mask.bool()
    rew = (L.token_logprobs(completion_logits(teacher, r), r.completion_ids)
           - L.token_logprobs(completion_logits(student, r), r.completion_ids))
    at = m & (r.completion_ids == token_id)
    other = m & ~at
    neg = (-rew).clamp(min=0)
    total_neg, total_loss = float(neg[m].sum()), float((-rew)[m].sum())
    return {"at_token": float(rew[at].mean()) if bool(at.any()) else None,
            "other": float(rew[other].mean()) if bool(other.any()) else None,
            "share_of_negative_reward": float(neg[at].sum()) / total_neg if total_neg > 0 else None,
            "share_of_loss": float((-rew)[at].sum()) / total_loss if total_loss > 0 else None,
            "positions": int(at.sum()), "tokens": int(m.sum())}


def reward_histogram(samples, bins=None, eps: float = 0.01) -> dict:
    """Histogram of per-token teacher rewards over record samples (`token_reward` lists).

    Returns {"edges", "counts", "neg_frac", "pos_frac", "near_zero_frac", "neg_mass_frac", "n", "min",
    "quantiles"}: Fu et al.'s imbalance in numbers. Record samples round rewards to 4 decimals, so signs are
    counted outside a dead band: `neg_frac` = share below -`eps`, `pos_frac` = share above `eps`,
    `near_zero_frac` the rest; `neg_mass_frac` = share of the total |reward| that is negative.
    """
    vals = torch.tensor([x for s in samples for x in (s.get("token_reward") or [])], dtype=torch.float32)
    if bins is None:
        bins = [-30, -20, -10, -5, -2, -1, -0.5, -0.1, -0.01, 0.01, 0.1, 0.5, 1, 2, 5]
    edges = torch.tensor(bins, dtype=torch.float32)
    n = int(vals.numel())
    if n == 0:
        return {"edges": list(bins), "counts": [0] * (len(bins) - 1), "neg_frac": None, "pos_frac": None,
                "near_zero_frac": None, "neg_mass_frac": None, "n": 0, "min": None, "quantiles": {}}
    clipped = vals.clamp(min=float(edges[0]), max=float(edges[-1]) - 1e-6)
    idx = torch.bucketize(clipped, edges, right=True) - 1
    counts = torch.bincount(idx.clamp(0, len(bins) - 2), minlength=len(bins) - 1).tolist()
    q = torch.quantile(vals, torch.tensor([0.01, 0.1, 0.5, 0.9, 0.99]))
    mass = float(vals.abs().sum())
    return {"edges": list(bins), "counts": counts, "neg_frac": float((vals < -eps).float().mean()),
            "pos_frac": float((vals > eps).float().mean()), "near_zero_frac": float((vals.abs() <= eps).float().mean()),
            "neg_mass_frac": float(vals.clamp(max=0).abs().sum()) / mass if mass > 0 else None,
            "n": n, "min": float(vals.min()),
            "quantiles": {k: float(v) for k, v in zip(("p01", "p10", "p50", "p90", "p99"), q)}}


# ---------------------------------------------------------------------------------------------
# why the one-sample estimator struggles: where the per-token reward's size comes from
# ---------------------------------------------------------------------------------------------
@torch.no_grad()
def reward_tails(student, teacher, tokenizer, task, problems, *, seed: int = 0, cliff: float = -5.0,
                 batch_size: int = 256, teacher_score_temperature: float = 1.0) -> dict:
    """The per-token reward r = log q - log p on the student's own temperature-1 samples, and who carries it.

    The sampled-token estimator's gradient is sum_t -r_t grad log p(y_t): a token's weight is |r_t|.
    Returns the teacher's and the student's mean entropy (nats per token) at the student's states, the
    full reverse KL, the quantiles of r, the fraction of tokens below `cliff` nats ("cliff tokens": the
    student wrote something the teacher all but rules out) and their share of sum |r| and of sum r^2
    (the estimator's second moment, which sets its variance). `teacher_score_temperature`: the teacher scored
    with its logits divided by it, as `TrainConfig.teacher_score_temperature` scores it in training.
    """
    dev = next(student.parameters()).device
    gen = torch.Generator(device=dev).manual_seed(seed)
    rews, ent_t, ent_s, kls, n_tok = [], 0.0, 0.0, 0.0, 0
    for i in range(0, len(problems), batch_size):
        ids, mask = prompt_batch(tokenizer, problems[i:i + batch_size], dev, task=task)
        r = sample(student, ids, mask, max_new_tokens=generation_length(task), eos_token_id=tokenizer.eos_token_id,
                   pad_token_id=tokenizer.pad_token_id, temperature=1.0, generator=gen)
        s_logits = completion_logits(student, r)
        t_logits = completion_logits(teacher, r, temperature=teacher_score_temperature)
        m = r.completion_mask
        n = float(m.sum())
        rews.append((L.token_logprobs(t_logits, r.completion_ids) - L.token_logprobs(s_logits, r.completion_ids))[m.bool()])
        ent_t += L.entropy(t_logits, m)[0].item() * n
        ent_s += L.entropy(s_logits, m)[0].item() * n
        kls += L.full_reverse_kl(s_logits, t_logits, m)[0].item() * n
        n_tok += int(n)
    rew = torch.cat(rews).double()
    cl = rew < cliff
    q = torch.quantile(rew, torch.tensor([0.001, 0.01, 0.1, 0.5, 0.9], dtype=rew.dtype))
    abs_sum, sq_sum = float(rew.abs().sum()), float((rew ** 2).sum())
    return {"tokens": n_tok, "teacher_entropy": ent_t / n_tok, "student_entropy": ent_s / n_tok,
            "reverse_kl": kls / n_tok, "reward_mean": float(rew.mean()), "reward_std": float(rew.std()),
            "reward_quantiles": {k: float(v) for k, v in zip(("p0.1", "p1", "p10", "p50", "p90"), q)},
            "cliff": cliff, "cliff_token_frac": float(cl.double().mean()),
            "cliff_share_of_abs_reward": float(rew[cl].abs().sum()) / abs_sum if abs_sum > 0 else None,
            "cliff_share_of_squared_reward": float((rew[cl] ** 2).sum()) / sq_sum if sq_sum > 0 else None}


# ---------------------------------------------------------------------------------------------
# where the teacher helps along the response (Li et al., Fu et al.: its benefit decays with prefix length)
# ---------------------------------------------------------------------------------------------
@torch.no_grad()
def teacher_signal_by_position(student, teacher, tokenizer, task, problems, *, seed: int = 0,
                               batch_size: int = 256, max_new_tokens: int | None = None) -> dict:
    """The teacher's signal at each completion position t, over the student's temperature-1 rollouts.

    Per position (index along the completion, EOS included): `reward` — mean of r_t = log q(y_t) - log p(y_t)
    on the sampled tokens (the sampled-token estimator's per-token reward); `top1_overlap` — share of
    rollouts whose student and teacher agree on the most likely next token; `reverse_kl` — mean full-
    vocabulary KL(p || q); `n` — rollouts that reached position t. Means are over the rollouts that reach t.
    (The trainer records the same profile of its training batch on evaluation steps: `teacher/by_position`.)
    """
    dev = next(student.parameters()).device
    gen = torch.Generator(device=dev).manual_seed(seed)
    max_new = _rollout_length(task, max_new_tokens)
    profiles = []
    for i in range(0, len(problems), batch_size):
        ids, mask = prompt_batch(tokenizer, problems[i:i + batch_size], dev, task=task)
        r = sample(student, ids, mask, max_new_tokens=max_new, eos_token_id=tokenizer.eos_token_id,
                   pad_token_id=tokenizer.pad_token_id, temperature=1.0, generator=gen)
        profiles.append(teacher_position_profile(completion_logits(student, r), completion_logits(teacher, r),
                                                 r.completion_ids, r.completion_mask))
    return pool_position_profiles(profiles)


@torch.no_grad()
def another_copy_probability(model, tokenizer, problems, offsets=(-1, 0, 1, 2, 4)) -> dict:
    """`repeat` task: the probability the model writes another copy (`,`) right after `count + d` copies,
    for each offset d — the stop decision, on time (d = 0: stopping is right), early (d < 0) and after an
    overshoot (d > 0: the student's loop states, which gold data never shows).

    Luo et al.'s length inflation needs a teacher that, on a looping prefix, prefers going on: compare a
    teacher's d > 0 rows with a student's. Prefixes are the prompt plus `d + count` copies joined by commas,
    so the next token is the decision itself. Returns {d: mean probability over the problems with
    count + d >= 1}.
    """
    comma = tokenizer.convert_tokens_to_ids(",")
    dev = next(model.parameters()).device
    out = {}
    for d in offsets:
        probs = []
        for p in problems:
            word, count = Repeat.parse_prompt(p.prompt)
            if count + d < 1:
                continue
            ids = torch.tensor([encode_text(tokenizer, p.prompt + ",".join([word] * (count + d)), add_bos=True)],
                               device=dev)
            probs.append(torch.softmax(model(ids).logits[0, -1].float(), -1)[comma].item())
        out[d] = sum(probs) / len(probs) if probs else None
    return out
