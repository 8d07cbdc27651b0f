"""Reliability: checkpoint/resume exactness, interrupts (Ctrl-C, Stop, SIGTERM, SIGKILL), numerical guards,
input validation before compute, run-directory integrity, and a failed papermill execution.

Tiny random models (the `nano` preset) saved as checkpoint directories stand in for the teacher and student:
a step costs a fraction of a second on one CPU thread, and a run directory can rebuild them.
"""
import json
import math
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from workbench import cli
from workbench.config import ConfigError, TrainConfig
from workbench.models import build_model, load_checkpoint, save_checkpoint
from workbench.runs import (RunDir, RunDirLocked, latest_checkpoint, load_status, read_jsonl)
from workbench.tasks import get_task
from workbench.tasks.jsonl import JsonlProblems, load_problems
from workbench.tokenizer import build_tokenizer
from workbench.trainer import Trainer, TrainingError

REPO = Path(__file__).resolve().parents[1]
TASK = get_task("addition")


# --------------------------------------------------------------------------------------------------
# fixtures and helpers
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tok():
    return build_tokenizer(TASK.charset)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory, tok):
    d = tmp_path_factory.mktemp("ckpts")
    save_checkpoint(build_model("nano", tok, seed=1), tok, d / "teacher")
    save_checkpoint(build_model("nano", tok, seed=2), tok, d / "student")
    return {"teacher": str(d / "teacher"), "student": str(d / "student")}


def cfg(method, ckpts, **kw):
    base = dict(steps=4, batch_size=8, eval_problems=16, eval_every=2, device="cpu", **ckpts)   # exact on CPU
    if method == "grpo":
        base["num_generations"] = 4
    return TrainConfig.for_method(method, **{**base, **kw})


def metrics(run_dir):
    return read_jsonl(Path(run_dir) / "metrics.jsonl")


def no_time(rows):
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]


def events(run_dir, kind=None):
    return [e for e in read_jsonl(Path(run_dir) / "events.jsonl") if kind is None or e["event"] == kind]


def ck_step(run_dir) -> int:
    return int(latest_checkpoint(run_dir).name.split("_")[-1])


def params(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def same(a, b):
    return all(torch.equal(a[n], b[n]) for n in a)


@pytest.fixture(autouse=True)
def python_sigint_handler():
    """Ctrl-C as in a terminal: a test suite started in the background (`cmd &` in a non-interactive shell)
    inherits SIGINT *ignored*, and the trainer rightly leaves an ignored signal alone; these tests send
    SIGINT to themselves, so they install Python's own handler for their duration."""
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, old)


def sigint_self():
    os.kill(os.getpid(), signal.SIGINT)


def on_nth_call(fn, when, action):
    """Wrap `fn`: call `action()` first whenever `when()` is true."""
    def wrapped(*a, **k):
        if when():
            action()
        return fn(*a, **k)
    return wrapped


# --------------------------------------------------------------------------------------------------
# 1. checkpoint and resume
# --------------------------------------------------------------------------------------------------
# stateful watchers inside the trainer (the early-warning alarm fires once at an onset) must resume too:
# a threshold of 0 makes the alarm fire at step 1 and stay quiet after, unless a resume forgets its state
ALARM = {"warn_truncation": 0.0, "warn_shrink": 0.0} if "warn_truncation" in TrainConfig.__dataclass_fields__ else {}


