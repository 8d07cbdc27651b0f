"""workbench.trainer: every method preset runs and keeps the record contract, OPD rewards are what they claim,
runs are reproducible, bad configurations fail before compute, and the CLI speaks JSON lines.

Tiny random models (the `nano` preset: d32 x 1 layer) stand in for the teacher and student so that each
step costs well under a second on one CPU thread; the CLI tests use the shipped zoo pair.
"""
import copy
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from workbench import zoo
from workbench.config import PRESETS, ConfigError, TrainConfig
from workbench.models import build_model, save_checkpoint
from workbench.tasks import get_task
from workbench.tokenizer import build_tokenizer
from workbench.trainer import Trainer

from f32 import assert_samples_scored_by_hand

REPO = Path(__file__).resolve().parents[1]
TASK = get_task("addition")
MAX_NEW = TASK.max_new_tokens
SMALL = dict(batch_size=8, eval_problems=16, eval_every=2, steps=2, device="cpu")   # exactness: on CPU
FRACTIONS = ("rollout/truncated_frac", "rollout/repetition_rate", "reward/mean", "train/accuracy",
             "eval/accuracy", "eval/sampled_accuracy", "eval/truncated_frac", "teacher/token_reward_neg_frac",
             "teacher/topk_overlap", "teacher/top1_overlap", "grpo/zero_adv_frac", "grpo/credited_token_frac", "filter/kept_frac")
COMMON = ("step", "run", "method", "total_steps", "max_new_tokens", "loss", "rollout/mean_length",
          "rollout/max_length", "rollout/truncated_frac", "rollout/repetition_rate", "reward/mean",
          "train/accuracy", "policy/entropy", "grad/norm", "cost/student_tokens", "cost/teacher_tokens",
          "cost/flops", "time/generate_s", "time/teacher_s", "time/update_s", "time/step_s", "time/elapsed_s")
EVAL = ("eval/accuracy", "eval/sampled_accuracy", "eval/mean_length", "eval/truncated_frac")
TEACHER = ("teacher/token_reward_mean", "teacher/token_reward_neg_frac", "teacher/reverse_kl", "teacher/topk_overlap",
           "teacher/top1_overlap")
SCORED_BY_TEACHER = {"opd", "opd_full", "gkd", "exopd", "stable_opd"}


def small(method, **kw):
    extra = {"num_generations": 4} if method == "grpo" else {}
    return TrainConfig.for_method(method, **{**SMALL, **extra, **kw})


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory, tok, models):
    """The same pair saved as checkpoint directories (so a Trainer loads fresh weights every time)."""
    d = tmp_path_factory.mktemp("ckpts")
    save_checkpoint(models[0], tok, d / "teacher")
    save_checkpoint(models[1], tok, d / "student")
    return {"teacher": str(d / "teacher"), "student": str(d / "student")}


class Records:
    def __init__(self):
        self.records, self.started, self.ended = [], None, None

    def on_start(self, info):
        self.started = info

    def on_step(self, rec):
        self.records.append(rec)

    def on_end(self, summary):
        self.ended = summary


def strip_time(rec):
    return {k: v for k, v in rec.items() if not k.startswith("time/")}


