"""Synthetic per-step records (docs/records.md) for dashboard tests and fixture notebooks.

`SyntheticTrainer` mimics `workbench.trainer.Trainer`'s callback protocol:
`SyntheticTrainer(...).run(n, callbacks=[dash])`. Switching a notebook to the
real trainer is one line: `Trainer(cfg).run(n, callbacks=[dash])`.
"""

from __future__ import annotations

import math
import random
import time

VOCAB = list("0123456789+=") + [" ", "\n", "c", "<eos>"]


def make_samples(rng: random.Random, step: int, n: int = 4, max_new_tokens: int = 64,
                 teacher: bool = True) -> list[dict]:
    out = []
    for _ in range(n):
        length = rng.randint(8, max_new_tokens)
        toks = [rng.choice(VOCAB[:-1]) for _ in range(length - 1)] + ["<eos>"]
        logp = [-abs(rng.gauss(0.3, 0.3)) for _ in toks]
        rew = [rng.gauss(-0.1, 0.4) for _ in toks] if teacher else None
        out.append({"prompt": f"{rng.randint(100, 999)}+{rng.randint(100, 999)}=",
                    "tokens": toks, "token_reward": rew, "student_logprob": logp,
                    "correct": rng.random() < min(0.9, step / 200), "reward": 0.0,
                    "truncated": length >= max_new_tokens})
    return out


def make_record(step: int, run: str = "opd", method: str = "opd", total_steps: int = 100,
                max_new_tokens: int = 64, rng: random.Random | None = None, teacher: bool = True,
                eval_every: int = 10, n_samples: int = 4, samples: bool = True) -> dict:
    rng = rng or random.Random(step)
    acc = 1 - math.exp(-step / 60)
    rec = {
        "step": step, "run": run, "method": method, "total_steps": total_steps,
        "max_new_tokens": max_new_tokens,
        "loss": 1.0 / (1 + step / 20) + rng.gauss(0, 0.02),
        "rollout/mean_length": 40 + 4 * math.sin(step / 15) + rng.gauss(0, 1),
        "rollout/max_length": min(max_new_tokens, 52 + rng.randint(0, 12)),
        "rollout/truncated_frac": max(0.0, 0.05 * math.exp(-step / 80) + rng.gauss(0, 0.01)),
        "rollout/repetition_rate": max(0.0, 0.02 + rng.gauss(0, 0.005)),
        "reward/mean": acc + rng.gauss(0, 0.03),
        "train/accuracy": acc + rng.gauss(0, 0.03),
        "grad/norm": 1.0 + rng.random(),
    }
    if teacher:
        rec["teacher/token_reward_mean"] = -0.5 * math.exp(-step / 50) + rng.gauss(0, 0.02)
        rec["teacher/reverse_kl"] = 0.5 * math.exp(-step / 50) + abs(rng.gauss(0, 0.02))
    if eval_every and step % eval_every == 0:
        rec["eval/accuracy"] = acc
    if samples:
        rec["samples"] = make_samples(rng, step, n_samples, max_new_tokens, teacher)
    return rec


class SyntheticTrainer:
    """Fake trainer with the real one's run/callback protocol (on_start, on_step -> stop?, on_end)."""

    def __init__(self, run: str = "opd", method: str = "opd", total_steps: int = 100,
                 max_new_tokens: int = 64, sleep_s: float = 0.0, teacher: bool = True,
                 eval_every: int = 10, seed: int = 0, student_samples_every: int = 0):
        """student_samples_every > 0: an SFT-like run (config source="teacher") whose records carry the
        student's own teacher-scored samples every that many steps (workbench/student_samples.py)."""
        self.student_samples_every = student_samples_every
        self.run_name, self.method, self.total_steps = run, method, total_steps
        self.max_new_tokens, self.sleep_s, self.teacher = max_new_tokens, sleep_s, teacher
        self.eval_every = eval_every
        self.rng = random.Random(seed)
        self.step_count = 0
        self.t0 = None

    def step(self) -> dict:
        self.step_count += 1
        if self.sleep_s:
            time.sleep(self.sleep_s)
        rec = make_record(self.step_count, self.run_name, self.method, self.total_steps,
                          self.max_new_tokens, self.rng, self.teacher, self.eval_every)
        if self.student_samples_every and self.step_count % self.student_samples_every == 0:
            own = make_samples(self.rng, self.step_count, 4, self.max_new_tokens, teacher=True)
            rec["student_samples"] = own
            rec["student_samples/mean_length"] = sum(len(s["tokens"]) for s in own) / len(own)
            rec["student_samples/accuracy"] = sum(s["correct"] for s in own) / len(own)
        rec["time/elapsed_s"] = time.monotonic() - self.t0
        return rec

    def run(self, n: int | None = None, callbacks=()) -> dict:
        n = self.total_steps if n is None else n
        self.t0 = time.monotonic()
        info = {"run": self.run_name, "method": self.method, "total_steps": self.total_steps,
                "max_new_tokens": self.max_new_tokens, "start_step": self.step_count,
                "config": {"source": "teacher"} if self.student_samples_every else {}}
        for cb in callbacks:
            if hasattr(cb, "on_start"):
                cb.on_start(info)
        reason, message = "error", None
        try:
            reason = "completed"
            for _ in range(n):
                rec = self.step()
                stop = False
                for cb in callbacks:
                    if hasattr(cb, "on_step") and cb.on_step(rec):
                        stop = True
                        message = f"stopped by {type(cb).__name__}"    # as workbench.trainer words it
                if stop:
                    reason = "stopped"
                    break
        except KeyboardInterrupt:
            reason = "interrupted"
            raise
        except BaseException:
            reason = "error"
            raise
        finally:
            summary = {"run": self.run_name, "reason": reason, "step": self.step_count, "message": message or reason}
            for cb in callbacks:
                if hasattr(cb, "on_end"):
                    cb.on_end(summary)
        return summary
