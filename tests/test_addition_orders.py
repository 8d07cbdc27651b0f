"""The `addition-orders` task: several valid scratchpads per problem, one answer."""
import collections
import random

from workbench.tasks import Addition, AdditionOrders, get_task


def test_reference_traces_are_valid_and_use_every_order():
    task = get_task("addition-orders")
    orders = collections.Counter()
    for p in task.problems(300, seed=0, split="train"):
        assert task.verify(p, p.solution).correct
        cols = task.column_orders(p.prompt, p.solution)
        assert len(cols) == task.width and "invalid" not in cols
        orders.update(cols)
    # ties (a zero carry next to a zero digit) read as the earlier letter, so "abc" is over-represented;
    # every one of the six orders still occurs often
    assert set(orders) == {"abc", "acb", "bac", "bca", "cab", "cba"}
    assert min(orders.values()) > 0.05 * sum(orders.values())


def test_same_sums_as_addition():
    a = get_task("addition-orders")
    for p in a.problems(50, seed=3, split="test"):
        x, y = (int(s) for s in p.prompt.rstrip("=").split("+"))
        plain = Addition.solve(x, y, a.width)
        # one character set and one answer; each column holds the same characters in another order
        assert (p.prompt, p.answer) == (plain.prompt, plain.answer)
        assert [sorted(c) for c in p.solution.split(",")] == [sorted(c) for c in plain.solution.split(",")]
    assert a.charset == get_task("addition").charset


def test_column_orders_reads_orders_and_flags_blends():
    t = AdditionOrders
    # 00012 + 00034: columns (a, b, carry) = (2, 4, 0), (1, 3, 0), then zeros
    assert t.column_orders("00012+00034=", "4+0+2=06,1+3+0=04,") == ["bca", "abc"]
    # a blend that writes the first operand's digit twice is not the column's multiset
    assert t.column_orders("00012+00034=", "2+2+0=04,") == ["invalid"]
    # the carry is the one the completion implies: 7+5 = 12 carries 1 into the next column
    # (a tie between a = 1 and the carry reads as a, the earlier letter)
    assert t.column_orders("00017+00025=", "7+5+0=12,1+1+2=04,") == ["abc", "acb"]
    assert t.column_orders("00017+00025=", "7+5+0=12,2+1+1=04,") == ["abc", "bac"]
    # the default order without an rng is the plain task's trace
    assert AdditionOrders.solve(17, 25, 5).solution == Addition.solve(17, 25, 5).solution
    assert AdditionOrders.solve(17, 25, 5, random.Random(0)).answer == "000042"


def test_column_right_is_the_multiset_and_the_sum():
    right = AdditionOrders.column_right
    assert right("7+5+1=13", "5", "7", 1) and right("1+7+5=13", "5", "7", 1)
    assert not right("7+5+0=12", "5", "7", 1)        # the carry-in is not among the summands
    assert not right("7+5+1=12", "5", "7", 1)        # the total is not their sum
    assert not right("7+7+1=15", "5", "7", 1)        # a blend: one digit twice
    assert not right("7+5+1=013", "5", "7", 1) and not right("7+5=12", "5", "7", 0)


def test_addition_swap_writes_either_digit_first_and_the_carry_last():
    task = get_task("addition-swap")
    orders = collections.Counter()
    for p in task.problems(300, seed=0, split="train"):
        assert task.verify(p, p.solution).correct
        orders.update(task.column_orders(p.prompt, p.solution))
        # the carry is the third summand of every column (the previous column's total // 10)
        carry = 0
        for col in p.solution.split("|")[0].rstrip(",").split(","):
            assert col.split("=")[0].split("+")[2] == str(carry)
            carry = int(col.split("=")[1]) // 10
    assert set(orders) == {"abc", "bac"} and min(orders.values()) > 0.3 * sum(orders.values())
