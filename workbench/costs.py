"""Token and FLOP accounting from parameter counts (the standard 2N / 6N approximation).

A forward pass over one token costs about 2N FLOPs for a model with N
parameters; forward + backward about 6N (Kaplan et al. 2020). Attention's
sequence-length term is ignored: at our lengths (< 100 tokens) and widths it
is a few percent. Generation with a KV cache processes each token once, so
sampling n tokens costs about 2N n.

Units: `student_tokens` counts completion tokens the student either generated
or was trained on, plus prompt tokens it read; `teacher_tokens` counts tokens
the teacher generated or scored (prompt included). Every method pays in the
same units, so "OPD is N x cheaper" is computed from these, not asserted.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class CostMeter:
    student_params: int
    teacher_params: int = 0
    student_tokens: int = 0
    teacher_tokens: int = 0
    flops: float = 0.0

    def student_generate(self, tokens: int) -> None:
        self.student_tokens += tokens
        self.flops += 2 * self.student_params * tokens

    def student_train(self, tokens: int) -> None:
        """Forward + backward over `tokens` positions (the tokens themselves were counted when generated,
        or are counted here when they came from elsewhere: see `off_policy`)."""
        self.flops += 6 * self.student_params * tokens

    def student_read(self, tokens: int) -> None:
        """Tokens the student trains on that it did not generate (teacher traces, gold solutions)."""
        self.student_tokens += tokens

    def student_forward(self, tokens: int) -> None:
        """A forward without backward (e.g. reference model = frozen initial student)."""
        self.flops += 2 * self.student_params * tokens

    def teacher_generate(self, tokens: int) -> None:
        self.teacher_tokens += tokens
        self.flops += 2 * self.teacher_params * tokens

    def teacher_score(self, tokens: int) -> None:
        self.teacher_tokens += tokens
        self.flops += 2 * self.teacher_params * tokens

    def as_metrics(self) -> dict:
        return {"cost/student_tokens": self.student_tokens, "cost/teacher_tokens": self.teacher_tokens,
                "cost/flops": self.flops}

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, d: dict) -> None:
        for k, v in d.items():
            setattr(self, k, v)
