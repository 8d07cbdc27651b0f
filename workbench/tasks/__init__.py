"""Synthetic tasks: problem generator + reference solution + verifier (see `base.Task`)."""
from .arithmetic import Addition, AdditionOrders, Multiply
from .base import ANSWER_SEP, Problem, Task, Verdict
from .gsm8k import GSM8K

TASKS = {"addition": Addition, "addition-orders": AdditionOrders, "multiply": Multiply}
# tasks read from data files, for real tokenizers (not character-level); also reachable by name
DATA_TASKS = {"gsm8k": GSM8K}


def get_task(name, **kwargs) -> Task:
    """A task by name (or pass a Task instance through)."""
    if isinstance(name, Task):
        return name
    if name in DATA_TASKS:
        return DATA_TASKS[name](**kwargs)
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of {sorted(TASKS)} or pass a Task instance "
                         "(subclass workbench.tasks.Task)")
    return TASKS[name](**kwargs)


__all__ = ["ANSWER_SEP", "Addition", "AdditionOrders", "DATA_TASKS", "GSM8K", "Multiply", "Problem", "TASKS", "Task", "Verdict", "get_task"]