@pytest.mark.parametrize("method", ["sft", "grpo", "opd"])
def test_resume_after_interrupt_equals_uninterrupted(method, ckpts, tmp_path, capsys):
    ref = tmp_path / "ref"
    Trainer(cfg(method, ckpts, out=str(ref), **ALARM)).run()
    assert [m["step"] for m in metrics(ref)] == [1, 2, 3, 4]
    if ALARM:
        assert [("warning" in m) for m in metrics(ref)] == [True, False, False, False]

    run = tmp_path / "run"
    tr = Trainer(cfg(method, ckpts, out=str(run), **ALARM))
    # a real Ctrl-C in the middle of step 3: after its rollouts (and teacher scoring), before the update
    tr._loss = on_nth_call(tr._loss, lambda: tr.step_count == 2, sigint_self)
    summary = tr.run()
    assert summary["reason"] == "interrupted" and summary["step"] == 2
    assert "interrupted" in summary["message"]
    status = load_status(run)
    assert status["state"] == "interrupted" and status["step"] == 2 and status["checkpoint"] == "step_000002"
    assert [m["step"] for m in metrics(run)] == [1, 2]               # the half-done step 3 is not logged
    assert not (run / ".lock").exists()
    state = torch.load(latest_checkpoint(run) / "trainer_state.pt", weights_only=False)
    assert state["step"] == 2
    # the half-done step's costs were rolled back: the checkpoint's costs are step 2's
    assert state["costs"]["student_tokens"] == metrics(run)[-1]["cost/student_tokens"]
    assert state["costs"]["flops"] == metrics(run)[-1]["cost/flops"]
    assert [e["reason"] for e in events(run, "ended")] == ["interrupted"]

    if method == "opd":       # through the command line: `train --resume DIR` runs to the configured steps
        capsys.readouterr()
        assert cli.main(["train", "--resume", str(run), "--json"]) == 0
        lines = [json.loads(ln) for ln in capsys.readouterr().out.splitlines() if ln.strip()]
        assert [ln["step"] for ln in lines[:-1]] == [3, 4] and lines[-1]["reason"] == "completed"
    else:
        resumed = Trainer.resume(run)
        assert resumed.step_count == 2
        assert resumed.run()["step"] == 4

    assert no_time(metrics(run)) == no_time(metrics(ref))           # steps 3-4 (and 1-2) bit for bit
    assert read_jsonl(run / "samples.jsonl") == read_jsonl(ref / "samples.jsonl")
    assert [e["step"] for e in events(run, "resumed")] == [2]
    assert load_status(run)["state"] == "completed"


def test_stop_then_resume_restores_optimizer_and_rng_state(ckpts, tmp_path):
    """Stop button path (a callback returning True), then resume: optimizer state and RNG come back."""
    run = tmp_path / "run"
    tr = Trainer(cfg("opd", ckpts, out=str(run), steps=3, eval_every=0))

    class Stop:
        def on_step(self, rec):
            return rec["step"] == 1

    torch.manual_seed(1234)
    summary = tr.run(callbacks=[Stop()])
    assert summary["reason"] == "stopped" and "Stop" in summary["message"]
    rng_at_save = torch.get_rng_state()
    opt_state = tr.opt.state_dict()
    torch.manual_seed(999)                  # scramble the global RNG; resume restores it
    resumed = Trainer.resume(run)
    assert torch.equal(torch.get_rng_state(), rng_at_save)
    got = resumed.opt.state_dict()
    assert got["param_groups"][0]["lr"] == opt_state["param_groups"][0]["lr"]
    for i, s in opt_state["state"].items():
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(got["state"][i][key], s[key])
    assert same(params(resumed.student), params(tr.student))
    assert resumed.costs.student_tokens == tr.costs.student_tokens
    resumed.run()
    assert [m["step"] for m in metrics(run)] == [1, 2, 3]


def test_checkpoint_write_is_atomic(ckpts, tmp_path, monkeypatch):
    """A crash in the middle of a save leaves the previous checkpoint as the latest, intact."""
    run = tmp_path / "run"
    tr = Trainer(cfg("opd", ckpts, out=str(run), steps=2, eval_every=0, save_every=1))
    tr.run(steps=1)
    assert ck_step(run) == 1
    tr.step()

    def crash(*a, **k):
        raise OSError("disk full (simulated crash mid-save)")

    monkeypatch.setattr(tr.tokenizer, "save_pretrained", crash)       # the model file is already written
    with pytest.raises(OSError, match="simulated"):
        tr.save()
    assert (run / "checkpoints" / ".tmp_step_000002").exists()         # the half-written one...
    assert (run / "checkpoints" / "LATEST").read_text() == "step_000001"   # ...is not the latest
    model, _ = load_checkpoint(latest_checkpoint(run))
    assert torch.load(latest_checkpoint(run) / "trainer_state.pt", weights_only=False)["step"] == 1
    monkeypatch.undo()
    tr.close()
    resumed = Trainer.resume(run)
    assert resumed.step_count == 1
    assert not list((run / "checkpoints").glob(".tmp_*"))               # the leftover is cleaned up


