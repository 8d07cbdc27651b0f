"""Two built-in tasks with a step-by-step scratchpad.

`addition`: `00123+04567=` -> one column at a time from the right,
`a+b+carry=total,` then `|` and the zero-padded sum, e.g.
`3+7+0=10,2+6+1=09,1+5+0=06,0+4+0=04,0+0+0=00,|004690`.
Every column depends on the previous carry, so an early slip propagates:
the horizon is long enough (about 50 tokens) for exposure bias to matter.

`addition-orders`: the same sums, but each column may write its three summands (the two digits
and the carry) in any of the orders they can take, e.g. `7+3+0=10,1+6+2=09,...`: several valid
continuations at the first two tokens of every column, so a teacher trained on it has real
per-token entropy where the choice is free and is still certain where the arithmetic is not
(the on-policy literature's teachers look like that; the plain task's teacher is near-deterministic
everywhere, docs/testbed.md). Reference traces draw each column's order uniformly.

`multiply`: a multi-digit number times one digit, `04567*8=` ->
`7*8+0=56,6*8+5=53,...|036536`: carries range over 0..8, a different shape.

Splits: `train`/`val`/`test` draw operands of `min_digits..max_digits` digits,
zero-padded to `width` (`val` is where learning rates and stopping points are chosen, so the
reported `test` numbers are not selected on); `long` draws operands one digit longer than
`max_digits` (padded to `width + 1`) for length-generalisation checks;
`short` draws 1..3 digits (the neighbouring distribution the zoo student
was pretrained on).
"""
from __future__ import annotations

import random

from .base import ANSWER_SEP, Problem, Task


class _ColumnTask(Task):
    splits = ("train", "val", "test", "long", "short")

    def __init__(self, min_digits: int = 3, max_digits: int = 5):
        if not 1 <= min_digits <= max_digits:
            raise ValueError(f"need 1 <= min_digits <= max_digits, got {min_digits}, {max_digits}")
        self.min_digits, self.max_digits = min_digits, max_digits
        self.width = max_digits
        # a column is 9 characters; + separator + (width + 1) answer digits + EOS, with slack
        self.max_new_tokens = 9 * (self.width + 1) + self.width + 3 + 8

    def _digits_range(self, split: str) -> tuple[int, int, int]:
        if split == "long":
            return self.max_digits + 1, self.max_digits + 1, self.width + 1
        if split == "short":
            return 1, min(3, self.max_digits), self.width
        return self.min_digits, self.max_digits, self.width

    @staticmethod
    def _number(rng: random.Random, digits: int) -> int:
        lo = 0 if digits == 1 else 10 ** (digits - 1)
        return rng.randint(lo, 10 ** digits - 1)


class Addition(_ColumnTask):
    name = "addition"
    charset = "0123456789+=," + ANSWER_SEP
    any_order = False       # AdditionOrders: each reference column draws the order of its summands
    digits_only = False     # AdditionSwap: ... of its two digits only (the carry stays last)

    def make_problem(self, rng: random.Random, split: str) -> Problem:
        lo, hi, width = self._digits_range(split)
        a = self._number(rng, rng.randint(lo, hi))
        b = self._number(rng, rng.randint(lo, hi))
        return self.solve(a, b, width, rng if self.any_order else None, digits_only=self.digits_only)

    @staticmethod
    def solve(a: int, b: int, width: int, rng: random.Random | None = None, digits_only: bool = False) -> Problem:
        """The reference trace; with `rng`, each column's summands in an order drawn uniformly (addition-orders),
        or with `digits_only` its two digits in either order and the carry last (addition-swap)."""
        sa, sb = str(a).zfill(width), str(b).zfill(width)
        steps, carry = [], 0
        for da, db in zip(reversed(sa), reversed(sb)):
            total = int(da) + int(db) + carry
            terms = [da, db, str(carry)]
            if rng is not None and digits_only:
                terms[:2] = rng.sample(terms[:2], 2)
            elif rng is not None:
                rng.shuffle(terms)
            steps.append(f"{terms[0]}+{terms[1]}+{terms[2]}={total:02d},")
            carry = total // 10
        answer = str(a + b).zfill(width + 1)
        return Problem(prompt=f"{sa}+{sb}=", solution="".join(steps) + ANSWER_SEP + answer, answer=answer)


class AdditionOrders(Addition):
    """`addition`, with every column's summands written in any order (six orders, fewer when summands repeat).

    Only the final answer is graded, like `addition`; `column_orders` reads which order each column
    used, and whether the written summands are the column's (a blend of two styles writes, say, the
    same digit twice).
    """
    name = "addition-orders"
    any_order = True

    @staticmethod
    def column_right(col: str, da: str, db: str, carry: int) -> bool:
        """Is `col` right for operand digits `da`, `db` and carry-in `carry`: `x+y+z=TT` whose summands are those
        three (in any order) and whose two-digit total is their sum? (How the analyses grade a column.)"""
        lhs, _, total = col.partition("=")
        terms = lhs.split("+")
        return (len(terms) == 3 and sorted(terms) == sorted([da, db, str(carry)]) and total.isdigit()
                and len(total) == 2 and int(total) == int(da) + int(db) + carry)

    @staticmethod
    def column_orders(prompt: str, completion: str) -> list[str]:
        """Per written column: "abc"-style order of the summands (a = first operand's digit, b = second's,
        c = carry), or "invalid" when the written summands are not the column's multiset.

        Ties (equal summands) are resolved left to right, so `3+3+0` in a column with a = b = 3 reads "abc".
        The carry is the one the completion itself implies (its previous column's written total), so a
        column after an arithmetic slip is judged on its own terms.
        """
        sa, sb = prompt.rstrip("=").split("+")
        cols = [c for c in completion.split(ANSWER_SEP, 1)[0].split(",") if c]
        out, carry = [], 0
        for i, col in enumerate(cols):
            if i >= len(sa) or "=" not in col:
                out.append("invalid")
                break
            lhs, total = col.split("=", 1)
            terms = lhs.split("+")
            want = {"a": sa[-1 - i], "b": sb[-1 - i], "c": str(carry)}
            order, left = "", dict(want)
            for t in terms:
                hit = next((k for k in "abc" if k in left and left[k] == t), None)
                if hit is None:
                    order = "invalid"
                    break
                order += hit
                del left[hit]
            out.append(order if order != "invalid" and len(order) == 3 else "invalid")
            carry = int(total) // 10 if total.isdigit() else 0
        return out


class AdditionSwap(AdditionOrders):
    """`addition-orders` with two styles instead of six: each column writes its two digits in either order,
    the carry last (`3+5+1=09` or `5+3+1=09`). One choice per column, where `addition-orders` has up to three
    in a row; graded, read and checked exactly as `addition-orders`."""
    name = "addition-swap"
    digits_only = True


class Multiply(_ColumnTask):
    name = "multiply"
    charset = "0123456789*+=," + ANSWER_SEP

    def make_problem(self, rng: random.Random, split: str) -> Problem:
        lo, hi, width = self._digits_range(split)
        a = self._number(rng, rng.randint(lo, hi))
        d = rng.randint(2, 9)
        return self.solve(a, d, width)

    @staticmethod
    def solve(a: int, d: int, width: int) -> Problem:
        sa = str(a).zfill(width)
        steps, carry = [], 0
        for da in reversed(sa):
            total = int(da) * d + carry
            steps.append(f"{da}*{d}+{carry}={total:02d},")
            carry = total // 10
        answer = str(a * d).zfill(width + 1)
        return Problem(prompt=f"{sa}*{d}=", solution="".join(steps) + ANSWER_SEP + answer, answer=answer)
