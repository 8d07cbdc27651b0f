"""Run directories: everything a training run leaves behind, written so that a crash loses nothing.

    run_dir/
      config.json      the full configuration (enough to resume)
      metrics.jsonl    one JSON line per step, appended and flushed every step
      samples.jsonl    {"step": k, "samples": [...]} token-level samples with per-token rewards
      events.jsonl     notable events (skipped non-finite updates, early warnings, resumes)
      status.json      how the run ended (or that it is running), written atomically
      checkpoints/     step_000100/ (safetensors model + trainer_state.pt), LATEST names the newest
      .lock            held by the writing process (pid); a second writer is refused

Readers tolerate a torn last line (a crash mid-write). `load_runs` returns pandas.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import time
import weakref
from pathlib import Path

import pandas as pd


class RunDirError(RuntimeError):
    pass


class RunDirLocked(RunDirError):
    """Another writer holds the run directory."""


def _json_default(o):
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _clean(value):
    """NaN/inf are not JSON: write them as null so every line stays parseable."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# run directories open for writing in this process: resolved path -> weakref to its RunDir
_OPEN: dict[str, "weakref.ref"] = {}


def _key(path) -> str:
    return str(Path(path).expanduser().resolve())


def _open_here(path):
    """The RunDir of this process that holds `path`'s lock, or None."""
    ref = _OPEN.get(_key(path))
    rd = ref() if ref is not None else None
    return rd if rd is not None and rd.is_open else None


def lock_holder(path) -> str | None:
    """Who is writing the run directory `path` now: a description, or None when nobody is."""
    p = Path(path).expanduser()
    if _open_here(p) is not None:
        return (f"another Trainer in this process (pid {os.getpid()}); let its run finish or call its "
                "close() first")
    try:
        pid = int((p / ".lock").read_text().strip() or 0)
    except (OSError, ValueError):
        return None
    if pid and pid != os.getpid() and _pid_alive(pid):
        return f"process {pid}; wait for it to finish, stop it, or choose another --out"
    return None


def check_writable(path) -> None:
    """Raise RunDirError unless a run directory can be created (or written) at `path`."""
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise RunDirError(f"run directory {str(p)!r} is not writable: it exists and is a file, not a directory; "
                          "choose another --out")
    anc = p
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        raise RunDirError(f"run directory {str(p)!r} is not writable: {str(anc)!r} is a file, not a directory; "
                          "choose another --out")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise RunDirError(f"run directory {str(p)!r} is not writable ({str(anc)!r} does not allow writing); "
                          "choose another --out")


def preflight(path, *, overwrite: bool = False, resume: bool = False) -> None:
    """Every run-directory check that needs no model: exists / locked / not writable. Raises RunDirError."""
    p = Path(path).expanduser()
    check_writable(p)
    if resume and not (p / "config.json").exists():
        raise RunDirError(f"cannot resume {str(p)!r}: no config.json there (not a run directory)")
    holder = lock_holder(p)
    if holder:
        raise RunDirLocked(f"run directory {str(p)!r} is being written by {holder}")
    if p.exists() and any(p.iterdir()) and not (overwrite or resume):
        raise RunDirError(f"run directory {str(p)!r} already exists; choose a new --out, pass "
                          "overwrite=True (--overwrite) to replace it, or resume it (--resume DIR, "
                          "Trainer.resume(dir))")