# --------------------------------------------------------------------------------------------------
# 2. interrupts
# --------------------------------------------------------------------------------------------------
def test_sigterm_ends_after_the_current_step(ckpts, tmp_path):
    run = tmp_path / "run"
    tr = Trainer(cfg("opd", ckpts, out=str(run), steps=6, eval_every=0))
    # SIGTERM arrives from another thread while step 2 is running
    def sigterm_from_a_thread():
        t = threading.Thread(target=os.kill, args=(os.getpid(), signal.SIGTERM))
        t.start()
        t.join()

    tr._loss = on_nth_call(tr._loss, lambda: tr.step_count == 1, sigterm_from_a_thread)
    before = signal.getsignal(signal.SIGTERM)
    summary = tr.run()
    assert signal.getsignal(signal.SIGTERM) == before            # the handler is restored
    assert summary["reason"] == "stopped" and summary["message"] == "SIGTERM"
    assert [m["step"] for m in metrics(run)] == [1, 2]
    st = load_status(run)
    assert st["state"] == "stopped" and st["message"] == "SIGTERM" and st["step"] == 2
    assert ck_step(run) == 2 and not (run / ".lock").exists()
    assert Trainer.resume(run).run()["step"] == 6


def test_sigint_during_the_update_completes_the_step_then_stops(ckpts, tmp_path):
    """Ctrl-C while the optimizer writes the weights is held: the update is whole, the step logged."""
    run = tmp_path / "run"
    tr = Trainer(cfg("opd", ckpts, out=str(run), steps=5, eval_every=0))
    seen = []
    tr.opt.step = on_nth_call(tr.opt.step, lambda: tr.step_count == 1, lambda: (sigint_self(), seen.append(1)))
    before = params(tr.student)
    summary = tr.run()
    assert seen and summary["reason"] == "interrupted" and summary["step"] == 2
    assert [m["step"] for m in metrics(run)] == [1, 2] and ck_step(run) == 2
    assert not same(before, params(tr.student))
    reloaded, _ = load_checkpoint(latest_checkpoint(run))
    assert same(params(reloaded), params(tr.student))                 # the checkpoint is the updated step 2
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_sigint_during_evaluation_keeps_the_step(ckpts, tmp_path):
    run = tmp_path / "run"
    tr = Trainer(cfg("sft", ckpts, out=str(run), steps=4, eval_every=2))
    tr.evaluate = on_nth_call(tr.evaluate, lambda: True, sigint_self)
    summary = tr.run()
    assert summary["reason"] == "interrupted" and summary["step"] == 2
    rows = metrics(run)
    assert [m["step"] for m in rows] == [1, 2] and rows[-1]["eval/interrupted"] == 1
    assert "eval/accuracy" not in rows[-1]
    assert ck_step(run) == 2 and load_status(run)["state"] == "interrupted"
    assert tr.student.training                       # left in training mode


