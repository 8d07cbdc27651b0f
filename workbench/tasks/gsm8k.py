"""Grade-school math word problems with numeric answers, in GSM8K's format, for real tokenizers.

Data: a local JSONL or parquet file with columns `question` and `answer`, where the
answer is a worked solution whose last line is `#### N` (N a number, e.g. `#### 72`).
Nothing is downloaded: pass the path of a file you have (e.g. GSM8K's `train.jsonl`).
`data/gsm8k_sample.jsonl` ships a dozen problems written for this project (not taken
from GSM8K) for tests and demos.

Verifier: the final number. For a completion it is the number right after the last
`####` when there is one, else the last number in the text; `1,250`, `$1250.00` and
`1250` all mean 1250. A truncated completion (no EOS within max_new_tokens) scores 0.

Prompts are meant for chat models: `encode_prompt` renders the question (plus a short
instruction to end with `#### N`) as a user turn through the tokenizer's chat template,
with the generation prompt. A tokenizer without a chat template gets the plain text.
The character-level tokenizer of the synthetic tasks cannot represent this task.

Splits: `train` draws problems from the training file with replacement (like the
synthetic tasks); `test` is `test_path` when given, else a fixed held-out fraction of
the file (`test_frac`), returned in order without repetition by `problems(n, split="test")`.
"""
from __future__ import annotations

import json
import random
import re
from decimal import Decimal, InvalidOperation
from pathlib import Path

from ..tokenizer import chat_prompt_ids
from .base import Problem, Task

SAMPLE_PATH = Path(__file__).resolve().parents[2] / "data" / "gsm8k_sample.jsonl"
FINAL = "####"
INSTRUCTION = "Solve the problem step by step. Finish with a last line of the form `#### <number>`."

# thousands-grouped numbers first (1,250.5), then plain ones (-3, 0.75, 1250)
_NUMBER = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\d+(?:\.\d+)?|-?\.\d+")


class DataError(ValueError):
    """A data file that cannot be read as GSM8K-format problems (names the file and line)."""


def normalize_number(text: str) -> str | None:
    """Canonical text of a number: `1,250.00` -> `1250`, `0.750` -> `0.75`, `$-3` -> `-3`; None if not one."""
    s = text.strip().replace("$", "").replace(",", "").rstrip(".")
    if not s:
        return None
    try:
        d = Decimal(s)
    except InvalidOperation:
        return None
    if not d.is_finite():
        return None
    if d == d.to_integral_value():
        return str(int(d))
    return format(d.normalize(), "f")


def extract_answer(text: str) -> str | None:
    """The final number of a solution or completion (see module docstring), normalised; None if none."""
    if FINAL in text:
        tail = text.rsplit(FINAL, 1)[1]
        m = _NUMBER.search(tail.replace("$", ""))
        return normalize_number(m.group(0)) if m else None
    found = _NUMBER.findall(text.replace("$", ""))
    return normalize_number(found[-1]) if found else None


def read_table(path: str | Path, required=("question", "answer"),
               hint: str = "GSM8K format has 'question' and 'answer' (a worked solution ending in '#### N')"
               ) -> list[tuple[str, dict]]:
    """(where, row) pairs of a JSONL or parquet file having the `required` columns; bad files raise DataError."""
    import pandas as pd   # optional-import: pandas costs ~1 s to import; only file readers need it

    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"data file {str(p)!r} does not exist; pass the path of a local JSONL or parquet "
                                f"file with columns {list(required)} (a GSM8K sample ships at {SAMPLE_PATH})")
    suffix = p.suffix.lower()
    if suffix in (".jsonl", ".json"):
        rows, where = [], []
        with open(p, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{p}:{lineno}: not valid JSON ({e.msg}); each line must be one object with "
                                    f"{list(required)}") from None
                if not isinstance(obj, dict):
                    raise DataError(f"{p}:{lineno}: expected a JSON object with {list(required)}, "
                                    f"got {type(obj).__name__}")
                rows.append(obj)
                where.append(f"{p}:{lineno}")
        df = pd.DataFrame(rows)
    elif suffix == ".parquet":
        try:
            df = pd.read_parquet(p)
        except ImportError as e:
            raise DataError(f"{p}: reading parquet needs pyarrow (or fastparquet): pip install pyarrow "
                            f"({e}); or convert the file to JSONL") from None
        where = [f"{p}: row {i}" for i in range(len(df))]
    else:
        raise DataError(f"{p}: unsupported file type {suffix!r}; use .jsonl or .parquet")
    if len(df) == 0:
        raise DataError(f"{p}: no rows")
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataError(f"{p}: missing column(s) {missing}; found {list(df.columns)}. {hint}")
    return list(zip(where, df.to_dict("records")))


