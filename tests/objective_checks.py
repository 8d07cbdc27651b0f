"""Checks that a training step moves each method the right way (issue 15, items 2 and 3).

Shared by tests/test_directions.py, which runs them on the real code, and tests/test_mutations.py, which
runs them under deliberately broken trainers (gradient ascent, flipped advantages, an ignored completion
mask, the teacher swapped for the student) and expects each to fail. Each check raises AssertionError.

Set-up: nano models (d32, one layer), a fixed batch (the trainer's `_batch` always returns step 1's prompts
and sampler seed, so on-policy methods resample the same prompts from the current student), a few steps at
lr 1e-2, and a measured quantity computed here from the models, not read from the trainer's records:
  SFT family  (sft, filtered_sft): NLL of the fixed teacher traces (weighted as the method weights them) down;
  OPD family  (opd, opd_full, gkd, exopd, stable_opd): reverse KL(student || teacher), summed over the
              vocabulary at the states of a fixed set of rollouts, down;
  GRPO:       the exact expected reward (the probability of the rewarded first token, from the softmax) up.
Margins are a fraction of the change these runs show (measured on the development machine, 1 thread):
sft's trace NLL drops by ~0.7 nats against a margin of 0.1 (filtered_sft, on the kept traces: more); the OPD
family's reverse KL falls to 0.1-0.5 of its start (0.14 nats) against a margin of 0.8; GRPO's expected reward
rises by ~0.27 against a margin of 0.02 (the same numbers with 1 and 2 threads). Float32 differences between CPUs move these by orders of magnitude less, while
a mutant moves the quantity the other way or not at all (tests/test_mutations.py).
"""
from __future__ import annotations

import copy

import torch

from workbench.batching import decode_completions, prompt_batch
from workbench.config import TrainConfig
from workbench.models import build_model
from workbench.rollout import to_rollout, completion_logits, positions_from_mask
from workbench.tasks import Addition, Verdict
from workbench.tokenizer import build_tokenizer
from workbench.trainer import Trainer

SFT_FAMILY = ("sft", "filtered_sft")
OPD_FAMILY = ("opd", "opd_full", "gkd", "exopd", "stable_opd")
GRPO_FAMILY = ("grpo",)
STEPS, LR, MAX_NEW = 6, 1e-2, 6
TARGET = "7"                     # the rewarded first character of the toy task


class FirstCharTask(Addition):
    """Addition prompts, reward 1 when the completion starts with `target`: a reward a nano model can raise in
    a few steps (addition itself is out of its reach), and whose expectation is one softmax entry."""
    name = "first-char"

    def __init__(self, target: str = TARGET):
        super().__init__()
        self.target = target

    def verify(self, problem, completion, truncated=False):
        ok = completion.startswith(self.target)
        return Verdict(reward=1.0 if ok else 0.0, answer=completion[:1], correct=ok)

    def min_new_tokens(self, split="train", n=64):
        return 1


_CACHE = {}


def pair():
    """(tokenizer, teacher, student): nano models; the teacher is sharper than the student (reverse KL ~0.4
    nats per token, not the ~0.03 of two near-uniform random models, so OPD's signal outweighs Stable-OPD's
    gold-SFT term); the student leans towards TARGET (so GRPO groups see rewards)."""
    if not _CACHE:
        tok = build_tokenizer(Addition().charset)
        t7 = tok.convert_tokens_to_ids(TARGET)
        teacher, student = build_model("nano", tok, seed=1).eval(), build_model("nano", tok, seed=2)
        with torch.no_grad():
            teacher.model.norm.weight.mul_(3.0)     # logits x3: sharper than the student, a KL worth closing
            student.get_output_embeddings().weight[t7] *= 2.0
        _CACHE.update(tok=tok, teacher=teacher, student=student)
    return _CACHE["tok"], _CACHE["teacher"], _CACHE["student"]


def trainer(method, **kw) -> Trainer:
    """A Trainer on copies of the pair whose every step trains on step 1's batch."""
    tok, teacher, student = pair()
    extra = {"num_generations": 8} if method == "grpo" else {}
    cfg = TrainConfig.for_method(method, **{**dict(batch_size=32, steps=STEPS, lr=LR, warmup_steps=0, eval_every=0,
                                                   eval_problems=4, max_new_tokens=MAX_NEW, device="cpu", seed=0),
                                            **extra, **kw})
    tr = Trainer(cfg, teacher=copy.deepcopy(teacher), student=copy.deepcopy(student), tokenizer=tok,
                 task=FirstCharTask())
    batch = tr._batch
    tr._batch = lambda k: batch(1)
    return tr


def _masked_mean(x, w):
    return (x * w).sum() / w.sum()