def test_keyboard_interrupt_in_direct_step_rolls_back(ckpts):
    tr = Trainer(cfg("opd", ckpts, eval_every=0))
    tr.step()
    costs = tr.costs.state_dict()
    before = params(tr.student)
    tr._loss = on_nth_call(tr._loss, lambda: True, sigint_self)
    with pytest.raises(KeyboardInterrupt):
        tr.step()
    assert tr.step_count == 1 and tr.costs.state_dict() == costs and same(before, params(tr.student))
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def _train_cli(out, ckpts, *extra):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen(
        [sys.executable, "-m", "workbench", "train", "--method", "opd", "--teacher", ckpts["teacher"],
         "--student", ckpts["student"], "--batch-size", "8", "--eval-every", "0", "--device", "cpu",
         "--out", str(out), "--json",
         *extra], cwd=str(REPO), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _lines_until(proc, n, timeout=120):
    """Read stdout lines until `n` JSON step lines arrived (a reader thread, so a hang cannot block the test)."""
    q = queue.Queue()
    proc.reader = threading.Thread(target=lambda: [q.put(ln) for ln in proc.stdout], daemon=True)
    proc.reader.start()
    lines, deadline = [], time.time() + timeout
    while len(lines) < n:
        try:
            lines.append(json.loads(q.get(timeout=max(0.1, deadline - time.time()))))
        except queue.Empty:
            proc.kill()
            pytest.fail(f"the training process printed {len(lines)} steps in {timeout}s: {proc.stderr.read()[-2000:]}")
    return lines


def test_sigkill_mid_run_leaves_a_readable_resumable_run_and_refuses_a_second_writer(ckpts, tok, tmp_path):
    run = tmp_path / "run"
    proc = _train_cli(run, ckpts, "--steps", "500", "--save-every", "1")
    try:
        printed = _lines_until(proc, 3)
        assert [p["step"] for p in printed] == [1, 2, 3]
        # 5. a second writer is refused while the first is alive — from this process, by config or by resume
        with pytest.raises(RunDirLocked, match=rf"being written by process {proc.pid}"):
            Trainer(cfg("opd", ckpts, out=str(run), overwrite=True))
        with pytest.raises(RunDirLocked, match=rf"process {proc.pid}"):
            Trainer.resume(run)
        with pytest.raises(RunDirLocked, match=rf"process {proc.pid}"):
            RunDir(run, resume=True)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if getattr(proc, "reader", None) is not None:
            proc.reader.join(10)                            # EOF after the kill: the reader ends
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    lines = (run / "metrics.jsonl").read_text().splitlines()
    for ln in lines[:-1]:
        json.loads(ln)                                      # every line but maybe a torn last one is whole
    rows = metrics(run)
    n = len(rows)
    assert [r["step"] for r in rows] == list(range(1, n + 1)) and n >= 3
    assert no_time(rows[:3]) == no_time(printed)            # what was reported is what was logged
    k = ck_step(run)
    assert k >= n - 1 >= 2                                  # save_every=1: at most the step in flight is lost
    model, t = load_checkpoint(latest_checkpoint(run))
    assert all(torch.isfinite(p).all() for p in model.parameters()) and len(t) == len(tok)
    assert torch.load(latest_checkpoint(run) / "trainer_state.pt", weights_only=False)["step"] == k
    assert load_status(run)["state"] == "running"           # it had no chance to say otherwise
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 99, "loss": 0.1')                 # and a torn last line, for good measure
    resumed = Trainer.resume(run, steps=k + 2)              # the dead writer's lock is stale: taken over
    assert resumed.step_count == k
    resumed.run()
    assert [r["step"] for r in metrics(run)] == list(range(1, k + 3))
    assert no_time(metrics(run)[:k]) == no_time(rows[:k])


# --------------------------------------------------------------------------------------------------
# 3. numerical guards
# --------------------------------------------------------------------------------------------------
def _nan_logits(model, when):
    head = model.get_output_embeddings()
    return head.register_forward_hook(lambda m, i, o: o * float("nan") if when() else o)


def test_nan_teacher_logits_skip_the_update_and_are_reported(ckpts, tmp_path):
    run = tmp_path / "run"
    tr = Trainer(cfg("opd", ckpts, out=str(run), steps=3, eval_every=0))
    _nan_logits(tr.teacher, lambda: tr.step_count == 1)                # step 2 is poisoned
    snaps = []

    class Snap:
        def on_step(self, rec):
            snaps.append(params(tr.student))

    tr.run(callbacks=[Snap()])
    rows = metrics(run)
    assert [r["step"] for r in rows] == [1, 2, 3]
    bad = rows[1]
    assert bad["nonfinite/skipped"] == 1 and bad["nonfinite/reason"] == "non-finite loss"
    assert bad["loss"] is None                                         # NaN is written as null
    assert "nonfinite/skipped" not in rows[0] and "nonfinite/skipped" not in rows[2]
    assert same(snaps[0], snaps[1]) and not same(snaps[1], snaps[2])   # skipped, then training goes on
    ev = events(run, "skipped_update")
    assert len(ev) == 1 and ev[0]["step"] == 2 and ev[0]["why"] == "non-finite loss"
    for k in ("rollout/mean_length", "reward/mean", "cost/student_tokens", "policy/entropy"):
        assert k in ev[0]                                              # the offending step's statistics
    assert load_status(run)["state"] == "completed"


def test_nan_gradient_with_finite_loss_is_skipped(ckpts):
    tr = Trainer(cfg("sft", ckpts, eval_every=0))
    head = tr.student.get_output_embeddings()

    def poison(m, i, o):
        if torch.is_grad_enabled() and tr.step_count == 0:
            o.register_hook(lambda g: g * float("nan"))
        return o

    head.register_forward_hook(poison)
    before = params(tr.student)
    rec = tr.step()
    assert math.isfinite(rec["loss"]) and rec["nonfinite/reason"] == "non-finite gradient"
    assert same(before, params(tr.student))
    rec = tr.step()
    assert "nonfinite/skipped" not in rec and not same(before, params(tr.student))


@pytest.mark.parametrize("save_every", [0, 1])
def test_consecutive_nonfinite_updates_stop_and_keep_the_last_good_checkpoint(ckpts, tmp_path, save_every):
    run = tmp_path / "run"
    tr = Trainer(cfg("opd", ckpts, out=str(run), steps=10, eval_every=0, max_nonfinite=2, save_every=save_every))
    _nan_logits(tr.teacher, lambda: tr.step_count >= 2)               # from step 3 on
    with pytest.raises(TrainingError, match=r"2 consecutive non-finite updates .*step 4.* step 2") as e:
        tr.run()
    assert "max_nonfinite" in str(e.value)
    assert [r["step"] for r in metrics(run)] == [1, 2, 3, 4]          # the skipped steps are on record
    assert len(events(run, "skipped_update")) == 2
    st = load_status(run)
    assert st["state"] == "nonfinite" and "consecutive non-finite" in st["message"]
    assert ck_step(run) == 2                                          # never a checkpoint of a skipped step
    state = torch.load(latest_checkpoint(run) / "trainer_state.pt", weights_only=False)
    assert state["step"] == 2 and state["nonfinite_in_row"] == 0
    assert state["costs"]["student_tokens"] == metrics(run)[1]["cost/student_tokens"]
    reloaded, _ = load_checkpoint(latest_checkpoint(run))
    assert same(params(reloaded), params(tr.student))                 # = the weights after step 2
    resumed = Trainer.resume(run, steps=3)                            # a fresh teacher: training goes on
    resumed.run()
    assert [r["step"] for r in metrics(run)] == [1, 2, 3] and "nonfinite/skipped" not in metrics(run)[-1]


@pytest.mark.parametrize("method,loss", [("opd", None), ("opd", "full_kl"), ("opd", "topk"), ("gkd", None)])
def test_masked_teacher_vocabulary_gives_no_nan(ckpts, tok, method, loss):
    """-inf teacher logits (a banned vocabulary) on tokens the student samples: finite loss and gradients."""
    kw = {"loss": loss} if loss else {}
    tr = Trainer(cfg(method, ckpts, steps=2, eval_every=0, num_samples=8, **kw))
    banned = torch.zeros(len(tok), dtype=torch.bool)
    banned[[tok.convert_tokens_to_ids(c) for c in "56789+,"] + [tok.pad_token_id, tok.unk_token_id]] = True
    tr.teacher.get_output_embeddings().register_forward_hook(lambda m, i, o: o.masked_fill(banned, float("-inf")))
    grads = []
    for p in tr.student.parameters():
        p.register_hook(lambda g: grads.append(bool(torch.isfinite(g).all())) or g)
    recs = [tr.step(), tr.step()]
    for rec in recs:
        assert "nonfinite/skipped" not in rec, rec.get("nonfinite/reason")
        assert math.isfinite(rec["loss"]) and math.isfinite(rec["grad/norm"])
        assert math.isfinite(rec["teacher/token_reward_mean"]) and math.isfinite(rec["teacher/reverse_kl"])
    assert grads and all(grads)
    assert all(torch.isfinite(p).all() for p in tr.student.parameters())
    if recs[0]["batch/on_policy"]:                   # the student did sample banned tokens: a large finite penalty
        rewards = [r for s in recs[0]["samples"] for r in s["token_reward"]]
        assert all(math.isfinite(r) for r in rewards) and min(rewards) < -1000


# --------------------------------------------------------------------------------------------------
# 4. input validation: one clear error each, before any compute
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory, tok, ckpts):
    d = tmp_path_factory.mktemp("bad")
    other = build_tokenizer(get_task("multiply").charset)
    save_checkpoint(build_model("nano", other, seed=3), other, d / "other_vocab")
    eos = build_tokenizer(TASK.charset)
    eos.eos_token = "<unk>"
    save_checkpoint(build_model("nano", tok, seed=3), eos, d / "other_eos")
    save_checkpoint(build_model("nano", tok, seed=3), tok, d / "corrupt")
    (d / "corrupt" / "config.json").write_text("{not json")
    (d / "not_a_ckpt").mkdir()
    good = [json.dumps({"prompt": p.prompt, "solution": p.solution, "answer": p.answer})
            for p in TASK.problems(3, seed=5)]
    (d / "good.jsonl").write_text("\n".join(good) + "\n")
    (d / "torn.jsonl").write_text(good[0] + "\n" + good[1][:20] + "\n")
    row = json.loads(good[0])
    (d / "missing.jsonl").write_text(good[0] + "\n\n" + json.dumps({"prompt": row["prompt"],
                                                                    "solution": row["solution"]}) + "\n")
    (d / "chars.jsonl").write_text(json.dumps({**row, "prompt": "12 plus 34="}) + "\n")
    (d / "list.jsonl").write_text("[1, 2, 3]\n")
    (d / "empty.jsonl").write_text("\n")
    (d / "exists").mkdir()
    (d / "exists" / "metrics.jsonl").write_text("")
    (d / "a_file").write_text("x")
    (d / "no_ckpt").mkdir()
    (d / "no_ckpt" / "config.json").write_text(json.dumps({"config": cfg("opd", ckpts).to_dict()}))
    return d