# --------------------------------------------------------------------------------------------------
# every preset: two steps, the record contract of docs/records.md
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", sorted(PRESETS))
def test_every_preset_runs_two_steps_with_sane_records(method, models, tok):
    teacher, student = models
    trainer = Trainer(small(method), teacher=teacher, student=copy.deepcopy(student), tokenizer=tok)
    cb = Records()
    summary = trainer.run(callbacks=[cb])
    recs = cb.records
    assert [r["step"] for r in recs] == [1, 2]
    assert cb.started["total_steps"] == 2 and cb.started["start_step"] == 0 and cb.started["method"] == method
    assert summary["reason"] == "completed" and summary["step"] == 2 and cb.ended["reason"] == "completed"
    assert summary["final_eval_accuracy"] == recs[-1]["eval/accuracy"]
    V = len(tok)
    for rec in recs:
        missing = [k for k in COMMON if k not in rec]
        assert not missing, f"{method}: record lacks {missing}"
        assert rec["run"] == method and rec["method"] == method and rec["total_steps"] == 2
        assert rec["max_new_tokens"] == MAX_NEW
        assert 1 <= rec["rollout/mean_length"] <= rec["rollout/max_length"] <= MAX_NEW
        assert rec["rollout/max_length"] == int(rec["rollout/max_length"])
        for k in FRACTIONS:
            if k in rec:
                assert 0.0 <= rec[k] <= 1.0, (method, k, rec[k])
        assert math.isfinite(rec["loss"])
        assert 0.0 <= rec["policy/entropy"] <= math.log(V) + 1e-5
        assert math.isfinite(rec["grad/norm"]) and rec["grad/norm"] >= 0
        assert all(rec[k] >= 0 for k in rec if k.startswith("time/"))
        assert "nonfinite/skipped" not in rec
        # which keys apply to which method
        assert ("grpo/zero_adv_frac" in rec) == (method == "grpo")
        for k in TEACHER:
            assert (k in rec) == (method in SCORED_BY_TEACHER), (method, k)
        if method in SCORED_BY_TEACHER:
            assert rec["teacher/reverse_kl"] >= -1e-6
            assert math.isfinite(rec["teacher/token_reward_mean"])
        assert ("filter/kept_frac" in rec) == (method == "filtered_sft")
        assert ("ref/kl" in rec) == (method == "stable_opd")
        # samples: token-aligned lists
        samples = rec["samples"]
        assert len(samples) == 4
        for s in samples:
            n = len(s["tokens"])
            assert 1 <= n <= MAX_NEW
            assert len(s["student_logprob"]) == n
            assert all(lp <= 1e-6 for lp in s["student_logprob"])
            if method in SCORED_BY_TEACHER:
                assert s["token_reward"] is not None and len(s["token_reward"]) == n
            else:
                assert s["token_reward"] is None
            assert s["truncated"] == (s["tokens"][-1] != "<eos>")
            if s["truncated"]:
                assert n == MAX_NEW
            assert isinstance(s["correct"], bool) and 0.0 <= s["reward"] <= 1.0
            assert isinstance(s["prompt"], str) and s["prompt"].endswith("=")
    final = recs[-1]
    assert [k for k in EVAL if k not in final] == []
    assert not any(k.startswith("eval/") for k in recs[0])           # eval_every=2: step 1 has none
    assert 1 <= final["eval/mean_length"] <= MAX_NEW
    # cumulative costs increase; the teacher pays only where it generates or scores
    a, b = recs
    assert 0 < a["cost/student_tokens"] < b["cost/student_tokens"]
    assert 0 < a["cost/flops"] < b["cost/flops"]
    if method == "grpo":
        assert a["cost/teacher_tokens"] == b["cost/teacher_tokens"] == 0
    else:
        assert 0 < a["cost/teacher_tokens"] < b["cost/teacher_tokens"]
    assert a["time/elapsed_s"] <= b["time/elapsed_s"]


def test_opd_token_reward_is_teacher_minus_student_logprob(models, tok):
    """Score each sampled completion by hand with both models (unpadded, one sequence at a time)."""
    teacher, student = models
    student = copy.deepcopy(student)
    before = copy.deepcopy(student).eval()       # the student that sampled (the step then updates it)
    trainer = Trainer(small("opd", num_samples=8, eval_every=0), teacher=teacher, student=student, tokenizer=tok)
    rec = trainer.step()
    assert len(rec["samples"]) == 8
    checked = assert_samples_scored_by_hand(rec["samples"], tok, teacher, before)
    assert checked > 8
    # and the batch statistics summarise the same quantity
    assert rec["teacher/token_reward_neg_frac"] > 0


def test_teacher_score_temperature_divides_the_teachers_logits_where_it_scores(models, tok):
    teacher, student = models
    before = copy.deepcopy(student).eval()
    trainer = Trainer(small("opd", num_samples=8, eval_every=0, teacher_score_temperature=2.5), teacher=teacher,
                      student=copy.deepcopy(student), tokenizer=tok)
    samples = trainer.step()["samples"]
    assert assert_samples_scored_by_hand(samples, tok, teacher, before, teacher_temperature=2.5) > 8
    # the check can fail: the same rewards are not the teacher's at temperature 1
    with pytest.raises(AssertionError):
        assert_samples_scored_by_hand(samples, tok, teacher, before)


# --------------------------------------------------------------------------------------------------
# reproducibility
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["sft", "grpo", "opd"])
def test_same_seed_same_metrics_other_seed_different(method, ckpts):
    def metrics(seed):
        trainer = Trainer(small(method, seed=seed, **ckpts))
        cb = Records()
        trainer.run(callbacks=[cb])
        return [strip_time(r) for r in cb.records]

    first, again, other = metrics(0), metrics(0), metrics(1)
    assert first == again                      # every key, samples included, bit for bit
    assert first != other
    # another seed draws other problems and other samples
    assert [s["prompt"] for s in first[0]["samples"]] != [s["prompt"] for s in other[0]["samples"]]
    assert [s["tokens"] for s in first[-1]["samples"]] != [s["tokens"] for s in other[-1]["samples"]]