@torch.no_grad()
def trace_nll(tr, r, weights) -> float:
    logits = completion_logits(tr.student, r)
    lp = torch.log_softmax(logits, -1).gather(-1, r.completion_ids[..., None])[..., 0]
    return _masked_mean(-lp, weights).item()


@torch.no_grad()
def reverse_kl(student, teacher, r) -> float:
    """mean over the completion's states of sum_v pi(v) (log pi(v) - log q(v))."""
    lp = torch.log_softmax(completion_logits(student, r), -1)
    lq = torch.log_softmax(completion_logits(teacher, r), -1)
    return _masked_mean((lp.exp() * (lp - lq)).sum(-1), r.completion_mask).item()


@torch.no_grad()
def expected_reward(tr, problems) -> float:
    ids, mask = prompt_batch(tr.tokenizer, problems, task=tr.task)
    logits = tr.student(input_ids=ids, attention_mask=mask, position_ids=positions_from_mask(mask)).logits[:, -1]
    return torch.softmax(logits.float(), -1)[:, tr.tokenizer.convert_tokens_to_ids(TARGET)].mean().item()


def _train(tr):
    for _ in range(STEPS):
        rec = tr.step()
        assert "nonfinite/skipped" not in rec, rec.get("nonfinite/reason")


def check_direction(method):
    """A few steps on a fixed batch move the quantity `method` targets the right way."""
    tr = trainer(method)
    _, problems, r, _ = tr._batch(1)
    if method in SFT_FAMILY:
        # the filter keeps the traces that start with the teacher's most frequent first character
        firsts = [t[:1] for t in decode_completions(tr.tokenizer, r) if t]
        tr.task.target = max(sorted(set(firsts)), key=firsts.count)
        rewards = torch.tensor([tr.task.verify(p, t).reward for p, t in zip(problems, decode_completions(tr.tokenizer, r))])
        w = r.completion_mask * (rewards[:, None] if method == "filtered_sft" else 1.0)
        assert method == "sft" or 0 < rewards.sum() < len(rewards), "the filter keeps all or nothing: moot"
        before = trace_nll(tr, r, w)
        _train(tr)
        after = trace_nll(tr, r, w)
        assert after < before - 0.1, f"{method}: NLL of the fixed traces {before:.4f} -> {after:.4f}, not down"
    elif method in OPD_FAMILY:
        teacher = pair()[1]                 # the real teacher, whatever the trainer holds
        before = reverse_kl(tr.student, teacher, r)
        _train(tr)
        after = reverse_kl(tr.student, teacher, r)
        assert after < 0.8 * before, f"{method}: reverse KL {before:.4f} -> {after:.4f}, not down by 20%"
    elif method in GRPO_FAMILY:
        unique = problems[::tr.cfg.num_generations]
        before = expected_reward(tr, unique)
        _train(tr)
        after = expected_reward(tr, unique)
        assert after > before + 0.02, f"{method}: expected reward {before:.4f} -> {after:.4f}, not up"
    else:
        raise ValueError(method)


def check_mask_respected(method):
    """The loss and its gradient ignore what follows each row's EOS: two batches that differ only there give
    the same step (loss and gradient norm within float32 noise of one process: same ops, same shapes)."""
    recs = []
    for filler in ("pad", "junk"):
        tr = trainer(method, steps=1)
        unique, problems, r, on_policy = tr._batch(1)
        tok = tr.tokenizer
        B, N = r.completion_ids.shape[0], MAX_NEW
        comp = torch.full((B, N), tok.convert_tokens_to_ids("1"), dtype=torch.long)
        t7, t3 = tok.convert_tokens_to_ids(TARGET), tok.convert_tokens_to_ids("3")
        for b in range(B):                  # EOS at varying places; rewarded and unrewarded rows in every group
            comp[b, 0] = t7 if b % 2 else t3
            end = 1 + b % (N - 2)
            comp[b, end] = tok.eos_token_id
            comp[b, end + 1:] = tok.pad_token_id if filler == "pad" else t7
        rr = to_rollout(r.prompt_ids, r.prompt_mask, comp, torch.zeros(B, N), tok.eos_token_id,
                         None if r.sampler_logprobs is None else torch.zeros(B, N))
        assert (rr.completion_mask.sum(-1) < N).all()
        tr._batch = lambda k, rr=rr: (unique, problems, rr, on_policy)
        recs.append(tr.step())
    a, b = recs
    for key in ("loss", "grad/norm"):
        assert abs(a[key] - b[key]) <= 1e-5 * max(1.0, abs(a[key])), \
            f"{method}: {key} depends on tokens after EOS ({a[key]!r} vs {b[key]!r})"