def _t(method="opd", **kw):
    return lambda c, d: Trainer(cfg(method, c, **kw))


def _paths(method="opd", **kw):
    """Options that name files in the bad-inputs folder: {"teacher": "other_vocab"} -> that folder's path."""
    return lambda c, d: Trainer(cfg(method, c, **{k: str(d / v) for k, v in kw.items()}))


no_cuda = "cuda" if not torch.cuda.is_available() else "mps"

BAD_INPUTS = [
    # id, build(ckpts, dir), exception, message pattern, may load models before failing
    ("unknown method", lambda c, d: TrainConfig.for_method("distil"), ConfigError,
     r"unknown method 'distil'; choose one of \[", False),
    ("unknown preset in config", lambda c, d: Trainer(TrainConfig(method="ppo", **c)), ConfigError,
     r"unknown method 'ppo'", False),
    ("unknown task", _t(task="subtraction"), ValueError, r"unknown task 'subtraction'; choose one of", False),
    ("unknown model preset", lambda c, d: build_model("huge", build_tokenizer("01")), ValueError,
     r"unknown model preset 'huge'", False),
    ("unknown loss", _t(loss="l2"), ConfigError, r"loss 'l2' is not valid .* choose one of", False),
    ("loss not valid for source", _t("sft", loss="full_kl", signal="sparse"), ConfigError,
     r"loss 'full_kl' is not valid for source=teacher, signal=sparse", False),
    ("unknown option", lambda c, d: TrainConfig.for_method("opd", learnin_rate=1), ConfigError,
     r"unknown config options \['learnin_rate'\]", False),
    ("unknown key in a saved config", lambda c, d: TrainConfig.from_dict({"method": "opd", "lrate": 1}),
     ConfigError, r"unknown config keys \['lrate'\]", False),
    ("steps zero", _t(steps=0), ConfigError, r"steps must be a positive integer, got 0", False),
    ("batch size negative", _t(batch_size=-4), ConfigError, r"batch_size must be a positive integer, got -4", False),
    ("batch not a multiple of G", _t("grpo", batch_size=12, num_generations=8), ConfigError,
     r"batch_size \(12\) must be a multiple of num_generations \(8\)", False),
    ("lr zero", _t(lr=0.0), ConfigError, r"lr must be positive, got 0.0", False),
    ("lr not a number", _t(lr="3e-4"), ConfigError, r"lr must be a finite number, got '3e-4'", False),
    ("temperature zero", _t(temperature=0.0), ConfigError, r"temperature must be > 0", False),
    ("top_p above one", _t(top_p=1.5), ConfigError, r"top_p must be in \(0, 1\], got 1.5", False),
    ("gamma out of range", _t(gamma=1.5), ConfigError, r"gamma must be in \[0, 1\], got 1.5", False),
    ("positive reward clip", _t(reward_clip=2.0), ConfigError, r"reward_clip .* must be negative, got 2.0", False),
    ("max_nonfinite negative", _t(max_nonfinite=-1), ConfigError, r"max_nonfinite must be >= 0, got -1", False),
    ("max_new_tokens too small", _t(max_new_tokens=16), ConfigError,
     r"max_new_tokens=16 is below what task 'addition' needs \(\d+ tokens", False),
    ("device not available", _t(device=no_cuda), ValueError, rf"device '{no_cuda}' requested but .* not available",
     False),
    ("device not a device", _t(device="tpu7"), ConfigError, r"device 'tpu7' is not a device name", False),
    # the compatibility module's refusals (compat.check_pair, the same for the CLI and Python), with their fix,
    # before any weights load
    ("teacher vocabulary differs", _paths(teacher="other_vocab"), ConfigError,
     r"tokenizers differ \(19 vs 18 tokens; only in the teacher's: \['\*'\].*\n    fix: choose a teacher and student "
     r"of one family that share a tokenizer", False),
    ("teacher special tokens differ", _paths(teacher="other_eos"), ConfigError,
     r"EOS differs: teacher '<unk>' \(id 3\), student '<eos>' \(id 2\).*\n    fix: .*teacher_tokenizer.eos_token = "
     r"'<eos>'", False),
    ("missing checkpoint", lambda c, d: Trainer(cfg("opd", c, teacher=str(d / "nowhere"))), FileNotFoundError,
     r"teacher checkpoint '.*nowhere' does not exist", False),
    ("unknown zoo name", lambda c, d: Trainer(cfg("grpo", c, student="addition-studnet")), FileNotFoundError,
     r"student checkpoint 'addition-studnet' does not exist: it is neither a zoo entry", False),
    ("not a checkpoint directory", _paths(student="not_a_ckpt"), FileNotFoundError,
     r"student checkpoint '.*not_a_ckpt' has no config.json", False),
    ("unreadable checkpoint", _paths(teacher="corrupt"), ConfigError,
     r"could not load the teacher checkpoint '.*corrupt'", False),    # its config is read before any weights
    ("missing data file", _paths(data="nope.jsonl"), FileNotFoundError, r"data file '.*nope.jsonl' does not exist",
     False),
    ("data row not JSON", _paths(data="torn.jsonl"), ValueError, r"torn.jsonl:2: not valid JSON", False),
    ("data row lacks a field", _paths(data="missing.jsonl"), ValueError,
     r"missing.jsonl:3: missing field\(s\) \['answer'\]", False),
    ("data row with foreign characters", _paths(data="chars.jsonl"), ValueError,
     r"chars.jsonl:1: characters \[' ', 'l', 'p', 's', 'u'\] are not in the task's character set", False),
    ("data row not an object", _paths(data="list.jsonl"), ValueError, r"list.jsonl:1: expected a JSON object", False),
    ("empty data file", _paths(data="empty.jsonl"), ValueError, r"empty.jsonl' has no problems", False),
    ("data path is a directory", _paths(data="exists"), ValueError, r"is a directory, not a JSONL file", False),
    ("run directory exists", _paths(out="exists"), ConfigError, r"run directory '.*exists' already exists; .*overwrite",
     False),
    ("output directory not writable", lambda c, d: Trainer(cfg("opd", c, out=str(d / "a_file" / "run"))),
     ConfigError, r"run directory '.*a_file/run' is not writable", False),
    ("resume a non-run directory", lambda c, d: Trainer.resume(d / "not_a_ckpt"), FileNotFoundError,
     r"has no config.json; not a run directory", False),
    ("resume without a checkpoint", lambda c, d: Trainer.resume(d / "no_ckpt"), FileNotFoundError,
     r"no_ckpt' has no checkpoint to resume from", False),
    ("resume a missing directory", lambda c, d: Trainer.resume(d / "gone"), FileNotFoundError,
     r"cannot resume '.*gone': no such run directory", False),
    ("student object without tokenizer", lambda c, d: Trainer(cfg("grpo", {}), student=build_model(
        "nano", build_tokenizer(TASK.charset))), ConfigError, r"needs its tokenizer: pass tokenizer=", False),
]


