"""workbench.tasks: problem generators, reference solutions and the verifier, checked independently."""
import random
import re

import pytest

from workbench.tasks import ANSWER_SEP, TASKS, Addition, Multiply, Problem, Task, get_task
from workbench.tokenizer import build_tokenizer, encode_text

SPLITS = ("train", "val", "test", "long", "short")
COLUMN_TASKS = sorted(n for n in TASKS if n != "repeat")     # the scratchpad tasks; `repeat` has tests/test_repeat.py


def _check_addition(task: Addition, p: Problem, split: str, any_order: bool = False):
    m = re.fullmatch(r"(\d+)\+(\d+)=", p.prompt)
    assert m, p.prompt
    sa, sb = m.groups()
    width = task.max_digits + 1 if split == "long" else task.max_digits
    assert len(sa) == len(sb) == width
    a, b = int(sa), int(sb)
    # the final answer is the arithmetic sum, zero padded to width + 1
    assert p.answer == str(a + b).zfill(width + 1)
    assert int(p.answer) == a + b
    steps, tail = p.solution.split(ANSWER_SEP)
    assert tail == p.answer
    cols = steps.split(",")
    assert cols[-1] == ""
    cols = cols[:-1]
    assert len(cols) == width
    carry, digits = 0, []
    for k, col in enumerate(cols):               # right to left
        cm = re.fullmatch(r"(\d)\+(\d)\+(\d)=(\d\d)", col)
        assert cm, col
        x, y, z, tot = (int(v) for v in cm.groups())
        want = (int(sa[-1 - k]), int(sb[-1 - k]), carry)
        if any_order:       # addition-orders: the column's three summands, in any order
            assert sorted((x, y, z)) == sorted(want)
        else:
            assert (x, y, z) == want
        assert tot == sum(want)
        digits.append(tot % 10)
        carry = tot // 10
    assert int(str(carry) + "".join(map(str, reversed(digits)))) == a + b
    return a, b


def _check_multiply(task: Multiply, p: Problem, split: str):
    m = re.fullmatch(r"(\d+)\*(\d)=", p.prompt)
    assert m, p.prompt
    sa, sd = m.groups()
    width = task.max_digits + 1 if split == "long" else task.max_digits
    assert len(sa) == width
    a, d = int(sa), int(sd)
    assert 2 <= d <= 9
    assert p.answer == str(a * d).zfill(width + 1)
    steps, tail = p.solution.split(ANSWER_SEP)
    assert tail == p.answer
    cols = steps.split(",")[:-1]
    assert len(cols) == width
    carry, digits = 0, []
    for k, col in enumerate(cols):
        cm = re.fullmatch(r"(\d)\*(\d)\+(\d)=(\d\d)", col)
        assert cm, col
        da, dd, c, tot = (int(x) for x in cm.groups())
        assert da == int(sa[-1 - k]) and dd == d and c == carry
        assert tot == da * d + c
        digits.append(tot % 10)
        carry = tot // 10
    assert int(str(carry) + "".join(map(str, reversed(digits)))) == a * d
    return a, d


CHECK = {"addition": _check_addition, "multiply": _check_multiply,
         "addition-orders": lambda task, p, split: _check_addition(task, p, split, any_order=True),
         "addition-swap": lambda task, p, split: _check_addition(task, p, split, any_order=True)}


@pytest.mark.parametrize("name", COLUMN_TASKS)
@pytest.mark.parametrize("split", SPLITS)
def test_reference_solutions_are_right_and_verify(name, split):
    task = get_task(name)
    tok = build_tokenizer(task.charset)
    probs = task.problems(300, seed=7, split=split)
    operands = []
    for p in probs:
        a, _ = CHECK[name](task, p, split)
        operands.append(a)
        v = task.verify(p, p.solution)
        assert (v.reward, v.answer, v.correct) == (1.0, p.answer, True)
        assert set(p.prompt + p.solution) <= set(task.charset)
        encode_text(tok, p.prompt + p.solution)               # every character is in the vocabulary
        assert len(p.solution) + 1 <= task.max_new_tokens       # + EOS fits the default budget
    if split == "short":
        assert max(operands) <= 999
        assert {len(str(a)) for a in operands} == {1, 2, 3}
    elif split == "long":
        assert min(operands) >= 10 ** task.max_digits and max(operands) < 10 ** (task.max_digits + 1)
    else:
        assert min(operands) >= 10 ** (task.min_digits - 1) and max(operands) < 10 ** task.max_digits
    assert len(set(operands)) > (100 if split == "short" else 200)     # actually random
    assert task.min_new_tokens(split) <= task.max_new_tokens


def test_short_split_operands_both_small():
    t = get_task("addition")
    for p in t.problems(200, seed=1, split="short"):
        a, b = map(int, p.prompt[:-1].split("+"))
        assert a <= 999 and b <= 999
        assert len(p.prompt) == 2 * t.max_digits + 2


def test_long_split_has_one_more_digit():
    t = get_task("addition", min_digits=2, max_digits=4)
    for p in t.problems(100, seed=2, split="long"):
        a, b = map(int, p.prompt[:-1].split("+"))
        assert len(str(a)) == len(str(b)) == 5
        assert len(p.answer) == 6


def test_known_example():
    p = Addition.solve(123, 4567, 5)
    assert p == Problem("00123+04567=", "3+7+0=10,2+6+1=09,1+5+0=06,0+4+0=04,0+0+0=00,|004690", "004690")
    q = Multiply.solve(4567, 8, 5)
    assert q.prompt == "04567*8=" and q.answer == "036536"
    assert q.solution.startswith("7*8+0=56,6*8+5=53,5*8+5=45,4*8+4=36,0*8+3=03,|")