class RunDir:
    """A run directory opened for writing by exactly one writer (one process, one Trainer in it).

    The lock is held from opening until `close()` (a Trainer closes it when `run()` ends); any later write
    re-acquires it, so a finished run can be resumed or extended from the same process.
    """

    _lock = None
    _files = ()

    def __init__(self, path, config: dict | None = None, *, overwrite: bool = False, resume: bool = False):
        self.path = Path(path)
        exists = self.path.exists() and any(self.path.iterdir()) if self.path.exists() else False
        if exists and not (overwrite or resume):
            raise RunDirError(f"run directory {str(self.path)!r} already exists; choose a new --out, pass "
                              "overwrite=True (--overwrite) to replace it, or resume it with --resume")
        if resume and not (self.path / "config.json").exists():
            raise RunDirError(f"cannot resume {str(self.path)!r}: no config.json there (not a run directory)")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / f".write_probe{os.getpid()}"
            probe.write_text("ok")
            probe.unlink()
        except OSError as e:
            raise RunDirError(f"run directory {str(self.path)!r} is not writable ({e.strerror}); choose another "
                              "--out") from e
        self._acquire_lock()
        if exists and overwrite and not resume:
            for child in self.path.iterdir():
                if child.name == ".lock":
                    continue
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        (self.path / "checkpoints").mkdir(exist_ok=True)
        if config is not None and not resume:
            atomic_write_text(self.path / "config.json", json.dumps(config, indent=2, default=_json_default))
        self._open_files()
        if resume:
            self._truncate_torn_lines()
            for tmp in (self.path / "checkpoints").glob(".*_step_*"):   # left by a crash during a save
                shutil.rmtree(tmp, ignore_errors=True)

    def _open_files(self):
        for f in self._files:
            if not f.closed:
                f.close()
        self._metrics = open(self.path / "metrics.jsonl", "a")
        self._samples = open(self.path / "samples.jsonl", "a")
        self._events = open(self.path / "events.jsonl", "a")
        self._files = (self._metrics, self._samples, self._events)

    @property
    def is_open(self) -> bool:
        return self._lock is not None

    def reopen(self) -> None:
        """Re-acquire the lock and the files after `close()` (refused if someone else writes the directory)."""
        if self.is_open:
            return
        self._acquire_lock()
        self._open_files()

    # ---- locking -----------------------------------------------------------------------
    def _acquire_lock(self):
        lock = self.path / ".lock"
        other = _open_here(self.path)
        if other is not None and other is not self:
            raise RunDirLocked(f"run directory {str(self.path)!r} is already being written by another Trainer in "
                              "this process; let its run finish or call its close() first")
        for _ in range(2):
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                os.write(fd, str(os.getpid()).encode())
                os.close(fd)
                self._lock = lock
                _OPEN[_key(self.path)] = weakref.ref(self)
                return
            except FileExistsError:
                try:
                    pid = int(lock.read_text().strip() or 0)
                except (OSError, ValueError):
                    pid = 0
                if pid and pid != os.getpid() and _pid_alive(pid):
                    raise RunDirLocked(f"run directory {str(self.path)!r} is being written by process {pid}; "
                                      "wait for it to finish, stop it, or choose another --out")
                lock.unlink(missing_ok=True)    # stale lock from a dead process (or ourselves)
        raise RunDirError(f"could not lock {str(self.path)!r}")

    def close(self):
        """Close the files and release the lock (idempotent)."""
        for f in self._files:
            if not f.closed:
                f.close()
        if self._lock is not None:
            self._lock.unlink(missing_ok=True)
            self._lock = None
            ref = _OPEN.get(_key(self.path))
            if ref is not None and ref() in (self, None):
                _OPEN.pop(_key(self.path), None)

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    # ---- appending -----------------------------------------------------------------------
    @staticmethod
    def _append(f, obj):
        f.write(json.dumps(obj, default=_json_default) + "\n")
        f.flush()
        os.fsync(f.fileno())

    def log_step(self, record: dict) -> None:
        self.reopen()
        scalars = {k: _clean(v) for k, v in record.items() if k not in ("samples", "student_samples")}
        self._append(self._metrics, scalars)
        if record.get("samples"):
            line = {"step": record["step"], "samples": record["samples"]}
            if record.get("student_samples"):      # SFT runs: the student's own samples (student_samples.py)
                line["student_samples"] = record["student_samples"]
            self._append(self._samples, line)

    def log_event(self, kind: str, **info) -> None:
        self.reopen()
        self._append(self._events, {"event": kind, "time": time.time(), **{k: _clean(v) for k, v in info.items()}})

    def write_status(self, state: str, **info) -> None:
        self.reopen()
        atomic_write_text(self.path / "status.json",
                          json.dumps({"state": state, "time": time.time(), **info}, default=_json_default))

    def _truncate_torn_lines(self):
        """Before appending after a crash, drop an incomplete last line so the file stays valid JSONL."""
        for f in (self._metrics, self._samples, self._events):
            f.flush()
            p = Path(f.name)
            data = p.read_bytes()
            if data and not data.endswith(b"\n"):
                keep = data[: data.rfind(b"\n") + 1]
                with open(p, "r+b") as g:
                    g.truncate(len(keep))

    def truncate_after(self, step: int) -> None:
        """On resume from a checkpoint at `step`, drop logged steps after it (they will be re-run)."""
        self.reopen()
        for f in (self._metrics, self._samples):
            f.close()          # the file is replaced below: the old handle must not leak
            p = Path(f.name)
            rows = [r for r in read_jsonl(p) if r.get("step", 0) <= step]
            atomic_write_text(p, "".join(json.dumps(r, default=_json_default) + "\n" for r in rows))
        self._open_files()

    # ---- checkpoints ---------------------------------------------------------------------
    def checkpoint_dir(self, step: int) -> Path:
        return self.path / "checkpoints" / f"step_{step:06d}"

    def commit_checkpoint(self, tmp_dir: Path, step: int, keep_last: int = 2) -> Path:
        """Atomically publish a fully written checkpoint directory and point LATEST at it."""
        self.reopen()
        final = self.checkpoint_dir(step)
        old = None
        if final.exists():      # re-saving a step: move the old copy aside atomically, never delete it in place
            old = final.with_name(f".old_{final.name}")
            if old.exists():
                shutil.rmtree(old)
            os.replace(final, old)
        os.replace(tmp_dir, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        atomic_write_text(self.path / "checkpoints" / "LATEST", final.name)
        ckpts = sorted(p for p in (self.path / "checkpoints").glob("step_*") if p.is_dir())
        for old in ckpts[:-keep_last] if keep_last else []:
            shutil.rmtree(old, ignore_errors=True)
        return final


def latest_checkpoint(run_dir) -> Path | None:
    ck = Path(run_dir) / "checkpoints"
    latest = ck / "LATEST"
    if latest.exists():
        p = ck / latest.read_text().strip()
        if p.exists():
            return p
    cands = sorted(p for p in ck.glob("step_*") if p.is_dir()) if ck.exists() else []
    return cands[-1] if cands else None


def read_jsonl(path) -> list[dict]:
    """All complete lines of a JSONL file; a torn (unparseable) last line is ignored."""
    p = Path(path)
    if not p.exists():
        return []
    rows = []
    lines = p.read_text().splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break      # torn last line after a crash
            raise ValueError(f"{p}:{i + 1}: malformed JSON line in the middle of the file") from None
    return rows


def _require_run(path) -> Path:
    p = Path(path)
    if not (p / "metrics.jsonl").exists():
        raise FileNotFoundError(f"{str(p)!r} is not a run directory (no metrics.jsonl); pass the --out of a "
                                "training run")
    return p


def load_metrics(run_dir) -> pd.DataFrame:
    """One row per step of a run (columns: the record's scalar keys)."""
    p = _require_run(run_dir)
    df = pd.DataFrame(read_jsonl(p / "metrics.jsonl"))
    if "run" not in df.columns:
        df["run"] = p.name
    return df


def load_runs(paths) -> pd.DataFrame:
    """Metrics of one or many runs stacked into one DataFrame with a `run` column."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    frames = []
    for p in paths:
        df = load_metrics(p)
        df["run_dir"] = str(p)
        frames.append(df)
    if not frames:
        raise ValueError("load_runs: no run directories given")
    return pd.concat(frames, ignore_index=True)


def load_samples(run_dir) -> list[dict]:
    return read_jsonl(_require_run(run_dir) / "samples.jsonl")


def load_config(run_dir) -> dict:
    p = Path(run_dir) / "config.json"
    if not p.exists():
        raise FileNotFoundError(f"{str(run_dir)!r} has no config.json; not a run directory")
    return json.loads(p.read_text())


def load_status(run_dir) -> dict | None:
    p = Path(run_dir) / "status.json"
    return json.loads(p.read_text()) if p.exists() else None
