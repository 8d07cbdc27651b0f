"""Your own question/answer data, graded by a verifier you choose: exact match, numeric or a regex.

    task = QA("my_qa.jsonl", verifier="numeric")       # or: --task qa --data my_qa.jsonl --task-param verifier=numeric

A JSONL (or parquet) file, one row per problem:

    {"question": "What is the capital of France?", "answer": "Paris"}
    {"question": "...", "answer": "42", "solution": "6 * 7 = 42\n#### 42"}     # solution: optional

`question` (or `prompt`) is rendered as a chat user turn like GSM8K's (`tasks.gsm8k`, with an
instruction to end with `#### <answer>`); `answer` is what the verifier compares against;
`solution` is a reference completion for SFT on gold data (default: `#### <answer>`).
Splits, the held-out fraction and `test_path` are GSM8K's.

Verifiers (what is read from a completion, then how it is compared with `answer`):
  * `exact`   — the text after the last `####` (else the completion's last non-empty line), stripped;
                equal to the answer as text (`case_sensitive=False` folds case);
  * `numeric` — the final number (GSM8K's rule: after the last `####`, else the last number;
                `1,250`, `$1250.00` and `1250` are equal); every answer must be a number;
  * `regex`   — the last match of `pattern` in the completion (its first group if it has one),
                stripped; equal to the answer as text.
"""
from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from .base import Problem
from .gsm8k import FINAL, GSM8K, DataError, extract_answer, normalize_number, read_table

VERIFIERS = ("exact", "numeric", "regex")
QA_INSTRUCTION = "Answer the question. Finish with a last line of the form `#### <answer>`."


class QA(GSM8K):
    """Question/answer rows from a local file with a chosen verifier (see the module docstring)."""

    name = "qa"

    def __init__(self, path, *, verifier: str = "exact", pattern: str | None = None, case_sensitive: bool = True,
                 test_path=None, test_frac: float = 0.25, max_new_tokens: int = 256,
                 instruction: str | None = QA_INSTRUCTION, system_prompt: str | None = None, seed: int = 0):
        if verifier not in VERIFIERS:
            raise ValueError(f"verifier must be one of {VERIFIERS}, got {verifier!r}")
        if (verifier == "regex") != (pattern is not None):
            raise ValueError("verifier='regex' needs pattern=... (a regular expression whose last match, or its first "
                             "group, is the answer); the other verifiers take no pattern")
        try:
            self._re = re.compile(pattern) if pattern is not None else None
        except re.error as e:
            raise ValueError(f"pattern {pattern!r} is not a regular expression ({e})") from None
        self.verifier, self.pattern, self.case_sensitive = verifier, pattern, case_sensitive
        super().__init__(path, test_path=test_path, test_frac=test_frac, max_new_tokens=max_new_tokens,
                         instruction=instruction, system_prompt=system_prompt, seed=seed)

    def read(self, path) -> list[Problem]:
        out = []
        hint = "each row needs 'question' (or 'prompt') and 'answer'; 'solution' is optional"
        for loc, row in read_table(path, required=("answer",), hint=hint):
            # a file mixing the two names has NaN where a row lacks one (pandas fills the union of columns)
            q = next((row[k] for k in ("question", "prompt") if isinstance(row.get(k), str)), row.get("question"))
            a = row["answer"]
            if isinstance(a, (int, float)) and not isinstance(a, bool):
                a = str(a)
            if not isinstance(q, str) or not q.strip():
                raise DataError(f"{loc}: 'question' (or 'prompt') is missing, empty or not text ({q!r}); {hint}")
            if not isinstance(a, str) or not a.strip():
                raise DataError(f"{loc}: 'answer' is empty or not text ({a!r})")
            a = a.strip()
            if self.verifier == "numeric":
                num = normalize_number(a)
                if num is None:
                    raise DataError(f"{loc}: answer {a!r} is not a number, which verifier='numeric' needs; use "
                                    "verifier='exact' for text answers")
                a = num
            sol = row.get("solution")
            sol = sol.strip() if isinstance(sol, str) and sol.strip() else f"{FINAL} {a}"
            out.append(Problem(prompt=q.strip(), solution=sol, answer=a))
        return out

    def parse_answer(self, completion: str) -> str | None:
        if self.verifier == "numeric":
            return extract_answer(completion)
        if self.verifier == "regex":
            found = list(self._re.finditer(completion))
            if not found:
                return None
            m = found[-1]
            return (m.group(1) if m.re.groups else m.group(0)).strip()
        if FINAL in completion:
            return completion.rsplit(FINAL, 1)[1].strip() or None
        lines = [ln.strip() for ln in completion.splitlines() if ln.strip()]
        return lines[-1] if lines else None

    def answers_equal(self, got: str, want: str) -> bool:
        if self.verifier == "numeric":
            try:
                return Decimal(got) == Decimal(want)
            except InvalidOperation:
                return False
        return got == want if self.case_sensitive else got.casefold() == want.casefold()

    def __repr__(self) -> str:
        return (f"QA(path={str(self.path)!r}, verifier={self.verifier!r}, train={len(self.train)}, "
                f"test={len(self.test)})")