# --------------------------------------------------------------------------------------------------
# bad configuration: one clear error before any compute
# --------------------------------------------------------------------------------------------------
@pytest.fixture
def no_compute(monkeypatch):
    """Any sampling or forward pass during construction is a failure of 'before any compute'."""
    import workbench.trainer as T

    def boom(*a, **k):
        raise AssertionError("compute happened before the configuration error")

    for name in ("sample", "completion_logits", "evaluate"):
        monkeypatch.setattr(T, name, boom)
    loads = []
    import workbench.models as models
    real = models.load_checkpoint       # what pairs.load_checkpoint, the one public loader, calls
    monkeypatch.setattr(models, "load_checkpoint", lambda *a, **k: loads.append(a[0]) or real(*a, **k))
    return loads


@pytest.fixture(scope="module")
def other_vocab_ckpt(tmp_path_factory):
    """A checkpoint whose tokenizer has another character set (multiply's, with '*')."""
    d = tmp_path_factory.mktemp("other_vocab") / "teacher"
    tok = build_tokenizer(get_task("multiply").charset)
    save_checkpoint(build_model("nano", tok, seed=3), tok, d)
    return str(d)


BAD = [
    # (id, builder(ckpts, other) -> raises, exception, regex, models may be loaded)
    ("unknown method", lambda c, o: Trainer(method="distill", **c), ConfigError, r"unknown method 'distill'", False),
    ("unknown method in config", lambda c, o: Trainer(TrainConfig(method="distill", **c)), ConfigError,
     r"unknown method 'distill'.*choose one of", False),
    ("loss not valid for source", lambda c, o: Trainer(small("sft", loss="sampled_token", **c)), ConfigError,
     r"loss 'sampled_token' is not valid for source=teacher", False),
    ("unknown loss", lambda c, o: Trainer(small("opd", loss="l2", **c)), ConfigError,
     r"loss 'l2' is not valid for source=student, signal=dense; choose one of", False),
    ("vocabularies differ", lambda c, o: Trainer(small("opd", teacher=o, student=c["student"])), ConfigError,
     r"the tokenizers differ \(19 vs 18 tokens.*\n    fix: choose a teacher and student of one family", False),
    ("max_new_tokens too small", lambda c, o: Trainer(small("opd", max_new_tokens=20, **c)), ConfigError,
     r"max_new_tokens=20 is below what task 'addition' needs", False),
    ("batch_size zero", lambda c, o: Trainer(small("opd", batch_size=0, **c)), ConfigError,
     r"batch_size must be a positive integer, got 0", False),
    ("batch_size negative", lambda c, o: Trainer(small("sft", batch_size=-8, **c)), ConfigError,
     r"batch_size must be a positive integer, got -8", False),
    ("batch_size not a multiple of num_generations",
     lambda c, o: Trainer(small("grpo", batch_size=10, num_generations=4, **c)), ConfigError,
     r"batch_size \(10\) must be a multiple of num_generations \(4\)", False),
    ("grpo with one generation", lambda c, o: Trainer(small("grpo", num_generations=1, **c)), ConfigError,
     r"GRPO needs num_generations >= 2", False),
    ("steps zero", lambda c, o: Trainer(small("opd", steps=0, **c)), ConfigError,
     r"steps must be a positive integer, got 0", False),
    ("warn_shrink out of range", lambda c, o: Trainer(small("opd", warn_shrink=1.5, **c)), ConfigError,
     r"warn_shrink must be in \[0, 1\)", False),
    ("unknown option", lambda c, o: small("opd", learning_rate=1e-3), ConfigError,
     r"unknown config options \['learning_rate'\]", False),
]


@pytest.mark.parametrize("case", BAD, ids=[b[0] for b in BAD])
def test_bad_configuration_fails_before_compute(case, ckpts, other_vocab_ckpt, no_compute):
    _, build, exc, pattern, may_load = case
    with pytest.raises(exc, match=pattern):
        build(ckpts, other_vocab_ckpt)
    if not may_load:
        assert no_compute == [], "a model was loaded before a configuration error that needs none"


def test_the_loader_spy_sees_the_loads_of_a_valid_configuration(ckpts, no_compute):
    """The spy above sees loads when there are some, so its silence in the bad cases means something (the
    vocabulary mismatch, which used to load both checkpoints first, is now refused before any weights load)."""
    Trainer(small("opd", **ckpts))
    assert sorted(no_compute) == sorted([ckpts["teacher"], ckpts["student"]])