@pytest.fixture
def watch_compute(monkeypatch):
    import workbench.trainer as T
    import workbench.models as models

    def boom(*a, **k):
        raise AssertionError("compute happened before the input error")

    for name in ("sample", "completion_logits", "evaluate"):
        monkeypatch.setattr(T, name, boom)
    loads = []
    real = models.load_checkpoint       # what pairs.load_checkpoint, the one public loader, calls
    monkeypatch.setattr(models, "load_checkpoint", lambda *a, **k: loads.append(a[0]) or real(*a, **k))
    return loads


@pytest.mark.parametrize("case", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_is_one_clear_error_before_compute(case, ckpts, bad_inputs, watch_compute):
    _, build, exc, pattern, may_load = case
    with pytest.raises(exc, match=pattern) as e:
        build(ckpts, bad_inputs)
    assert type(e.value) is not AssertionError
    if not may_load:
        assert watch_compute == [], f"models were loaded before the error: {watch_compute}"
    assert not (bad_inputs / "exists" / "config.json").exists()         # nothing written


def test_the_loader_spy_sees_the_loads_of_good_input(ckpts, watch_compute):
    """The spy above sees loads when there are some, so its silence in the bad cases means something (the
    vocabulary and EOS mismatches, which used to load both checkpoints first, are now refused before any
    weights load)."""
    Trainer(cfg("opd", ckpts))
    assert sorted(watch_compute) == sorted([ckpts["teacher"], ckpts["student"]])


def test_bad_input_table_is_large_enough():
    assert len(BAD_INPUTS) >= 20


def test_data_file_trains_on_its_problems(ckpts, bad_inputs):
    path = bad_inputs / "good.jsonl"
    prompts = {p.prompt for p in load_problems(path, TASK.charset)}
    tr = Trainer(cfg("opd", ckpts, data=str(path), eval_every=0, steps=1))
    assert isinstance(tr.task, JsonlProblems) and tr.task.name == "addition"
    rec = tr.step()
    assert {s["prompt"] for s in rec["samples"]} <= prompts
    assert tr.eval_problems == TASK.problems(16, seed=0, split="test")     # evaluation: the task's generator


def test_cli_reports_bad_input_without_traceback(ckpts, bad_inputs, capsys):
    assert cli.main(["train", "--method", "opd", "--data", str(bad_inputs / "torn.jsonl"),
                     "--teacher", ckpts["teacher"], "--student", ckpts["student"]]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "torn.jsonl:2: not valid JSON" in err and "Traceback" not in err


# --------------------------------------------------------------------------------------------------
# 5. run-directory integrity
# --------------------------------------------------------------------------------------------------
def test_two_trainers_in_one_process_cannot_share_a_run_directory(ckpts, tmp_path):
    run = tmp_path / "run"
    first = Trainer(cfg("opd", ckpts, out=str(run), steps=1, eval_every=0))
    with pytest.raises(RunDirLocked, match="another Trainer in this process"):
        Trainer(cfg("opd", ckpts, out=str(run), overwrite=True))
    with pytest.raises(RunDirLocked, match="another Trainer in this process"):
        RunDir(run, resume=True)
    assert (run / "config.json").exists()                    # the refused writer deleted nothing
    first.run()                                              # the lock is released when the run ends
    assert not (run / ".lock").exists()
    again = Trainer.resume(run, steps=2)
    again.run()
    assert [r["step"] for r in metrics(run)] == [1, 2]
    first.save()                                             # a later write re-acquires the lock, then frees it
    assert not (run / ".lock").exists()


def test_metrics_are_append_only_complete_lines(ckpts, tmp_path):
    run = tmp_path / "run"
    tr = Trainer(cfg("grpo", ckpts, out=str(run), steps=3, eval_every=0))
    sizes = []

    class Size:
        def on_step(self, rec):
            sizes.append((run / "metrics.jsonl").read_bytes())

    tr.run(callbacks=[Size()])
    for a, b in zip(sizes, sizes[1:]):
        assert b.startswith(a)                       # earlier bytes are never rewritten
    for data in sizes:
        assert data.endswith(b"\n")                  # each step is flushed as a whole line before watchers run
    assert len(sizes[-1].splitlines()) == 3


# --------------------------------------------------------------------------------------------------
# a failed notebook execution keeps the run directory
# --------------------------------------------------------------------------------------------------
def test_failed_papermill_run_keeps_metrics_up_to_the_failing_step(ckpts, tmp_path):
    pm = pytest.importorskip("papermill")
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    params = nbformat.v4.new_code_cell('out = ""\nteacher = ""\nstudent = ""\nrepo_root = ""\nfail_at = 3')
    params.metadata["tags"] = ["parameters"]
    body = nbformat.v4.new_code_cell(
        "import sys\n"
        "sys.path.insert(0, repo_root)\n"
        "import torch\n"
        "torch.set_num_threads(1)\n"
        "from workbench.config import TrainConfig\n"
        "from workbench.trainer import Trainer\n"
        "class Boom:\n"
        "    def on_step(self, rec):\n"
        "        if rec['step'] == fail_at:\n"
        "            raise RuntimeError(f'boom at step {fail_at}')\n"
        "trainer = Trainer(TrainConfig.for_method('opd', steps=10, batch_size=8, eval_every=0, device='cpu',\n"
        "                                         teacher=teacher, student=student, out=out))\n"
        "trainer.run(callbacks=[Boom()])\n")
    src, dst = tmp_path / "fail.ipynb", tmp_path / "fail.out.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[params, body], metadata=nb.metadata), src)
    run = tmp_path / "run"
    with pytest.raises(pm.PapermillExecutionError, match="boom at step 3"):
        pm.execute_notebook(str(src), str(dst), parameters={"out": str(run), "repo_root": str(REPO), **ckpts},
                            kernel_name="python3", execution_timeout=120, progress_bar=False, cwd=str(tmp_path))
    rows = metrics(run)
    assert [r["step"] for r in rows] == [1, 2, 3]                   # the failing step's record was logged first
    assert all(math.isfinite(r["loss"]) for r in rows)
    st = load_status(run)
    assert st["state"] == "error" and "boom at step 3" in st["message"] and st["step"] == 3
    assert ck_step(run) == 3 and not (run / ".lock").exists()
    resumed = Trainer.resume(run, steps=4)                          # and it is resumable
    resumed.run()
    assert [r["step"] for r in metrics(run)] == [1, 2, 3, 4]
