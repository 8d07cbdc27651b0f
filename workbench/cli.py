"""`python -m workbench ...`: headless training, comparisons, the zoo and exports.

(Notebooks are executed by `python -m widgets.notebooks run ...` and benchmarks by `python -m benchmarks ...`:
the library never imports Jupyter or the benchmarks.)

    python -m workbench train --method opd --steps 200 --out runs/opd --json
    python -m workbench train --resume runs/opd
    python -m workbench compare --json              # from the plateaued student, 3 seeds
    python -m workbench zoo list | zoo build [--only NAME]
    python -m workbench zoo build --task my_tasks:Reverse --out pairs/   # a teacher + weak student for your task
    python -m workbench train --task my_tasks:Reverse --teacher pairs/reverse-teacher --student pairs/reverse-student
    python -m workbench export --to {trl,verl} RUN_DIR [--out DIR] [--num-processes N]

With --json every line printed is one JSON object; the last line is the summary.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import typing
from pathlib import Path

from . import compare as compare_module
from . import objectives
from . import zoo, zoo_build
from .compare import DEFAULT_BUDGET, DEFAULT_SWEEP, compare, sweep
from .config import ALIGNMENTS, DTYPES, PRESETS, RENAMED, ConfigError, TrainConfig, field_docs
from .losses import REDUCTIONS
from .tasks import get_task
from .export import export_run
from .loggers import watchers_for
from .runs import RunDirError
from .trainer import Trainer, TrainingError


def emit(obj, as_json: bool):
    """Print one result row: a JSON line with `as_json`, else `key=value` pairs (floats to 4 digits)."""
    if as_json:
        print(json.dumps(obj, default=lambda o: o.item() if hasattr(o, "item") else str(o)), flush=True)
    else:
        print("  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in obj.items()), flush=True)


class _RenamedFlag(argparse.Action):
    """An old flag name (`config.RENAMED`): sets the new field and says so on stderr, for one release."""

    def __call__(self, parser, ns, values, option_string=None):
        new = "--" + self.dest.replace("_", "-")
        print(f"warning: {option_string} is renamed {new}; the old flag is accepted for one release",
              file=sys.stderr, flush=True)
        setattr(ns, self.dest, values)


# a field's values when argparse can list them (validate() checks the same lists)
CHOICES = {"alignment": ALIGNMENTS, "dtype": DTYPES, "reduction": REDUCTIONS}
ALIASES = {"lora_r": ("--lora",)}       # short names the issue tracker and READMEs use


def _flag_help(f, doc: str) -> str:
    """A flag's help: the field's documentation from config.py (`field_docs`) and its default."""
    default = f.default if f.default is not dataclasses.MISSING else None
    if "default" not in doc.lower():
        doc += f" (default: {default})" if default is not None else " (default: unset)"
    return doc.replace("%", "%%")


def _add_config_flags(p: argparse.ArgumentParser, skip=()):
    """One flag per TrainConfig field (so any method or loss option is settable), its help the field's
    documentation in config.py, and the old names of renamed fields as hidden aliases."""
    hints = typing.get_type_hints(TrainConfig)
    docs = field_docs()
    for old, new in RENAMED.items():
        if new not in skip:
            base = next(a for a in typing.get_args(hints[new]) or (hints[new],) if a is not type(None))
            p.add_argument("--" + old.replace("_", "-"), dest=new, type=base, default=None, action=_RenamedFlag,
                           help=argparse.SUPPRESS)
    for f in dataclasses.fields(TrainConfig):
        if f.name in skip:
            continue
        t = hints[f.name]
        args = typing.get_args(t)
        base = next((a for a in args if a is not type(None)), t) if args else t
        flags = ["--" + f.name.replace("_", "-"), *ALIASES.get(f.name, ())]
        help_ = _flag_help(f, docs.get(f.name, ""))
        if base is bool:
            p.add_argument(*flags, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_)
        elif f.name == "loss":      # the objectives registry lists what --loss can be, per corner
            p.add_argument(*flags, dest=f.name, type=base, default=None, metavar="LOSS",
                           help=help_ + "; one of: " + "; ".join(
                               f"{name} ({', '.join('/'.join(c) for c in o.corners)})"
                               for name, o in objectives.OBJECTIVES.items()))
        elif f.name in CHOICES:
            p.add_argument(*flags, dest=f.name, type=base, default=None, choices=CHOICES[f.name], help=help_)
        else:
            p.add_argument(*flags, dest=f.name, type=base, default=None, metavar=base.__name__.upper(), help=help_)
    if "task" not in skip:
        p.add_argument("--task-param", dest="task_params", action="append", default=[], metavar="KEY=VALUE",
                       help="a constructor argument of the task (repeatable; VALUE read as JSON when it parses, "
                            "else as text), e.g. --task-param max_digits=4, or for --task qa --task-param "
                            "verifier=numeric; recorded in the run directory")


def _task_object(ns):
    """The task the flags name, built with its --task-param values (None: let the config name it)."""
    if not ns.task_params and not (ns.task in ("qa", "gsm8k") and getattr(ns, "data", None)):
        return None
    params = {}
    for item in ns.task_params:
        key, eq, value = item.partition("=")
        if not eq or not key.strip().isidentifier():
            raise ConfigError(f"--task-param {item!r} is not KEY=VALUE (e.g. --task-param max_digits=4)")
        try:
            params[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            params[key.strip()] = value
    name = ns.task or "addition"
    if name in ("qa", "gsm8k") and ns.data:
        params.setdefault("path", ns.data)
    return get_task(name, **params)


def _overrides(ns, skip=()) -> dict:
    names = {f.name for f in dataclasses.fields(TrainConfig)} - set(skip) - {"method", "task"}
    return {k: getattr(ns, k) for k in names if getattr(ns, k, None) is not None}


def cmd_train(ns) -> int:
    if ns.resume:
        given = sorted(k for k in _overrides(ns) if k != "steps") + (["task"] if ns.task else []) + \
            (["task_param"] if ns.task_params else [])
        if given:
            raise ConfigError(f"--resume continues a run with its recorded settings; drop {given} (only --steps "
                              "may change, to extend the run)")
        trainer = Trainer.resume(ns.resume, steps=ns.steps)
    else:
        task = _task_object(ns)
        cfg = TrainConfig.for_method(ns.method, **_overrides(ns), **({"task": ns.task} if ns.task else {}))
        watchers_for(ns.log_to, cfg.out, cfg.name)          # a missing package fails here, before models load
        trainer = Trainer(cfg, task=task)
    watchers = watchers_for(ns.log_to, trainer.cfg.out, trainer.cfg.name)

    class Printer:
        def on_step(self, rec):
            row = {k: v for k, v in rec.items() if k != "samples"}
            if ns.json:
                emit(row, True)
            elif rec["step"] % 10 == 0 or "eval/accuracy" in rec:
                emit({k: row[k] for k in ("step", "loss", "rollout/mean_length", "train/accuracy") if k in row}
                      | {k: v for k, v in row.items() if k.startswith("eval/")}, False)

    summary = trainer.run(callbacks=[Printer(), *watchers])
    if "final_eval_accuracy" not in summary:
        summary["final_eval_accuracy"] = trainer.evaluate(step=trainer.step_count)["eval/accuracy"]
    emit(summary, ns.json)
    return 0 if summary["reason"] in ("completed", "stopped") else 1


def cmd_compare(ns) -> int:
    common = _overrides(ns, skip=("task", "seed", "out", "eval_every", "eval_problems", "eval_split", "device"))
    methods = [m for m in ns.methods.split(",") if m]
    unknown = [m for m in methods if m not in PRESETS]
    if unknown:
        raise ConfigError(f"unknown method(s) {unknown} in --methods; choose from {sorted(PRESETS)}")
    seeds = [int(x) for x in ns.seeds.split(",") if x != ""]
    kw = dict(task=_task_object(ns) or ns.task, protocol=ns.protocol, seeds=seeds, budget_tokens=ns.budget_tokens,
              eval_problems=ns.eval_problems or 256, device=ns.device or "auto",
              progress=lambda msg: print(msg, file=sys.stderr, flush=True), **common)
    if ns.eval_split:
        kw["eval_split"] = ns.eval_split
    if ns.eval_every:       # --eval-every N: every N steps at the default batch of 64 sequences
        kw["eval_sequences"] = ns.eval_every * (common.get("batch_size") or 64)
    if ns.sweep:
        if "lr" in common:
            raise ConfigError("--sweep tries a grid of learning rates; do not also pass --lr")
        rows, best = sweep(grid={m: DEFAULT_SWEEP.get(m, (1e-4, 3e-4, 1e-3)) for m in methods}, **kw)
        for r in rows:
            emit(dict(r, best=all(r.get(k) == v for k, v in best[r["method"]].items())), ns.json)
        return 0
    res = compare(methods=methods, rival_factor=ns.rival_factor, target_frac=ns.target_frac, out=ns.out, **kw)
    for r in res["rows"]:
        r = dict(r)
        if ns.curves:
            r["curves"] = {f"{r['method']}/seed{s}": res["log"].evals.get(f"{r['method']}/seed{s}", [])
                           for s in r["seeds"]}
        emit(r, ns.json)
    emit({k: res[k] for k in ("protocol", "teacher", "student", "sft_teacher", "teacher_accuracy", "start_accuracy",
                               "target_frac", "target_accuracy")}, ns.json)
    return 0


def cmd_zoo(ns) -> int:
    if ns.action == "list":
        for row in zoo.listing():
            emit(row, ns.json)
        return 0
    t0 = time.time()
    if ns.task is not None:
        if ns.only:
            raise ConfigError("--only rebuilds shipped zoo entries; --task builds a new pair for your task: pass one")
        if ns.out is None:
            raise ConfigError("zoo build --task needs --out DIR (where <task>-teacher and <task>-student go)")
        # progress lines flushed as they come; with --json on stderr, so that stdout holds only JSON
        log = lambda msg: print(msg, file=sys.stderr if ns.json else sys.stdout, flush=True)   # noqa: E731
        out = zoo_build.build_pair(ns.task, ns.out, teacher_steps=ns.teacher_steps, student_steps=ns.student_steps,
                                   seed=ns.seed, eval_problems=ns.eval_problems, log=log)
        for name, meta in out.items():
            emit({"name": name, "path": str(Path(ns.out) / name), "params": meta["params"],
                  "accuracy": meta["eval"]["accuracy"], "train_s": meta["train_s"]}, ns.json)
    else:
        if ns.out is not None or ns.teacher_steps != zoo.TEACHER_STEPS or ns.student_steps != zoo.STUDENT_STEPS:
            raise ConfigError("--out/--teacher-steps/--student-steps are for zoo build --task (your own task); the "
                              "shipped zoo is rebuilt with its recorded recipes")
        zoo_build.build(ns.only.split(",") if ns.only else None)
    print(f"zoo build finished in {time.time() - t0:.0f}s", file=sys.stderr if ns.json else sys.stdout, flush=True)
    return 0


def _recipe_times() -> str:
    """How long the shipped recipe took, from the zoo's recorded workbench.json (train_s, threads)."""
    parts = []
    for name in ("addition-teacher", "addition-student"):
        try:
            meta = zoo.metadata(name)
        except (FileNotFoundError, ValueError):
            return "(the shipped zoo is not built, so no recorded time)"
        parts.append(f"{name} {meta['train_s'] / 60:.0f} min on {meta['threads']} thread(s)")
    return "recorded for addition: " + ", ".join(parts)


