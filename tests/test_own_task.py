"""Bring your own task: defined in a module of its own, named on the command line as `module:Class`, a pair built
for it with `zoo build --task`, trained, compared, resumed after a kill, recorded in run directories; the README's
"Your own task" commands are run as written (tests/readme_blocks.py extracts them)."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from readme_blocks import run_section
from workbench import cli
from workbench.compare import compare
from workbench.runs import latest_checkpoint
from workbench.tasks import Task, TaskSpecError, get_task, task_ref, task_spec
from workbench.config import ConfigError, TrainConfig
from workbench.trainer import Trainer

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def readme_task(tmp_path_factory):
    """The README's "Your own task" section run in a fresh directory: its python block saved as the file its
    first line names, its commands run in-process (`python -m workbench ...` -> cli.main)."""
    d = tmp_path_factory.mktemp("own_task")
    outputs = run_section(REPO / "README.md", "Your own task", d)
    return d, outputs


def test_readme_builds_a_pair_for_the_users_task(readme_task):
    d, out = readme_task
    for role in ("teacher", "student"):
        meta = json.loads((d / "pairs" / f"reverse-{role}" / "workbench.json").read_text())
        assert meta["recipe"]["task"] == "reverse_task:Reverse" and meta["recipe"]["role"] == role
        assert meta["eval"]["n"] == 64 and 0 <= meta["eval"]["accuracy"] <= 1
    build = out[0]
    assert "[1/2] building reverse-teacher" in build and "[2/2] building reverse-student" in build
    assert "step     0/100" in build and "step    49/50" in build          # progress lines
    t = json.loads((d / "pairs" / "reverse-teacher" / "workbench.json").read_text())["eval"]["accuracy"]
    s = json.loads((d / "pairs" / "reverse-student" / "workbench.json").read_text())["eval"]["accuracy"]
    assert t > s, (t, s)          # the recipe's point: a teacher that knows more than its student


def test_readme_run_records_the_task_and_resumes(readme_task):
    d, _ = readme_task
    run = d / "runs" / "reverse-opd"
    rec = json.loads((run / "config.json").read_text())
    assert rec["task"] == {"class": "reverse_task:Reverse", "name": "reverse", "params": {"max_len": 6}}
    assert rec["config"]["task"] == "reverse_task:Reverse" and rec["config"]["steps"] == 6
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 11))                   # 6 steps, then resumed to 10
    assert json.loads((run / "status.json").read_text())["state"] == "completed"
    events = [json.loads(x)["event"] for x in (run / "events.jsonl").read_text().splitlines()]
    assert "resumed" in events


def test_readme_compare_writes_resumable_run_directories(readme_task):
    d, out = readme_task
    rows = [ln for ln in out[3].splitlines() if ln.startswith("method=")]
    assert [r.split()[0] for r in rows] == ["method=opd", "method=sft"]
    for m in ("opd", "sft"):
        rec = json.loads((d / "runs" / "reverse-compare" / m / "seed0" / "config.json").read_text())
        assert rec["task"]["class"] == "reverse_task:Reverse"
        assert rec["config"]["teacher"] == "pairs/reverse-teacher" and rec["config"]["student"] == "pairs/reverse-student"
        assert latest_checkpoint(d / "runs" / "reverse-compare" / m / "seed0") is not None


def _cli(d, *args):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(REPO), str(d)])}
    return subprocess.Popen([sys.executable, "-m", "workbench", *args], cwd=str(d), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_killed_run_of_the_users_task_resumes_from_the_command_line(readme_task):
    d, _ = readme_task
    run = d / "runs" / "killed"
    p = _cli(d, "train", "--task", "reverse_task:Reverse", "--task-param", "max_len=5",
             "--teacher", "pairs/reverse-teacher", "--student", "pairs/reverse-student", "--steps", "400",
             "--batch-size", "4", "--eval-every", "0", "--eval-problems", "8", "--save-every", "1", "--out", str(run))
    deadline = time.time() + 120
    while time.time() < deadline and p.poll() is None:
        ck = latest_checkpoint(run) if run.exists() else None
        if ck is not None and int(ck.name.split("_")[-1]) >= 3:
            break
        time.sleep(0.05)
    assert p.poll() is None, "the run ended before it could be killed: " + p.communicate()[1][-2000:]
    p.send_signal(signal.SIGKILL)
    p.communicate()
    killed_at = int(latest_checkpoint(run).name.split("_")[-1])
    assert killed_at < 400
    rec = json.loads((run / "config.json").read_text())
    assert rec["task"]["params"] == {"max_len": 5}
    r = _cli(d, "train", "--resume", str(run), "--steps", str(killed_at + 3), "--json")
    stdout, stderr = r.communicate(timeout=180)
    assert r.returncode == 0, stderr[-3000:]
    summary = json.loads(stdout.splitlines()[-1])
    assert summary["reason"] == "completed" and summary["step"] == killed_at + 3
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, killed_at + 4))        # steps logged after the last checkpoint were re-run once


# ---- the task registry, in-process --------------------------------------------------------------------------
@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "user_tasks.py").write_text(
        "from workbench.tasks import ANSWER_SEP, Problem, Task\n"
        "class Echo(Task):\n"
        "    name = 'echo'\n"
        "    charset = 'ab>' + ANSWER_SEP\n"
        "    def __init__(self, n=3, label='x'):\n"
        "        self.n, self.label = n, label\n"
        "        self.max_new_tokens = n + 3\n"
        "    def make_problem(self, rng, split):\n"
        "        s = ''.join(rng.choice('ab') for _ in range(self.n))\n"
        "        return Problem(s + '>', ANSWER_SEP + s, s)\n"
        "class Hidden(Echo):\n"
        "    def __init__(self, n=3):\n"
        "        self.max_new_tokens = n + 3\n"
        "class NotATask:\n"
        "    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("user_tasks", None)
    return tmp_path


def test_tasks_by_import_path_spec_and_entry_point(user_module):
    t = get_task("user_tasks:Echo", n=4)
    assert type(t).__name__ == "Echo" and t.n == 4 and t.max_new_tokens == 7
    spec = task_spec(t)
    assert spec == {"class": "user_tasks:Echo", "name": "echo", "params": {"n": 4, "label": "x"}}
    again = get_task(json.loads(json.dumps(spec)))
    assert type(again) is type(t) and again.problems(5, seed=1) == t.problems(5, seed=1)
    assert task_ref(t) == "user_tasks:Echo" and task_ref(get_task("addition")) == "addition"
    # an installed package's entry point (a dist-info folder on the path is what pip would leave)
    dist = user_module / "usertasks-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: usertasks\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[opd_workbench.tasks]\necho = user_tasks:Echo\n")
    assert type(get_task("echo", n=2)).__name__ == "Echo"


@pytest.mark.parametrize("name, pattern", [
    ("no_such_module:Echo", r"cannot import module 'no_such_module'.*PYTHONPATH"),
    ("user_tasks:Missing", r"module 'user_tasks' has no 'Missing'"),
    ("user_tasks:NotATask", r"not a subclass of workbench.tasks.Task"),
    ("reverse", r"unknown task 'reverse'.*package.module:ClassName.*opd_workbench.tasks"),
    ("__main__:Echo", r"defined in a script, notebook or function.*move the class into a module"),
])
def test_a_task_that_cannot_be_found_names_the_fix(user_module, name, pattern):
    with pytest.raises(TaskSpecError, match=pattern):
        get_task(name)


def test_a_task_whose_parameters_cannot_be_read_back_is_refused_with_the_fix(user_module):
    with pytest.raises(TaskSpecError, match=r"__init__ takes 'n' but the instance has no attribute 'n'.*self.n = n"):
        task_spec(get_task("user_tasks:Hidden"))
    with pytest.raises(TaskSpecError, match=r"could not be constructed with \{'m': 1\}"):
        get_task("user_tasks:Echo", m=1)


class _NotebookTask(Task):
    """Defined in a test module: importable, so it resumes; a class defined in __main__ would not."""
    name = "nb"
    charset = "0123456789+=,|"
    max_new_tokens = 64

    def make_problem(self, rng, split):
        return get_task("addition").make_problem(rng, split)


def test_trainer_and_compare_record_a_task_object(models, tok, tmp_path):
    teacher, student = models
    mine = get_task("addition", max_digits=3)
    tr = Trainer(method="opd", task=mine, teacher=teacher, student=student.__class__(student.config),
                 tokenizer=tok, steps=1, batch_size=4, eval_every=0, eval_problems=4, device="cpu",
                 out=str(tmp_path / "run"))
    rec = json.loads((tmp_path / "run" / "config.json").read_text())
    assert rec["config"]["task"] == "addition" and rec["task"]["params"] == {"min_digits": 3, "max_digits": 3}
    assert tr.cfg.max_new_tokens == mine.max_new_tokens      # the task's own, not the default addition's
    tr.close()
    # compare(..., out=DIR) with a Task object and model objects: no TypeError; each run records the task
    before = {k: v.clone() for k, v in student.state_dict().items()}
    res = compare(task=_NotebookTask(), teacher=teacher, student=student, tokenizer=tok, methods=("opd",),
                  seeds=(0,), budget_tokens=60, eval_problems=4, batch_size=4, device="cpu",
                  out=str(tmp_path / "cmp"), progress=None)
    assert res["rows"][0]["method"] == "opd"
    rec = json.loads((tmp_path / "cmp" / "opd" / "seed0" / "config.json").read_text())
    assert rec["task"]["class"] == f"{__name__}:_NotebookTask" and rec["config"]["task"] == rec["task"]["class"]
    assert all((student.state_dict()[k] == v).all() for k, v in before.items())   # the object was copied


def test_zoo_build_task_refuses_bad_options_before_training(tmp_path, capsys):
    assert cli.main(["zoo", "build", "--task", "addition"]) == 2
    assert "needs --out DIR" in capsys.readouterr().err
    assert cli.main(["zoo", "build", "--task", "gsm8k", "--out", str(tmp_path)]) == 2
    assert "has no charset" in capsys.readouterr().err
    assert cli.main(["zoo", "build", "--task", "addition", "--out", str(tmp_path), "--teacher-steps", "0"]) == 2
    assert "teacher_steps must be a positive integer" in capsys.readouterr().err


def test_a_notebook_task_is_recorded_and_resumes_only_when_passed_again(models, tok, tmp_path):
    teacher, student = models
    ckpt = tmp_path / "student"
    student.save_pretrained(ckpt)
    tok.save_pretrained(ckpt)
    t_ckpt = tmp_path / "teacher"
    teacher.save_pretrained(t_ckpt)
    tok.save_pretrained(t_ckpt)

    class InNotebook(_NotebookTask):
        pass
    InNotebook.__module__ = "__main__"           # what a class defined in a notebook cell looks like
    run = tmp_path / "run"
    cfg = TrainConfig.for_method("opd", teacher=str(t_ckpt), student=str(ckpt), steps=2, batch_size=4, eval_every=0,
                                 eval_problems=4, device="cpu", out=str(run))
    tr = Trainer(cfg, task=InNotebook())
    tr.run(steps=1)
    assert json.loads((run / "config.json").read_text())["task"]["class"].startswith("__main__:")
    with pytest.raises(ConfigError, match=r"defined in a notebook or script.*Trainer.resume\(dir, task=MyTask"):
        Trainer.resume(run)
    again = Trainer.resume(run, task=InNotebook())
    assert again.step_count == 1 and isinstance(again.task, InNotebook)
    assert again.run()["step"] == 2
