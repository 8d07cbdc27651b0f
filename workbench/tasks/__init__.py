"""Tasks: problem generator + reference solution + verifier (see `base.Task`), and how a task is named.

A task is named, on the command line (`--task`), in a config (`TrainConfig.task`) and in a run
directory, in one of these ways (`get_task` resolves all of them, in this order):

  * a built-in name: `addition`, `multiply` (synthetic) or `gsm8k`, `qa` (read from your file, `--data`);
  * an import path `package.module:ClassName` of a `Task` subclass importable from where you run
    (the current directory or `PYTHONPATH`; a class defined in a notebook or script cannot be);
  * the name of an entry point in the group `opd_workbench.tasks` of an installed package, e.g. in its
    pyproject.toml: `[project.entry-points."opd_workbench.tasks"]  reverse = "mypkg.tasks:Reverse"`;
  * a recorded spec `{"class": "package.module:ClassName", "params": {...}}` (what a run directory keeps);
  * a `Task` instance (passed through) or subclass (constructed with the keyword arguments).

What a run directory records of a task (`task_spec`): its class's import path and the constructor
arguments that rebuild it, `Task.params()` (by default each `__init__` parameter read back from the
attribute of the same name; see `base.Task.params`).
"""
from __future__ import annotations

import importlib
import json
from importlib.metadata import entry_points
from pathlib import Path

from .arithmetic import Addition, AdditionOrders, AdditionSwap, Multiply
from .base import ANSWER_SEP, Problem, Task, TaskSpecError, Verdict
from .gsm8k import GSM8K
from .qa import QA
from .repeat import Repeat

TASKS = {"addition": Addition, "addition-orders": AdditionOrders, "addition-swap": AdditionSwap, "multiply": Multiply,
         "repeat": Repeat}
# tasks read from data files, for real tokenizers (not character-level); also reachable by name
DATA_TASKS = {"gsm8k": GSM8K, "qa": QA}
ENTRY_POINT_GROUP = "opd_workbench.tasks"


def _import_class(path: str):
    """The Task subclass at `module:Qualified.Name`; errors name what to fix."""
    module, _, qual = path.partition(":")
    if not module or not qual:
        raise TaskSpecError(f"task {path!r} is not an import path; write it as package.module:ClassName")
    if module == "__main__" or "<locals>" in qual:
        raise TaskSpecError(f"task {path!r} was defined in a script, notebook or function, which no other "
                            "process can import; move the class into a module (a .py file in the current "
                            "directory or on PYTHONPATH) and name it as module:ClassName")
    try:
        obj = importlib.import_module(module)
    except ImportError as e:
        raise TaskSpecError(f"cannot import module {module!r} of task {path!r} ({e}); run from the directory that "
                            f"holds {module.replace('.', '/')}.py, add that directory to PYTHONPATH, or pip install "
                            "the package") from None
    for part in qual.split("."):
        if not hasattr(obj, part):
            raise TaskSpecError(f"module {module!r} has no {qual!r} (task {path!r}); check the class name after "
                                "the colon")
        obj = getattr(obj, part)
    if not (isinstance(obj, type) and issubclass(obj, Task)):
        raise TaskSpecError(f"{path!r} is {obj!r}, not a subclass of workbench.tasks.Task")
    return obj


def _entry_point(name: str):
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            return _import_class(ep.value)
    return None


def _construct(cls, params: dict, where: str) -> Task:
    try:
        return cls(**params)
    except TypeError as e:
        raise TaskSpecError(f"task {where} could not be constructed with {params} ({e}); pass the parameters its "
                            "__init__ takes") from None


def get_task(name, **kwargs) -> Task:
    """A task by name, import path, entry point, recorded spec or class (or a Task instance, passed through)."""
    if isinstance(name, Task):
        if kwargs:
            raise TaskSpecError(f"task parameters {sorted(kwargs)} were given with a ready-made task {name!r}; "
                                "construct it with them instead")
        return name
    if isinstance(name, type) and issubclass(name, Task):
        return _construct(name, kwargs, name.__qualname__)
    if isinstance(name, dict):
        if "class" not in name:
            raise TaskSpecError(f"a task spec needs a 'class' (package.module:ClassName), got {name!r}")
        return _construct(_import_class(name["class"]), {**name.get("params", {}), **kwargs}, repr(name["class"]))
    if not isinstance(name, str):
        raise TaskSpecError(f"a task is a name, an import path package.module:ClassName or a Task; got {name!r}")
    if name in DATA_TASKS:
        if "path" not in kwargs and name == "qa":
            raise TaskSpecError("task 'qa' reads your file: pass --data FILE (a JSONL or parquet file of "
                                "question/answer rows), or QA(path, verifier=...)")
        return _construct(DATA_TASKS[name], kwargs, repr(name))
    if name in TASKS:
        return _construct(TASKS[name], kwargs, repr(name))
    if ":" in name:
        return _construct(_import_class(name), kwargs, repr(name))
    cls = _entry_point(name)
    if cls is not None:
        return _construct(cls, kwargs, repr(name))
    raise TaskSpecError(f"unknown task {name!r}; choose one of {sorted(TASKS) + sorted(DATA_TASKS)}, name your own "
                        "as package.module:ClassName (a Task subclass importable from here or on PYTHONPATH), "
                        f"register it under the entry-point group {ENTRY_POINT_GROUP!r}, or pass a Task instance "
                        "(subclass workbench.tasks.Task)")


def _jsonable(value, where: str):
    if isinstance(value, Task):
        return task_spec(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, where) for v in value]
    try:
        json.dumps(value)
    except TypeError:
        raise TaskSpecError(f"{where} is {value!r}, which a run directory cannot record (JSON); make it a "
                            "string or number, or define params() to say how to rebuild the task") from None
    return value


def task_spec(task: Task) -> dict:
    """What rebuilds `task` in another process: {"class": "module:ClassName", "name", "params"} (JSON)."""
    cls = type(task)
    params = task.params()
    return {"class": f"{cls.__module__}:{cls.__qualname__}", "name": task.name,
            "params": {k: _jsonable(v, f"parameter {k!r} of task {cls.__qualname__}") for k, v in params.items()}}


def task_ref(task: Task) -> str:
    """The string `TrainConfig.task` records: the built-in name, else the class's import path."""
    base = getattr(task, "base", None)
    if isinstance(base, Task):              # JsonlProblems: the task its rows are graded by (cfg.data names the file)
        return task_ref(base)
    cls = type(task)
    if TASKS.get(task.name) is cls or DATA_TASKS.get(task.name) is cls:
        return task.name
    return f"{cls.__module__}:{cls.__qualname__}"


def rebuildable(spec: dict) -> bool:
    """Can another process import the spec's class (not defined in __main__ or a function)?"""
    module, _, qual = spec["class"].partition(":")
    return module != "__main__" and "<locals>" not in qual


__all__ = ["ANSWER_SEP", "Addition", "AdditionOrders", "AdditionSwap", "DATA_TASKS", "ENTRY_POINT_GROUP", "GSM8K", "Multiply", "Problem", "QA", "Repeat",
           "TASKS", "Task", "TaskSpecError", "Verdict", "get_task", "rebuildable", "task_ref", "task_spec"]