# --------------------------------------------------------------------------------------------------
# the command line
# --------------------------------------------------------------------------------------------------
def _zoo_ready():
    return all((zoo.ZOO_DIR / n / "workbench.json").exists()
               for n in ("addition-teacher", "addition-student", "addition-student-sft"))


needs_zoo = pytest.mark.skipif(not _zoo_ready(), reason="the zoo pair is not built (python -m workbench zoo build)")


def _cli(*args):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen([sys.executable, "-m", "workbench", *args], cwd=str(REPO), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory):
    """Start both CLI commands at once (each pays the interpreter start-up; they overlap)."""
    if not _zoo_ready():
        pytest.skip("the zoo pair is not built (python -m workbench zoo build)")
    out = tmp_path_factory.mktemp("cli") / "opd"
    train = _cli("train", "--method", "opd", "--steps", "2", "--batch-size", "8", "--eval-every", "2",
                 "--eval-problems", "16", "--out", str(out), "--json")
    compare = _cli("compare", "--budget-tokens", "200", "--eval-problems", "16", "--batch-size", "8", "--eval-every", "1",
                   "--seeds", "0,1", "--json")
    procs = {"train": train, "compare": compare, "out": out}
    yield procs
    for p in (train, compare):
        if p.poll() is None:
            p.kill()
            p.wait()


def _json_lines(proc, timeout=240):
    stdout, stderr = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, stderr[-3000:]
    lines = [ln for ln in stdout.splitlines() if ln.strip()]
    return [json.loads(ln) for ln in lines]           # every line is one JSON object


@needs_zoo
def test_cli_train_json_lines(cli_runs):
    rows = _json_lines(cli_runs["train"])
    steps, summary = rows[:-1], rows[-1]
    assert [r["step"] for r in steps] == [1, 2]
    assert all("samples" not in r and r["method"] == "opd" for r in steps)
    assert "eval/accuracy" in steps[-1] and "teacher/reverse_kl" in steps[0]
    for k in ("final_eval_accuracy", "student_tokens", "teacher_tokens", "flops", "wall_s"):
        assert k in summary, k
    assert 0 <= summary["final_eval_accuracy"] <= 1
    assert summary["student_tokens"] == steps[-1]["cost/student_tokens"] > 0
    assert summary["teacher_tokens"] == steps[-1]["cost/teacher_tokens"] > 0
    assert summary["flops"] == steps[-1]["cost/flops"] > 0 and summary["wall_s"] > 0
    assert summary["reason"] == "completed" and summary["step"] == 2
    out = cli_runs["out"]
    metrics = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2]
    assert json.loads((out / "status.json").read_text())["state"] == "completed"
    assert (out / "checkpoints" / "LATEST").read_text().strip() == "step_000002"


@needs_zoo
def test_cli_compare_json_rows(cli_runs):
    """The comparison's JSON contract: one row per method (means over seeds, null when never), then the target."""
    rows = _json_lines(cli_runs["compare"])
    methods, summary = rows[:-1], rows[-1]
    assert [r["method"] for r in methods] == ["opd", "sft", "grpo"]
    for r in methods:
        for k in ("method", "seeds", "final_accuracy_mean", "final_accuracy_std", "student_tokens_to_target",
                  "flops_to_target", "wall_s_to_target", "target_accuracy", "seeds_reached", "budget_tokens"):
            assert k in r, (r["method"], k)
        assert r["seeds"] == [0, 1] and len(r["final_accuracy_by_seed"]) == 2
        assert 0 <= r["final_accuracy_mean"] <= 1 and r["final_accuracy_std"] >= 0
        mean = sum(r["final_accuracy_by_seed"]) / 2
        assert r["final_accuracy_mean"] == pytest.approx(mean)
        # a mean over seeds only when every seed reached the target
        reached = [x for x in r["student_tokens_to_target_by_seed"] if x is not None]
        assert (r["student_tokens_to_target"] is None) == (len(reached) < 2) and r["seeds_reached"] == len(reached)
        assert r["budget_tokens"] >= 200
        assert "curves" not in r
    assert summary["protocol"] == "plateau" and summary["student"] == "addition-student-sft"
    assert summary["target_accuracy"] == pytest.approx(summary["target_frac"] * summary["teacher_accuracy"])
    assert all(r["target_accuracy"] == summary["target_accuracy"] for r in methods)