def read_problems(path: str | Path) -> list[Problem]:
    """Problems from a JSONL or parquet file of {question, answer}; malformed rows raise DataError (file:line)."""
    out = []
    for loc, row in read_table(path):
        q, a = row["question"], row["answer"]
        if not isinstance(q, str) or not q.strip():
            raise DataError(f"{loc}: 'question' is empty or not text ({q!r})")
        if not isinstance(a, str) or FINAL not in a:
            raise DataError(f"{loc}: 'answer' must be a worked solution ending in '{FINAL} N'; got {a!r:.80}")
        final = a.rsplit(FINAL, 1)[1].strip()
        num = normalize_number(final)
        if num is None:
            raise DataError(f"{loc}: the text after '{FINAL}' is not a number: {final!r}")
        out.append(Problem(prompt=q.strip(), solution=a.strip(), answer=num))
    return out


class GSM8K(Task):
    """GSM8K-format word problems from a local file (default: the shipped 12-problem sample)."""

    name = "gsm8k"
    charset = ""                 # real tokenizers only: no character check
    splits = ("train", "test")

    def __init__(self, path: str | Path | None = None, *, test_path: str | Path | None = None,
                 test_frac: float = 0.25, max_new_tokens: int = 256, instruction: str | None = INSTRUCTION,
                 system_prompt: str | None = None, seed: int = 0):
        if not 0.0 <= test_frac < 1.0:
            raise ValueError(f"test_frac must be in [0, 1), got {test_frac}")
        if max_new_tokens <= 0:
            raise ValueError(f"max_new_tokens must be positive, got {max_new_tokens}")
        self.path = Path(path) if path is not None else SAMPLE_PATH
        self.test_path = Path(test_path) if test_path is not None else None
        self.test_frac, self.seed = test_frac, seed          # kept: params() records them (run directories)
        self.max_new_tokens = int(max_new_tokens)
        self.instruction = instruction
        self.system_prompt = system_prompt
        rows = self.read(self.path)
        if test_path is not None:
            self.train, self.test = rows, self.read(test_path)
        else:
            order = list(range(len(rows)))
            random.Random(f"gsm8k-split:{seed}").shuffle(order)
            n_test = int(round(len(rows) * test_frac))
            if test_frac > 0 and len(rows) > 1:
                n_test = min(max(n_test, 1), len(rows) - 1)
            test_idx = set(order[:n_test])
            self.test = [rows[i] for i in sorted(test_idx)]
            self.train = [rows[i] for i in range(len(rows)) if i not in test_idx]
            if not self.test:          # test_frac=0: evaluate on the training problems (said plainly)
                self.test = list(self.train)

    def read(self, path) -> list[Problem]:
        """The problems of one file (subclasses read other formats)."""
        return read_problems(path)

    def with_data(self, path) -> "GSM8K":
        """This task on the problems of another file (`--data FILE`), every other setting kept."""
        if Path(path) == self.path:
            return self
        return type(self)(**{**self.params(), "path": path})

    def _rows(self, split: str) -> list[Problem]:
        if split not in self.splits:
            raise ValueError(f"task {self.name!r} has no split {split!r}; choose one of {list(self.splits)}")
        return self.train if split == "train" else self.test

    def make_problem(self, rng: random.Random, split: str) -> Problem:
        return rng.choice(self._rows(split))

    def problems(self, n: int, seed: int = 0, split: str = "train") -> list[Problem]:
        """`train`: n draws with replacement (seeded). `test`: the first n held-out problems, no repeats."""
        if split == "test":
            if n <= 0:
                raise ValueError(f"number of problems must be positive, got {n}")
            return list(self._rows("test")[:n])
        return super().problems(n, seed=seed, split=split)

    def user_message(self, prompt: str) -> str:
        return prompt if not self.instruction else f"{prompt}\n{self.instruction}"

    def encode_prompt(self, tokenizer, prompt: str) -> list[int]:
        return chat_prompt_ids(tokenizer, self.user_message(prompt), system=self.system_prompt)

    def parse_answer(self, completion: str) -> str | None:
        return extract_answer(completion)

    def answers_equal(self, got: str, want: str) -> bool:
        try:
            return Decimal(got) == Decimal(want)
        except InvalidOperation:
            return False

    def min_new_tokens(self, split: str = "train", n: int = 64) -> int:
        """Reference solutions are in words, not tokens of a known tokenizer: no lower bound beyond 1."""
        return 1

    def __repr__(self) -> str:
        return f"GSM8K(path={str(self.path)!r}, train={len(self.train)}, test={len(self.test)})"
