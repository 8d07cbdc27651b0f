"""The student's own samples during SFT: what it writes on the prompts it is being taught.

SFT (source="teacher") trains on the teacher's traces, so its rollout metrics (length, reward,
train accuracy) describe the teacher's text and sit near 1.0: they say nothing about the student,
whose own behaviour is what exposure bias is about. Every `cfg.student_samples_every` steps the
trainer calls `student_samples(trainer, k, problems)`: the student samples one completion per
training prompt of step k (temperature `cfg.temperature`, generator seeded from (seed, k), so the
training randomness is untouched), the verifier grades them and the teacher scores every token
(no gradient). The result goes into the record as `student_samples` (the heatmap's sample format,
docs/records.md) and `student_samples/*` scalars.

Its compute is evaluation, not training: nothing here touches `cost/*` (the trainer's ledger of
what the method pays); the tokens it cost are reported as `student_samples/student_tokens` and
`student_samples/teacher_tokens` of that step.
"""
from __future__ import annotations

import time

import torch

from . import losses as L
from .batching import decode_completions
from .losses import TEACHER_LOGIT_FLOOR
from .metrics import repetition_rate
from .rollout import completion_logits
from .sampling import seed_for

SEED_STREAM = 3   # (seed, step, stream) seeds the generator; streams 1-2 are the trainer's own


def student_samples(trainer, k: int, problems) -> dict:
    """Record keys for step k: the student's own samples on `problems`, scored by the teacher."""
    cfg, student = trainer.cfg, trainer.student
    t0 = time.time()
    gen = torch.Generator(device=trainer.device).manual_seed(seed_for(cfg.seed, k, SEED_STREAM))
    was_training = student.training
    student.eval()
    try:
        with torch.no_grad():
            r = trainer._sample(student, problems, gen, cfg.temperature, cfg.top_p, cfg.top_k)
            texts = decode_completions(trainer.tokenizer, r)
            verdicts = [trainer.task.verify(p, t, truncated=tr)
                        for p, t, tr in zip(problems, texts, r.truncated.tolist())]
            s_lp = L.token_logprobs(completion_logits(student, r), r.completion_ids)
            t_lp = None
            if trainer.teacher is not None:
                t_logits = completion_logits(trainer.teacher, r).clamp(min=TEACHER_LOGIT_FLOOR)
                t_lp = L.token_logprobs(t_logits, r.completion_ids)
    finally:
        student.train(was_training)
    mask = r.completion_mask.bool()
    lengths = r.lengths.float()
    tokens = int(r.prompt_mask.sum() + r.completion_mask.sum())
    out = {"student_samples": trainer._samples(problems, r, texts, verdicts, s_lp, t_lp),
           "student_samples/mean_length": lengths.mean().item(),
           "student_samples/max_length": lengths.max().item(),
           "student_samples/truncated_frac": r.truncated.float().mean().item(),
           "student_samples/repetition_rate": repetition_rate(texts),
           "student_samples/reward_mean": sum(v.reward for v in verdicts) / len(verdicts),
           "student_samples/accuracy": sum(v.correct for v in verdicts) / len(verdicts),
           "student_samples/student_tokens": tokens,
           "student_samples/teacher_tokens": tokens if t_lp is not None else 0}
    if t_lp is not None:
        out["student_samples/token_reward_mean"] = (t_lp - s_lp)[mask].mean().item()
    out["time/student_samples_s"] = time.time() - t0
    return out
