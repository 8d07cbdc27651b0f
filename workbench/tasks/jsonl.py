"""Your own problems from a JSONL file, graded by a built-in task's verifier.

One JSON object per line (blank lines are skipped):

    {"prompt": "00123+04567=", "solution": "3+7+0=10,...,|004690", "answer": "004690"}

`prompt` is what the model is conditioned on, `solution` a reference completion
(scratchpad, `|`, answer; used by SFT on gold solutions and the Stable-OPD
mixture), `answer` the final answer the verifier compares against. Every
character must be in the task's character set (the tokenizer has no others).

    task = JsonlProblems("my_problems.jsonl", base="addition")   # or TrainConfig(data="my_problems.jsonl")

Training problems are drawn from the file; held-out evaluation (`test`, `long`,
`short` splits) stays on the base task's generator. A bad file fails on load,
before any model is touched, with the file and line of the first bad row.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

from . import get_task
from .base import Problem, Task

FIELDS = ("prompt", "solution", "answer")


def load_problems(path, charset: str | None = None) -> list[Problem]:
    """Problems of a JSONL file. Raises FileNotFoundError / ValueError naming the file and the line."""
    p = Path(path).expanduser()
    example = '{"prompt": "...", "solution": "...", "answer": "..."}'
    if not p.exists():
        raise FileNotFoundError(f"data file {str(p)!r} does not exist; pass a JSONL file with one {example} "
                                "object per line")
    if not p.is_file():
        raise ValueError(f"data path {str(p)!r} is a directory, not a JSONL file")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"data file {str(p)!r} could not be read ({e}); it must be UTF-8 JSONL") from e
    allowed = set(charset) if charset else None
    rows = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{p}:{n}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: not valid JSON ({e.msg}); each line must be one object like {example}") \
                from None
        if not isinstance(row, dict):
            raise ValueError(f"{where}: expected a JSON object like {example}, got {type(row).__name__}")
        missing = [f for f in FIELDS if f not in row]
        if missing:
            raise ValueError(f"{where}: missing field(s) {missing}; every row needs {list(FIELDS)}")
        for f in FIELDS:
            if not isinstance(row[f], str) or not row[f]:
                raise ValueError(f"{where}: field {f!r} must be a non-empty string, got {row[f]!r}")
        if allowed is not None:
            bad = sorted({c for f in FIELDS for c in row[f]} - allowed)
            if bad:
                raise ValueError(f"{where}: characters {bad} are not in the task's character set "
                                 f"{''.join(sorted(allowed))!r}; the tokenizer cannot encode them")
        rows.append(Problem(prompt=row["prompt"], solution=row["solution"], answer=row["answer"]))
    if not rows:
        raise ValueError(f"data file {str(p)!r} has no problems (it is empty)")
    return rows


def task_with_data(spec, data=None) -> tuple[Task, Task]:
    """(the task `spec` names, the task trained on: with the problems of the file `data` when given).

    For the tasks that read files themselves (`gsm8k`, `qa`) the file is their data, read in their format;
    any other task gets the file's {prompt, solution, answer} rows (`with_data`).
    """
    if data and isinstance(spec, str) and spec in ("qa", "gsm8k"):
        base = get_task(spec, path=data)
    else:
        base = get_task(spec)
    return base, (with_data(base, data) if data else base)


def with_data(task: Task, path) -> Task:
    """`task` trained on the problems of the file `path` (`TrainConfig.data`, `--data`).

    A task that reads files itself (GSM8K, QA: a `with_data` method) reads this one in its own format;
    any other task gets `JsonlProblems` rows ({prompt, solution, answer}) graded by its verifier.
    Applying the same file twice is a no-op (a resumed run's recorded task already holds its data).
    """
    if hasattr(task, "with_data"):
        return task.with_data(path)
    if isinstance(task, JsonlProblems) and task.path == str(path):
        return task
    return JsonlProblems(path, base=task)


class JsonlProblems(Task):
    """A task whose `train` problems come from a JSONL file; verifier, charset and other splits from `base`."""

    def __init__(self, path, base: Task | str = "addition"):
        self.base = get_task(base)
        self.path = str(path)
        self.name = self.base.name
        self.charset = self.base.charset
        self.splits = self.base.splits
        self.rows = load_problems(path, charset=self.charset)
        longest = max(len(r.solution) for r in self.rows) + 1
        self.max_new_tokens = max(self.base.max_new_tokens, longest)

    def make_problem(self, rng: random.Random, split: str) -> Problem:
        if split == "train":
            return self.rows[rng.randrange(len(self.rows))]
        return self.base.make_problem(rng, split)

    def min_new_tokens(self, split: str = "train", n: int = 64) -> int:
        if split == "train":
            return max(len(r.solution) for r in self.rows) + 1
        return self.base.min_new_tokens(split, n)

    def parse_answer(self, completion: str):
        return self.base.parse_answer(completion)

    def answers_equal(self, got: str, want: str) -> bool:
        return self.base.answers_equal(got, want)

    def verify(self, problem, completion, truncated=False):
        return self.base.verify(problem, completion, truncated=truncated)

    def __repr__(self) -> str:
        return f"JsonlProblems({self.path!r}, base={self.base!r}, rows={len(self.rows)})"
