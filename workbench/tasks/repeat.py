"""`repeat`: write a word a given number of times — a variable-length task whose natural failure is a loop.

`ab*3=` -> `ab,ab,ab|3`. Words are 1-3 letters from `abcd`, counts 1-19, so solutions run from 3 to 78
characters. The only hard decision is *when to stop*: after each copy the model writes `,` (another copy)
or `|` (done), and getting it right means counting copies. A model that over-counts keeps copying, and
every extra copy is locally as plausible as the last one — the shape of the repetition loops behind
OPD's length inflation (Luo et al., arXiv 2604.08527), where a repeated phrase is cheap to continue.
The gold solutions themselves never repeat a word more often than asked, so gold-data SFT (Stable-OPD's
mixture) pulls toward stopping on time.

Graded on the whole completion (the copies and the count), not on the count alone: `|3` after four
copies is wrong. `loop_tokens` marks the characters written after the asked-for copies (the loop);
`max_new_tokens` leaves room for about three extra copies of the longest word before truncation.
"""
from __future__ import annotations

import random

from .base import ANSWER_SEP, Problem, Task, Verdict


class Repeat(Task):
    name = "repeat"
    charset = "abcd0123456789*=," + ANSWER_SEP
    splits = ("train", "val", "test")

    def __init__(self, max_count: int = 19, max_word: int = 3):
        if not 1 <= max_count <= 99:
            raise ValueError(f"max_count must be 1..99, got {max_count}")
        if not 1 <= max_word <= 6:
            raise ValueError(f"max_word must be 1..6 letters, got {max_word}")
        self.max_count, self.max_word = max_count, max_word
        longest = max_count * (max_word + 1) + len(str(max_count))     # copies and commas, then `|` and the count
        self.max_new_tokens = longest + 1 + 10         # + EOS, + room for ~3 extra copies (the loop)

    def make_problem(self, rng: random.Random, split: str) -> Problem:
        word = "".join(rng.choice("abcd") for _ in range(rng.randint(1, self.max_word)))
        return self.solve(word, rng.randint(1, self.max_count))

    @staticmethod
    def solve(word: str, count: int) -> Problem:
        return Problem(prompt=f"{word}*{count}=", solution=",".join([word] * count) + ANSWER_SEP + str(count),
                       answer=str(count))

    def verify(self, problem: Problem, completion: str, truncated: bool = False) -> Verdict:
        ans = None if truncated else self.parse_answer(completion)
        ok = not truncated and completion == problem.solution
        return Verdict(reward=1.0 if ok else 0.0, answer=ans, correct=ok)

    @staticmethod
    def parse_prompt(prompt: str) -> tuple[str, int]:
        """`ab*3=` -> ("ab", 3)."""
        word, _, count = prompt.rstrip("=").rpartition("*")
        return word, int(count)

    @staticmethod
    def loop_tokens(prompt: str, completion: str) -> list[bool]:
        """Per character of `completion`: is it part of a copy beyond the asked-for count (or the comma before
        it)? Copies are read as written (`,`-separated before `|`); a completion that stops on time, or early,
        has none."""
        count = Repeat.parse_prompt(prompt)[1]
        body_end = completion.find(ANSWER_SEP)
        body = completion if body_end < 0 else completion[:body_end]
        out, copies = [], 1
        for ch in completion[:len(body)]:
            if ch == ",":
                copies += 1
            out.append(copies > count)
        return out + [False] * (len(completion) - len(body))


class RepeatLoops(Repeat):
    """Training data for a teacher that, like a language model, goes on repeating once a loop has begun.

    A share `loop_frac` of the `train` problems is a *looping prefix*: the prompt already holds `count + d` copies
    (d = 1..3, more than asked) and the solution is more copies, on to the length cap, with no `|`. The other
    problems are `repeat`'s gold answers. A teacher fine-tuned on this mix keeps every gold state as it was
    (stop after exactly `count` copies) and learns what gold data never shows: on an over-counted prefix, write
    another copy. Large language models do that on their own (a repeated phrase makes the next repeat more
    likely); this toy teacher has to be taught. The prefix rides in the prompt so that training on it costs
    nothing there: the model sees the same tokens (BOS, prompt, copies) as it does when scoring a student's
    rollout that has over-counted. Used only to build `repeat-loop-teacher` (zoo); its `val` and `test` splits
are `repeat`'s gold problems, so the zoo's recorded accuracy is the gold task's.
    """
    name = "repeat-loops"

    def __init__(self, max_count: int = 19, max_word: int = 3, loop_frac: float = 0.5):
        super().__init__(max_count, max_word)
        if not 0.0 <= loop_frac <= 1.0:
            raise ValueError(f"loop_frac must be in [0, 1], got {loop_frac}")
        self.loop_frac = loop_frac

    def make_problem(self, rng: random.Random, split: str) -> Problem:
        gold = super().make_problem(rng, split)
        if split != "train" or rng.random() >= self.loop_frac:
            return gold
        word, count = self.parse_prompt(gold.prompt)
        written = ",".join([word] * (count + rng.randint(1, 3)))
        # more copies until the completion (prefix + these) reaches the cap, as a rollout that never stops would
        room = self.max_new_tokens - len(written)
        more = ("," + word) * max(1, room // (len(word) + 1))
        return Problem(prompt=gold.prompt + written, solution=more, answer=gold.answer)
