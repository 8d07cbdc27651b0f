"""The task API: a generator of problems, a verifier, a character set.

A task is what the student is post-trained on. It knows three things:
  * how to draw a problem (prompt, reference solution, final answer) for a split,
  * how to grade a completion (reward in [0, 1] plus the parsed answer),
  * its character set and a sensible `max_new_tokens`.

Completions end with `ANSWER_SEP` followed by the final answer; the default
verifier reads the text after the last separator. Defining a new task is a
subclass with `charset`, `max_new_tokens` and `make_problem` (see
`notebooks/01_task_and_models` for a ~20-line example).
"""
from __future__ import annotations

import inspect
import random
from dataclasses import dataclass

from ..tokenizer import encode_text

ANSWER_SEP = "|"


class TaskSpecError(ValueError):
    """A task that cannot be found, constructed or recorded (the message says how to fix it)."""


@dataclass(frozen=True)
class Problem:
    prompt: str       # what the model is conditioned on (BOS is added by the tokenizer)
    solution: str     # a reference completion: scratchpad + ANSWER_SEP + answer (no EOS)
    answer: str       # the final answer as text


@dataclass(frozen=True)
class Verdict:
    reward: float           # in [0, 1]
    answer: str | None      # parsed answer; None when malformed or truncated
    correct: bool


class Task:
    """Base class. Subclasses set `name`, `charset`, `max_new_tokens`, `splits` and `make_problem`."""

    name: str = "task"
    charset: str = ""
    max_new_tokens: int = 64
    splits: tuple[str, ...] = ("train", "test")

    def make_problem(self, rng: random.Random, split: str) -> Problem:
        raise NotImplementedError

    def params(self) -> dict:
        """The constructor arguments that rebuild this task: `type(self)(**self.params())`.

        Run directories record them (with the class's import path, `tasks.task_spec`) so that `--resume`
        rebuilds the same task. Default: each `__init__` parameter read back from the attribute of the same
        name (store `self.max_digits = max_digits` and it is recorded). A parameter with no such attribute is
        an error here, never a silent default: store it, or override `params()`.
        """
        out = {}
        if type(self).__init__ is object.__init__:      # no constructor of its own: nothing to record
            return out
        for name, p in list(inspect.signature(type(self).__init__).parameters.items())[1:]:
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                raise TaskSpecError(f"task {type(self).__qualname__} takes *args/**kwargs, which cannot be recorded "
                                    "from its attributes; define params() returning its constructor arguments")
            if not hasattr(self, name):
                raise TaskSpecError(f"task {type(self).__qualname__} cannot be recorded: __init__ takes {name!r} but "
                                    f"the instance has no attribute {name!r}; store it (self.{name} = {name}) or "
                                    "define params() returning the constructor arguments")
            out[name] = getattr(self, name)
        return out

    # ---- everything below works for any subclass -------------------------------------
    def problems(self, n: int, seed: int = 0, split: str = "train") -> list[Problem]:
        """`n` problems drawn with a private RNG: the same (n, seed, split) always gives the same list.

        The seed is mixed with the split name so that `train` and `test` never share a stream.
        """
        if split not in self.splits:
            raise ValueError(f"task {self.name!r} has no split {split!r}; choose one of {list(self.splits)}")
        if n <= 0:
            raise ValueError(f"number of problems must be positive, got {n}")
        rng = random.Random(f"{self.name}:{split}:{seed}")
        return [self.make_problem(rng, split) for _ in range(n)]

    def parse_answer(self, completion: str) -> str | None:
        if ANSWER_SEP not in completion:
            return None
        ans = completion.rsplit(ANSWER_SEP, 1)[1].strip()
        return ans or None

    def verify(self, problem: Problem, completion: str, truncated: bool = False) -> Verdict:
        """Exact match on the final answer. A truncated completion (hit the cap without EOS) scores 0."""
        ans = None if truncated else self.parse_answer(completion)
        ok = ans is not None and self.answers_equal(ans, problem.answer)
        return Verdict(reward=1.0 if ok else 0.0, answer=ans, correct=ok)

    def answers_equal(self, got: str, want: str) -> bool:
        return got == want

    def encode_prompt(self, tokenizer, prompt: str) -> list[int]:
        """Token ids the model is conditioned on for `prompt` (default: the text with BOS).

        Tasks for chat models override this to go through the tokenizer's chat template
        (see `tasks.gsm8k.GSM8K`); `batching.prompt_batch(..., task=task)` calls it.
        """
        return encode_text(tokenizer, prompt, add_bos=True)

    def min_new_tokens(self, split: str = "train", n: int = 64) -> int:
        """Longest reference solution (+1 for EOS) over a sample: `max_new_tokens` below it cannot succeed."""
        return max(len(p.solution) for p in self.problems(n, seed=12345, split=split)) + 1

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"
