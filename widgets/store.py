"""Bounded storage of per-step records, one `RunSeries` per run label.

The dashboard may watch a run of a million steps, so nothing here grows with
the number of steps:

- every scalar series keeps at most `max_points` points. When it would exceed
  that, every other stored point is dropped and from then on only every
  `stride`-th new value is kept (stride doubles each time). This is plain
  decimation: x stays the true step, and a short spike between two kept
  points can vanish from the plot. The most recent value is always kept in
  addition, so a curve ends at the current step;
- only the last `max_sample_batches` sample batches (`record["samples"]`)
  of each run are kept.

The store knows nothing about plotting; `widgets.figures` reads it.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Iterable

# Keys that describe the record rather than measure something.
_NON_SERIES_KEYS = {"step", "run", "method", "total_steps", "max_new_tokens", "samples", "student_samples",
                    "warning"}
_SAMPLE_FIELDS = ("prompt", "tokens", "token_reward", "student_logprob", "correct", "reward", "truncated")


class Series:
    """One scalar curve, decimated to at most `max_points` stored points (+ the latest)."""

    __slots__ = ("max_points", "stride", "seen", "xs", "ys", "last")

    def __init__(self, max_points: int = 2000):
        if max_points < 2:
            raise ValueError("max_points must be >= 2")
        self.max_points = max_points
        self.stride = 1          # keep every stride-th value
        self.seen = 0            # values offered so far
        self.xs: list[int] = []
        self.ys: list[float] = []
        self.last: tuple[int, float] | None = None

    def append(self, x: int, y: float) -> None:
        if self.seen % self.stride == 0:
            self.xs.append(x)
            self.ys.append(y)
            if len(self.xs) > self.max_points:
                # The kept values have indices 0, s, 2s, ...; keep 0, 2s, 4s, ...
                del self.xs[1::2]
                del self.ys[1::2]
                self.stride *= 2
        self.seen += 1
        self.last = (x, y)

    def points(self) -> tuple[list[int], list[float]]:
        """(xs, ys) to plot: the kept points, ending with the latest value."""
        xs, ys = list(self.xs), list(self.ys)
        if self.last is not None and (not xs or xs[-1] != self.last[0]):
            xs.append(self.last[0])
            ys.append(self.last[1])
        return xs, ys

    def __len__(self) -> int:
        return len(self.xs) + (1 if self.last is not None and (not self.xs or self.xs[-1] != self.last[0]) else 0)


@dataclass
class RunSeries:
    """Everything kept about one run (one `record["run"]` label)."""

    run: str
    method: str | None = None
    total_steps: int | None = None
    max_new_tokens: int | None = None
    start_step: int = 0
    config: dict = field(default_factory=dict)
    series: dict[str, Series] = field(default_factory=dict)
    samples: deque = field(default_factory=deque)   # of (step, [sample, ...])
    student_samples: deque = field(default_factory=deque)   # record["student_samples"] (SFT runs)
    last_step: int | None = None
    last_seq: int = -1                  # store-wide order of this run's latest step
    last_scalars: dict[str, Any] = field(default_factory=dict)
    steps_seen: int = 0
    started_at: float | None = None     # wall-clock (time.monotonic) at on_start / first step
    last_at: float | None = None        # wall-clock at the latest step
    end: dict | None = None             # on_end summary once the run ended
    warnings: deque = field(default_factory=lambda: deque(maxlen=20))   # (step, message): record["warning"]

    def xy(self, key: str) -> tuple[list[int], list[float]]:
        s = self.series.get(key)
        return s.points() if s is not None else ([], [])


def _as_float(v: Any) -> float | None:
    """A finite-or-nan float for numbers (bools and strings are not series)."""
    if isinstance(v, bool) or v is None:
        return None
    try:
        f = float(v)  # also accepts numpy scalars and 0-d tensors
    except (TypeError, ValueError):
        return None
    return f


def _clean_sample(s: dict) -> dict:
    out = {k: s.get(k) for k in _SAMPLE_FIELDS}
    for k in ("tokens", "token_reward", "student_logprob"):
        if out[k] is not None:
            out[k] = list(out[k])
    return out


class RecordStore:
    """Bounded store of per-step records (see docs/records.md), keyed by run label."""

    def __init__(self, max_points: int = 2000, max_sample_batches: int = 50):
        self.max_points = max_points
        self.max_sample_batches = max_sample_batches
        self.runs: dict[str, RunSeries] = {}   # insertion order = colour order
        self._seq = 0

    # --- feeding ---------------------------------------------------------
    def _run(self, name: str) -> RunSeries:
        r = self.runs.get(name)
        if r is None:
            r = RunSeries(run=name, samples=deque(maxlen=self.max_sample_batches),
                          student_samples=deque(maxlen=self.max_sample_batches))
            self.runs[name] = r
        return r

    def start(self, info: dict, now: float | None = None) -> RunSeries:
        """Register a run from the trainer's on_start info."""
        r = self._run(str(info.get("run", "run")))
        r.method = info.get("method", r.method)
        r.total_steps = info.get("total_steps", r.total_steps)
        r.max_new_tokens = info.get("max_new_tokens", r.max_new_tokens)
        r.start_step = int(info.get("start_step", 0) or 0)
        r.config = dict(info.get("config") or {})
        r.started_at = now
        r.end = None
        return r

    def add(self, record: dict, now: float | None = None) -> RunSeries:
        """Add one per-step record. Non-numeric values other than samples are ignored."""
        r = self._run(str(record.get("run", "run")))
        step = int(record["step"])
        for k in ("method", "total_steps", "max_new_tokens"):
            if record.get(k) is not None:
                setattr(r, k, record[k])
        for k, v in record.items():
            if k in _NON_SERIES_KEYS:
                continue
            f = _as_float(v)
            if f is None or math.isnan(f):
                continue
            s = r.series.get(k)
            if s is None:
                s = r.series[k] = Series(self.max_points)
            s.append(step, f)
            r.last_scalars[k] = f
        if record.get("warning"):
            r.warnings.append((step, str(record["warning"])))
        samples = record.get("samples")
        if samples:
            r.samples.append((step, [_clean_sample(s) for s in samples]))
        if record.get("student_samples"):
            r.student_samples.append((step, [_clean_sample(s) for s in record["student_samples"]]))
        r.last_step = step
        r.last_seq = self._seq
        self._seq += 1
        r.steps_seen += 1
        if r.started_at is None:
            r.started_at = now
        r.last_at = now
        return r

    def finish(self, summary: dict) -> RunSeries:
        r = self._run(str(summary.get("run", "run")))
        r.end = dict(summary)
        return r

    def extend(self, records: Iterable[dict]) -> None:
        for rec in records:
            self.add(rec)

    # --- reading ---------------------------------------------------------
    def run_names(self) -> list[str]:
        return list(self.runs)

    def latest_run(self) -> str | None:
        """The run that received a step most recently (the last registered one if none has)."""
        if not self.runs:
            return None
        return max(reversed(list(self.runs)), key=lambda n: self.runs[n].last_seq)

    def sample_batches(self, run: str, student: bool = False) -> list[tuple[int, list[dict]]]:
        """Kept sample batches of `run`: the training rollouts, or (student=True) the student's own
        samples that source="teacher" runs record every few steps."""
        r = self.runs.get(run)
        if not r:
            return []
        return list(r.student_samples if student else r.samples)

    def teacher_data(self, run: str) -> bool:
        """Whether `run` trains on someone else's text (source="teacher": SFT, filtered SFT)."""
        r = self.runs.get(run)
        return bool(r) and (r.config or {}).get("source") == "teacher"

    def total_points(self) -> int:
        """Stored points over all runs and series (for memory checks)."""
        return sum(len(s.xs) + 1 for r in self.runs.values() for s in r.series.values())
