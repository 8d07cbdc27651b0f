"""workbench.runs: run directories that survive crashes, refuse double writers, and read back into pandas."""
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from workbench.runs import (RunDir, RunDirError, latest_checkpoint, load_config, load_metrics, load_runs,
                            load_samples, load_status, read_jsonl)

REPO = Path(__file__).resolve().parents[1]


def _python(code: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def _lines(path):
    return Path(path).read_text().splitlines()


def test_writes_config_metrics_samples_and_flushes_every_step(tmp_path):
    run = tmp_path / "run"
    cfg = {"method": "opd", "lr": 1e-3, "path": Path("/x")}
    rd = RunDir(run, cfg)
    try:
        assert load_config(run) == {"method": "opd", "lr": 1e-3, "path": "/x"}
        assert (run / "checkpoints").is_dir()
        assert (run / ".lock").read_text() == str(os.getpid())
        samples = [{"prompt": "1+2=", "tokens": ["3", "<eos>"], "token_reward": None, "correct": True}]
        rd.log_step({"step": 1, "loss": 0.5, "run": "a", "samples": samples})
        # readable while the RunDir is still open
        assert read_jsonl(run / "metrics.jsonl") == [{"step": 1, "loss": 0.5, "run": "a"}]
        assert read_jsonl(run / "samples.jsonl") == [{"step": 1, "samples": samples}]
        rd.log_step({"step": 2, "loss": float("nan"), "grad/norm": float("inf"), "run": "a"})
        assert read_jsonl(run / "metrics.jsonl")[1] == {"step": 2, "loss": None, "grad/norm": None, "run": "a"}
        assert len(_lines(run / "samples.jsonl")) == 1        # no samples, no line
        df = load_metrics(run)
        assert df["step"].tolist() == [1, 2]
        assert df["loss"].iloc[0] == 0.5 and math.isnan(df["loss"].iloc[1])
        assert load_samples(run) == [{"step": 1, "samples": samples}]
        rd.log_event("skipped_update", step=2, value=float("nan"))
        ev = read_jsonl(run / "events.jsonl")
        assert ev[0]["event"] == "skipped_update" and ev[0]["step"] == 2 and ev[0]["value"] is None
        rd.write_status("running", step=2)
        assert load_status(run)["state"] == "running" and load_status(run)["step"] == 2
    finally:
        rd.close()
    assert not (run / ".lock").exists()
    rd.close()                                                 # idempotent


def test_refuses_existing_dir_unless_overwrite_or_resume(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    RunDir(run, {"a": 1}).close()                            # an existing empty dir is fine
    with _ctx(RunDir(run, {"a": 1}, overwrite=True)) as rd:
        rd.log_step({"step": 1, "loss": 1.0})
    with pytest.raises(RunDirError) as e:
        RunDir(run, {"a": 2})
    assert "already exists" in str(e.value) and "overwrite" in str(e.value) and "resume" in str(e.value)
    assert load_config(run) == {"a": 1}

    # resume keeps the config and appends
    with _ctx(RunDir(run, {"a": 99}, resume=True)) as rd:
        rd.log_step({"step": 2, "loss": 0.5})
    assert load_config(run) == {"a": 1}
    assert load_metrics(run)["step"].tolist() == [1, 2]

    # overwrite replaces everything
    with _ctx(RunDir(run, {"a": 3}, overwrite=True)) as rd:
        assert read_jsonl(run / "metrics.jsonl") == []
        rd.log_step({"step": 1, "loss": 2.0})
    assert load_config(run) == {"a": 3}
    assert load_metrics(run)["loss"].tolist() == [2.0]

    other = tmp_path / "not_a_run"
    other.mkdir()
    (other / "notes.txt").write_text("hi")
    with pytest.raises(RunDirError, match="no config.json"):
        RunDir(other, resume=True)


class _ctx:
    def __init__(self, rd):
        self.rd = rd

    def __enter__(self):
        return self.rd

    def __exit__(self, *exc):
        self.rd.close()


def test_resume_drops_a_torn_last_line(tmp_path):
    run = tmp_path / "run"
    with _ctx(RunDir(run, {})) as rd:
        rd.log_step({"step": 1, "loss": 1.0})
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 2, "lo')                           # crash mid-write
    assert [r["step"] for r in read_jsonl(run / "metrics.jsonl")] == [1]
    with _ctx(RunDir(run, resume=True)) as rd:
        rd.log_step({"step": 2, "loss": 0.5})
    assert _lines(run / "metrics.jsonl") == ['{"step": 1, "loss": 1.0}', '{"step": 2, "loss": 0.5}']


def test_read_jsonl_torn_lines(tmp_path):
    p = tmp_path / "m.jsonl"
    assert read_jsonl(p) == []
    p.write_text('{"a": 1}\n\n{"a": 2}\n{"a": 3, "b"')
    assert read_jsonl(p) == [{"a": 1}, {"a": 2}]
    p.write_text('{"a": 1}\n{"a": 2, "b"\n{"a": 3}\n')
    with pytest.raises(ValueError, match=r"m.jsonl:2: malformed JSON line in the middle"):
        read_jsonl(p)


def test_lock_held_by_another_live_process(tmp_path):
    run = tmp_path / "run"
    proc = _python(f"""
        import sys, time
        from workbench.runs import RunDir
        rd = RunDir({str(run)!r}, {{"who": "child"}})
        rd.log_step({{"step": 1, "loss": 1.0}})
        print("ready", flush=True)
        time.sleep(60)
    """)
    try:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        assert (run / ".lock").read_text() == str(proc.pid)
        for kw in ({"resume": True}, {"overwrite": True}):
            with pytest.raises(RunDirError) as e:
                RunDir(run, {"who": "parent"}, **kw)
            assert f"process {proc.pid}" in str(e.value)
        # the refused overwrite deleted nothing
        assert load_config(run) == {"who": "child"}
        assert load_metrics(run)["step"].tolist() == [1]
        assert (run / ".lock").read_text() == str(proc.pid)
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    # the writer is dead now: its lock is stale and is taken over
    with _ctx(RunDir(run, resume=True)):
        assert (run / ".lock").read_text() == str(os.getpid())


def test_stale_lock_from_dead_pid_is_taken_over(tmp_path):
    run = tmp_path / "run"
    RunDir(run, {"x": 1}).close()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (run / ".lock").write_text(str(dead.pid))
    with _ctx(RunDir(run, resume=True)) as rd:
        assert (run / ".lock").read_text() == str(os.getpid())
        rd.log_step({"step": 1})
    assert not (run / ".lock").exists()
    (run / ".lock").write_text("garbage")                    # unreadable pid: treated as stale
    RunDir(run, resume=True).close()


def test_unwritable_dir(tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("not a directory")
    with pytest.raises(RunDirError, match="not writable"):
        RunDir(f / "run", {})


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores directory permissions")
def test_unwritable_dir_permissions(tmp_path):
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o500)
    try:
        with pytest.raises(RunDirError, match="not writable"):
            RunDir(parent / "run", {})
    finally:
        parent.chmod(0o700)


def test_sigkill_loses_no_completed_step(tmp_path):
    run = tmp_path / "run"
    proc = _python(f"""
        import time
        from workbench.runs import RunDir
        rd = RunDir({str(run)!r}, {{"method": "sft"}})
        step = 0
        while True:
            step += 1
            rd.log_step({{"step": step, "loss": 1.0 / step, "run": "killed",
                          "samples": [{{"prompt": "p", "tokens": ["a"] * step}}]}})
            print(step, flush=True)
            time.sleep(0.05)
    """)
    try:
        seen = 0
        deadline = time.time() + 30
        while seen < 6 and time.time() < deadline:
            line = proc.stdout.readline()
            assert line, proc.stderr.read()
            seen = int(line)
            # a reader following the live run sees every step that was reported as logged
            df = load_metrics(run)
            assert df["step"].tolist()[:seen] == list(range(1, seen + 1))
        assert seen >= 6
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    df = load_metrics(run)
    n = len(df)
    assert n >= seen
    assert df["step"].tolist() == list(range(1, n + 1))
    assert df["loss"].tolist() == [1.0 / s for s in range(1, n + 1)]
    assert set(df["run"]) == {"killed"}
    samples = load_samples(run)
    assert [s["step"] for s in samples][:n] == list(range(1, n + 1))
    assert all(len(s["samples"][0]["tokens"]) == s["step"] for s in samples)
    # and the run can be resumed (stale lock taken over)
    with _ctx(RunDir(run, resume=True)) as rd:
        rd.truncate_after(n)
        rd.log_step({"step": n + 1, "loss": 0.0, "run": "killed"})
    assert load_metrics(run)["step"].tolist() == list(range(1, n + 2))


def test_load_runs(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    with _ctx(RunDir(a, {})) as rd:
        for s in (1, 2, 3):
            rd.log_step({"step": s, "loss": float(s)})
    with _ctx(RunDir(b, {})) as rd:
        for s in (1, 2):
            rd.log_step({"step": s, "loss": 10.0 * s, "run": "bee"})
    df = load_runs([a, b])
    assert len(df) == 5
    assert df["run"].tolist() == ["a", "a", "a", "bee", "bee"]
    assert df["run_dir"].tolist() == [str(a)] * 3 + [str(b)] * 2
    assert df["loss"].tolist() == [1.0, 2.0, 3.0, 10.0, 20.0]
    assert df.groupby("run")["step"].max().to_dict() == {"a": 3, "bee": 2}
    assert load_runs(str(a))["run"].tolist() == ["a"] * 3
    with pytest.raises(ValueError, match="no run directories"):
        load_runs([])
    with pytest.raises(FileNotFoundError, match="not a run directory"):
        load_metrics(tmp_path / "nothing")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_config(tmp_path / "nothing")
    assert load_status(a) is None


def _fake_checkpoint(rd, step):
    tmp = rd.path / "checkpoints" / f".tmp_{step}"
    tmp.mkdir()
    (tmp / "weights.txt").write_text(f"step {step}")
    return tmp


def test_commit_checkpoint_latest_and_pruning(tmp_path):
    run = tmp_path / "run"
    with _ctx(RunDir(run, {})) as rd:
        assert latest_checkpoint(run) is None
        for step in (100, 200, 300):
            final = rd.commit_checkpoint(_fake_checkpoint(rd, step), step, keep_last=2)
            assert final == run / "checkpoints" / f"step_{step:06d}"
            assert (final / "weights.txt").read_text() == f"step {step}"
            assert latest_checkpoint(run) == final
            assert (run / "checkpoints" / "LATEST").read_text() == final.name
        assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["LATEST", "step_000200", "step_000300"]
        # re-committing a step replaces it
        rd.commit_checkpoint(_fake_checkpoint(rd, 300), 300, keep_last=2)
        assert (rd.checkpoint_dir(300) / "weights.txt").read_text() == "step 300"
        # keep_last=0 keeps everything
        rd.commit_checkpoint(_fake_checkpoint(rd, 400), 400, keep_last=0)
        rd.commit_checkpoint(_fake_checkpoint(rd, 500), 500, keep_last=0)
        names = sorted(p.name for p in (run / "checkpoints").glob("step_*"))
        assert names == ["step_000200", "step_000300", "step_000400", "step_000500"]
        # keep_last=1 prunes down to the newest
        rd.commit_checkpoint(_fake_checkpoint(rd, 600), 600, keep_last=1)
        assert [p.name for p in (run / "checkpoints").glob("step_*")] == ["step_000600"]
    # a LATEST pointing at a missing directory falls back to the newest one present
    (run / "checkpoints" / "LATEST").write_text("step_000999")
    assert latest_checkpoint(run) == run / "checkpoints" / "step_000600"
    (run / "checkpoints" / "LATEST").unlink()
    assert latest_checkpoint(run) == run / "checkpoints" / "step_000600"


def test_truncate_after(tmp_path):
    run = tmp_path / "run"
    with _ctx(RunDir(run, {})) as rd:
        for s in range(1, 6):
            rd.log_step({"step": s, "loss": float(s), "samples": [{"prompt": str(s)}]})
        old_handles = (rd._metrics, rd._samples)
        rd.truncate_after(3)
        assert all(f.closed for f in old_handles)             # replaced files' handles are not leaked
        assert load_metrics(run)["step"].tolist() == [1, 2, 3]
        assert [r["step"] for r in load_samples(run)] == [1, 2, 3]
        rd.log_step({"step": 4, "loss": 40.0, "samples": [{"prompt": "again"}]})
        assert load_metrics(run)["loss"].tolist() == [1.0, 2.0, 3.0, 40.0]
        assert load_samples(run)[-1] == {"step": 4, "samples": [{"prompt": "again"}]}
        rd.truncate_after(0)
        assert read_jsonl(run / "metrics.jsonl") == [] and read_jsonl(run / "samples.jsonl") == []
        rd.log_step({"step": 1, "loss": 9.0})
    assert _lines(run / "metrics.jsonl") == ['{"step": 1, "loss": 9.0}']
