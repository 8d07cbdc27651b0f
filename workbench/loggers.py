"""Watchers that send the per-step record to the tools people already use: TensorBoard and Weights & Biases.

    trainer.run(callbacks=[TensorBoardWatcher("runs/opd/tensorboard")])
    python -m workbench train --method opd --out runs/opd --log-to tensorboard,wandb

Like the dashboard, a watcher only reads records (docs/records.md): every numeric key becomes a
scalar under its own name (`loss`, `rollout/mean_length`, `teacher/reverse_kl`, ... so TensorBoard
groups them by prefix), `warning` becomes text, and the token-level samples become a table of
tokens with their per-token teacher reward (TensorBoard: markdown text; W&B: a `wandb.Table`).
W&B runs offline unless told otherwise (`wandb sync DIR` uploads later). The packages are optional
(`pip install -e '.[export]'`); asking for one that is missing fails before training starts.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from .config import ConfigError

LOGGERS = ("tensorboard", "wandb")


def scalars(record: dict) -> dict:
    """The record's numeric entries (bools as 0/1), without `step` (the x axis) and the token samples."""
    out = {}
    for k, v in record.items():
        if k in ("step", "samples") or v is None or isinstance(v, str):
            continue
        if isinstance(v, bool):
            v = float(v)
        if isinstance(v, (int, float)):
            out[k] = float(v)
    return out


def samples_markdown(samples: list[dict]) -> str:
    """Token-level samples as markdown: one row per completion token with its teacher reward."""
    parts = []
    for i, s in enumerate(samples):
        rewards = s.get("token_reward") or [None] * len(s["tokens"])
        head = (f"**sample {i}** correct={s.get('correct')} reward={s.get('reward')} truncated={s.get('truncated')}  \n"
                f"prompt: `{s['prompt']!r}`\n\n| # | token | log q - log p |\n|---|---|---|\n")
        rows = "".join(f"| {t} | `{tok!r}` | {'' if r is None else f'{r:+.3f}'} |\n"
                       for t, (tok, r) in enumerate(zip(s["tokens"], rewards)))
        parts.append(head + rows)
    return "\n".join(parts)


class TensorBoardWatcher:
    """Callback: each record -> TensorBoard scalars (its metric names as tags) + samples/warnings as text."""

    def __init__(self, log_dir, flush_every: int = 1):
        try:
            from torch.utils.tensorboard import SummaryWriter   # optional-import: the export extra (tensorboard)
        except ImportError as e:
            raise ConfigError(f"--log-to tensorboard needs the tensorboard package ({e}); "
                              "pip install tensorboard (or pip install -e '.[export]')") from None
        self._make = SummaryWriter
        self.log_dir = Path(log_dir)
        self.writer = None        # opened at the first event: the run directory may not exist before the trainer
        self.flush_every = max(1, int(flush_every))

    def _open(self):
        if self.writer is None:
            self.writer = self._make(log_dir=str(self.log_dir))
        return self.writer

    def on_start(self, info: dict):
        self._open().add_text("config", "```\n" + json.dumps(info.get("config", info), indent=1, default=str)
                             + "\n```", global_step=info.get("start_step", 0))

    def on_step(self, record: dict):
        self._open()
        step = int(record["step"])
        for k, v in scalars(record).items():
            self.writer.add_scalar(k, v, global_step=step)
        if record.get("warning"):
            self.writer.add_text("warning", str(record["warning"]), global_step=step)
        if record.get("samples"):
            self.writer.add_text("samples", samples_markdown(record["samples"]), global_step=step)
        if step % self.flush_every == 0:
            self.writer.flush()       # a crashed run keeps what it logged, as metrics.jsonl does

    def on_end(self, summary: dict):
        self._open().add_text("end", json.dumps(summary, default=str), global_step=int(summary.get("step", 0)))
        self.writer.close()


class WandbWatcher:
    """Callback: each record -> `wandb.log` (scalars by metric name, samples as a `wandb.Table`); offline by default."""

    COLUMNS = ["sample", "prompt", "position", "token", "token_reward", "student_logprob", "correct"]

    def __init__(self, project: str = "opd-workbench", name: str | None = None, dir=None, mode: str = "offline"):
        try:
            import wandb   # optional-import: the export extra (wandb)
        except ImportError as e:
            raise ConfigError(f"--log-to wandb needs the wandb package ({e}); pip install wandb") from None
        self.wandb, self.project, self.name, self.mode = wandb, project, name, mode
        self.dir = str(dir) if dir is not None else None
        self.run = None

    def on_start(self, info: dict):
        if self.dir:
            Path(self.dir).mkdir(parents=True, exist_ok=True)
        self.run = self.wandb.init(project=self.project, name=self.name or info.get("run"), dir=self.dir,
                                   mode=self.mode, config=info.get("config"),
                                   settings=self.wandb.Settings(silent=True, console="off"))

    def _table(self, samples):
        rows = []
        for i, s in enumerate(samples):
            rewards = s.get("token_reward") or [None] * len(s["tokens"])
            lps = s.get("student_logprob") or [None] * len(s["tokens"])
            rows += [[i, s["prompt"], t, tok, r, lp, bool(s.get("correct"))]
                     for t, (tok, r, lp) in enumerate(zip(s["tokens"], rewards, lps))]
        return self.wandb.Table(columns=self.COLUMNS, data=rows)

    def on_step(self, record: dict):
        if self.run is None:
            self.on_start({"run": record.get("run"), "config": None})
        data = {k: v for k, v in scalars(record).items() if math.isfinite(v)}
        if record.get("samples"):
            data["samples"] = self._table(record["samples"])
        self.run.log(data, step=int(record["step"]), commit=True)     # committed now, not at the next step

    def on_end(self, summary: dict):
        if self.run is not None:
            self.run.summary["end_reason"] = summary.get("reason")
            self.run.finish()


def watchers_for(spec: str | None, out: str | None, name: str, project: str = "opd-workbench") -> list:
    """`--log-to tensorboard,wandb` -> watchers, built (and their packages checked) before training starts.

    TensorBoard logs go to OUT/tensorboard (or runs/tensorboard/NAME without --out); W&B's offline run
    to OUT (or runs/wandb)."""
    if not spec:
        return []
    names = [s.strip() for s in spec.split(",") if s.strip()]
    bad = [n for n in names if n not in LOGGERS]
    if bad:
        raise ConfigError(f"--log-to: unknown logger(s) {bad}; choose from {list(LOGGERS)} (comma-separated)")
    base = Path(out) if out else None
    watchers = []
    for n in dict.fromkeys(names):
        if n == "tensorboard":
            watchers.append(TensorBoardWatcher(base / "tensorboard" if base else Path("runs/tensorboard") / name))
        else:
            watchers.append(WandbWatcher(project=project, name=name, dir=base or Path("runs/wandb")))
    return watchers