@pytest.mark.parametrize("name", COLUMN_TASKS)
def test_wrong_truncated_and_malformed_completions_score_zero(name):
    task = get_task(name)
    p = task.problems(1, seed=11)[0]
    steps = p.solution.split(ANSWER_SEP)[0]
    wrong = str((int(p.answer) + 1) % 10 ** len(p.answer)).zfill(len(p.answer))
    cases = {
        steps + ANSWER_SEP + wrong: wrong,        # wrong answer: parsed, not correct
        steps + ANSWER_SEP + p.answer[:-1]: p.answer[:-1],   # answer missing a digit
        p.solution + "0": p.answer + "0",         # extra digit
        steps + p.answer: None,                   # no separator
        steps + ANSWER_SEP: None,                 # empty answer
        steps + ANSWER_SEP + "  ": None,          # blank answer
        "": None,
        "garbage!": None,
        "#$%" + ANSWER_SEP + "x9": "x9",          # parsed but wrong
    }
    for completion, parsed in cases.items():
        v = task.verify(p, completion)
        assert v.reward == 0.0 and v.correct is False, completion
        assert v.answer == parsed, completion
    # a truncated completion scores 0 even when its text would be right
    v = task.verify(p, p.solution, truncated=True)
    assert (v.reward, v.answer, v.correct) == (0.0, None, False)
    # the verifier reads the text after the LAST separator
    v = task.verify(p, "|999|" + p.answer)
    assert v.correct and v.answer == p.answer


@pytest.mark.parametrize("name", sorted(TASKS))
def test_problems_are_deterministic_and_streams_differ(name):
    task = get_task(name)
    a = task.problems(50, seed=5, split="train")
    assert a == task.problems(50, seed=5, split="train")
    assert a == get_task(name).problems(50, seed=5, split="train")     # fresh instance, same stream
    assert task.problems(20, seed=5, split="train") == a[:20]           # prefix-stable
    assert a != task.problems(50, seed=6, split="train")
    test = task.problems(50, seed=5, split="test")
    assert len({p.prompt for p in a} & {p.prompt for p in test}) < 5
    # global random state does not leak in
    random.seed(0)
    x = task.problems(5, seed=9)
    random.seed(1)
    assert x == task.problems(5, seed=9)


def test_bad_split_and_n():
    task = get_task("addition")
    with pytest.raises(ValueError) as e:
        task.problems(3, split="validation")
    assert "'validation'" in str(e.value) and "['train', 'val', 'test', 'long', 'short']" in str(e.value)
    with pytest.raises(ValueError, match="positive, got 0"):
        task.problems(0)
    with pytest.raises(ValueError, match="positive, got -2"):
        task.problems(-2)
    with pytest.raises(ValueError, match="min_digits"):
        Addition(min_digits=0)
    with pytest.raises(ValueError, match="min_digits"):
        Multiply(min_digits=4, max_digits=3)


def test_get_task():
    with pytest.raises(ValueError) as e:
        get_task("subtraction")
    msg = str(e.value)
    assert "'subtraction'" in msg and "addition" in msg and "multiply" in msg
    t = get_task("multiply", min_digits=2, max_digits=3)
    assert isinstance(t, Multiply) and (t.min_digits, t.max_digits, t.width) == (2, 3, 3)
    inst = Addition()
    assert get_task(inst) is inst
    assert repr(inst) == "Addition(name='addition')"


class Reverse(Task):
    """A user-defined task in a few lines: reverse a string of letters."""
    name = "reverse"
    charset = "abcde>" + ANSWER_SEP
    max_new_tokens = 12

    def make_problem(self, rng, split):
        s = "".join(rng.choice("abcde") for _ in range(rng.randint(2, 6)))
        return Problem(prompt=s + ">", solution=ANSWER_SEP + s[::-1], answer=s[::-1])


def test_user_defined_task_with_default_verifier():
    task = get_task(Reverse())
    probs = task.problems(30, seed=0, split="test")
    assert probs == task.problems(30, seed=0, split="test")
    assert probs != task.problems(30, seed=0, split="train")
    tok = build_tokenizer(task.charset)
    for p in probs:
        s = p.prompt[:-1]
        assert p.answer == s[::-1]
        assert task.verify(p, p.solution).correct
        assert task.verify(p, "|" + s + "x").answer == s + "x"
        assert not task.verify(p, s[::-1]).correct           # no separator
        assert tok.decode(encode_text(tok, p.prompt + p.solution)) == p.prompt + p.solution
    with pytest.raises(ValueError, match="'long'"):
        task.problems(3, split="long")
    assert task.min_new_tokens("train") <= 8
    with pytest.raises(NotImplementedError):
        Task().problems(1)


def test_val_and_test_are_different_streams_of_one_distribution():
    """Learning rates are chosen on `val` and results reported on `test`: the two must not share problems
    (beyond the chance overlap of a few-thousand-problem space) but must come from the same operand range."""
    task = get_task("addition")
    val = {p.prompt for p in task.problems(256, seed=0, split="val")}
    test = {p.prompt for p in task.problems(256, seed=0, split="test")}
    assert len(val & test) <= 2
    digits = lambda ps: {len(p.prompt.split("+")[0].lstrip("0")) for p in ps}
    assert digits(task.problems(256, seed=0, split="val")) == digits(task.problems(256, seed=0, split="test"))