def cmd_export(ns) -> int:
    ex = export_run(ns.run_dir, ns.to, out=ns.out, num_processes=ns.num_processes)
    if ns.json:
        emit(ex.to_dict(), True)
    else:
        print(ex.report(), flush=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m workbench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train one method; one JSON line per step with --json")
    t.add_argument("--method", default="opd", choices=sorted(PRESETS),
                   help=_flag_help(TrainConfig.__dataclass_fields__["method"], field_docs()["method"]))
    t.add_argument("--resume", default=None, metavar="DIR", help="continue a run directory to its configured steps")
    t.add_argument("--json", action="store_true")
    t.add_argument("--log-to", default=None, metavar="LOGGERS",
                   help="also log each step to tensorboard and/or wandb (comma-separated; W&B offline): "
                        "OUT/tensorboard, OUT/wandb")
    _add_config_flags(t, skip=("method",))
    t.set_defaults(func=cmd_train)

    c = sub.add_parser("compare", help="continued SFT vs GRPO vs OPD from one student, over seeds, with costs",
                       description=compare_module.__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("--protocol", default="plateau", choices=list(compare_module.PROTOCOLS),
                   help="plateau (default): start from the student SFT-trained to its plateau; weak: from the "
                        "shipped weak student")
    c.add_argument("--methods", default="opd,sft,grpo", help="comma-separated presets (default: opd,sft,grpo)")
    c.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default: 0,1,2)")
    c.add_argument("--budget-tokens", type=int, default=None,
                   help="student tokens per OPD run (default: compare.DEFAULT_BUDGET)")
    c.add_argument("--rival-factor", type=float, default=5.0,
                   help="non-OPD methods get at least this many times the student tokens OPD needed (default 5)")
    c.add_argument("--target-frac", type=float, default=0.99,
                   help="target accuracy as a fraction of the teacher's held-out accuracy (default 0.99)")
    c.add_argument("--sweep", action="store_true",
                   help="try a small learning-rate grid per method, evaluated on the val split; best=true marks "
                        "each method's best")
    c.add_argument("--curves", action="store_true", help="include each run's evaluation curve in its method's row")
    c.add_argument("--json", action="store_true")
    _add_config_flags(c, skip=("method", "steps", "name", "seed"))
    c.set_defaults(func=cmd_compare)

    z = sub.add_parser("zoo", help="the shipped toy checkpoints; build a teacher + weak student for your own task",
                       description="list: the shipped checkpoints. build: rebuild them, or with --task train the "
                                   "documented recipe (zoo.recipes_for: a ~1M-parameter teacher, then a ~0.13M weak "
                                   "student) for your task into --out. At the default steps this takes about as "
                                   "long as the shipped pair did (" + _recipe_times() + "; time scales with the "
                                   "steps and your task's sequence length); --teacher-steps/--student-steps "
                                   "shrink it (e.g. 100 and 50 build a rough pair in well under a minute).")
    z.add_argument("action", choices=["list", "build"])
    z.add_argument("--only", default=None, help="comma-separated zoo names to rebuild")
    z.add_argument("--task", default=None, metavar="TASK",
                   help="build a pair for this task: a name or package.module:ClassName (see train --task)")
    z.add_argument("--out", default=None, metavar="DIR", help="with --task: where <task>-teacher/ and "
                                                               "<task>-student/ are written")
    z.add_argument("--teacher-steps", type=int, default=zoo.TEACHER_STEPS, metavar="N",
                   help=f"with --task: the teacher's SFT steps (default {zoo.TEACHER_STEPS})")
    z.add_argument("--student-steps", type=int, default=zoo.STUDENT_STEPS, metavar="N",
                   help=f"with --task: the weak student's SFT steps (default {zoo.STUDENT_STEPS})")
    z.add_argument("--eval-problems", type=int, default=zoo.EVAL_PROBLEMS, metavar="N",
                   help=f"with --task: held-out problems each model's recorded accuracy is measured on "
                        f"(default {zoo.EVAL_PROBLEMS})")
    z.add_argument("--seed", type=int, default=0, help="with --task: initialisation and problem stream (default 0)")
    z.add_argument("--json", action="store_true")
    z.set_defaults(func=cmd_zoo)

    x = sub.add_parser("export", help="a run's config as a TRL or verl config + launch command, listing every "
                                      "setting that does not carry over")
    x.add_argument("run_dir", metavar="RUN_DIR")
    x.add_argument("--to", required=True, choices=["trl", "verl"])
    x.add_argument("--out", default=None, metavar="DIR", help="where to write (default RUN_DIR/export-<target>)")
    x.add_argument("--num-processes", type=int, default=1, metavar="N",
                   help="GPUs the launch command is written for (TRL: per-device batch = batch_size / N)")
    x.add_argument("--json", action="store_true")
    x.set_defaults(func=cmd_export)
    return p


def main(argv=None) -> int:
    ns = build_parser().parse_args(argv)
    if getattr(ns, "command", None) == "compare":
        ns.budget_tokens = ns.budget_tokens or DEFAULT_BUDGET
        ns.task = ns.task or compare_module.DEFAULT_TASK
    try:
        return ns.func(ns)
    except (ConfigError, FileNotFoundError, ValueError, RunDirError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:
        if isinstance(e, TrainingError):        # e.g. too many non-finite updates; the run directory is kept
            print(f"error: {e}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
