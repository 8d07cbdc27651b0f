"""What notebook 10 (real checkpoints on one GPU) does, kept out of its cells.

    C = choose_checkpoints(student, teacher, size=size, device=device, stand_in_dir=out / "stand_ins")
    C.real          # True: the named pair on a GPU; False: tiny stand-in checkpoints (said why in C.note)
    with PeakMemory(C.device) as pm: trainer.run(...)
    pm.peak         # torch.cuda.max_memory_allocated during the block (None off CUDA)

Stand-ins are used when no GPU is visible or at size "smoke" (the tests): two random-weight
Qwen2-architecture checkpoints with a tokenizer trained here (`hf.make_tiny_pair`), loaded by
path through exactly the code a real pair takes. They learn nothing; they show the mechanics.
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import torch

from . import hf, memcheck, memory
from .models import pick_device


def choose_checkpoints(student: str, teacher: str, *, size: str, device: str = "auto",
                       stand_in_dir: str | Path = "stand_ins", echo=print) -> SimpleNamespace:
    """The pair to run: the named one on a GPU at size "full", else tiny stand-ins (and why)."""
    dev = pick_device(device)
    if dev.type == "cuda" and size == "full":
        note = (f"GPU visible ({torch.cuda.get_device_name(dev)}): running the named pair "
                f"{teacher} -> {student}")
        real, t, s = True, str(teacher), str(student)
    else:
        why = ("no GPU is visible" if dev.type != "cuda" else f"size={size!r} (a smoke run)")
        t_dir, s_dir = hf.make_tiny_pair(stand_in_dir)
        note = (f"{why}: running on tiny stand-in checkpoints (random weights, Qwen2 architecture, a tokenizer "
                f"trained here) at {Path(stand_in_dir)}, loaded by path through the same code. The named pair "
                f"({teacher} -> {student}) is used on a GPU at size='full'.")
        real, t, s = False, str(t_dir), str(s_dir)
    if echo is not None:
        echo(note)
    return SimpleNamespace(student=s, teacher=t, real=real, device=dev, note=note,
                           named_student=str(student), named_teacher=str(teacher))


def real_pair_plan(*, batch_size: int, prompt_len: int, max_new_tokens: int, budget_gib: float = 80.0,
                   lora_r: int = 16, method: str = "opd", num_generations: int = 1) -> memory.Plan:
    """The plan for Qwen2.5-0.5B-Instruct <- 1.5B-Instruct shapes in bf16 on a `budget_gib` GPU (no download)."""
    tok = hf.make_tiny_tokenizer(512)
    s_cfg = memcheck.shaped_config(tok, memcheck.QWEN25_05B["shape"], memcheck.QWEN25_05B["vocab"], True)
    t_cfg = memcheck.shaped_config(tok, memcheck.QWEN25_15B["shape"], memcheck.QWEN25_15B["vocab"], True)
    return memory.plan(s_cfg, t_cfg, batch_size=batch_size, prompt_len=prompt_len, max_new_tokens=max_new_tokens,
                       dtype="bf16", lora_r=lora_r, gradient_checkpointing=True, method=method,
                       num_generations=num_generations, budget_bytes=int(budget_gib * 2**30), device="cuda")


class PeakMemory:
    """torch.cuda.max_memory_allocated over a block on CUDA; `peak` is None elsewhere."""

    def __init__(self, device):
        self.device = torch.device(device)
        self.peak = None

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = int(torch.cuda.max_memory_allocated(self.device))
        return False


def run_one(pair, task, method: str, *, adapter: str, callbacks=(), plan: memory.Plan | None = None,
            **overrides) -> tuple[object, dict]:
    """Train a fresh LoRA adapter `adapter` of the pair's student with `method`; returns (trainer, row).

    The row: final held-out accuracy, cost, time, and the measured peak memory (CUDA) next to the plan's.
    """
    hf.use_new_adapter(pair.student, adapter)
    trainer = hf.trainer_for(pair, task, method, name=overrides.pop("name", adapter), **overrides)
    with PeakMemory(pair.device) as pm:
        summary = trainer.run(callbacks=callbacks)
    row = {"run": trainer.cfg.name, "method": method, "steps": summary["step"],
           "eval_accuracy": summary.get("final_eval_accuracy"), "student_tokens": summary["student_tokens"],
           "teacher_tokens": summary["teacher_tokens"], "wall_s": round(summary["wall_s"], 1),
           "peak_measured_mib": None if pm.peak is None else round(pm.peak / 2**20),
           "peak_planned_mib": None if plan is None else round(plan.peak / 2**20, 1)}
    if pm.peak is not None and plan is not None:
        row["plan_error"] = round(memory.relative_error(plan.peak, pm.peak), 3)
    return trainer, row
