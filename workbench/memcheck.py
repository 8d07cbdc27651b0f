"""Check the memory planner against a real training step (tests, `scripts/gpu_real_models.py`).

    res = measure_step(pair, task, "opd", batch_size=8, max_new_tokens=32, mode="tracker")
    res["estimate_peak"], res["measured_peak"], res["rel_error"]

Modes of measurement (what "measured" means, per mode):
  tracker  live tensor storage under `memory.LiveTensorTracker` (any device; in-process);
  rss      resident set of this process: VmHWM after resetting it (Linux), minus VmRSS before;
           run it in a fresh process (`rss_check`) with glibc's mmap threshold pinned, so freed
           tensors go back to the OS and the peak reflects live memory, not the heap's history;
  cuda     torch.cuda.max_memory_allocated after reset_peak_memory_stats.

Every mode measures one step after a warm-up step (so AdamW's moments exist, as in a long run),
and compares the *dynamic* part too: the peak above what stays allocated between steps.

    python -m workbench.memcheck '{"student": [256, 4, 8, 2, 704], "teacher": [384, 4, 6, 2, 1024], ...}'
prints one JSON line (used by `rss_check`).
"""
from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers.utils import logging as hf_logging

from . import hf, memory
from .tasks.gsm8k import GSM8K

# role -> (hidden, layers, heads, kv_heads, intermediate), vocab, tied: real shapes for random-weight checks
QWEN25_05B = dict(shape=(896, 24, 14, 2, 4864), vocab=151936, tied=True)
QWEN25_15B = dict(shape=(1536, 28, 12, 2, 8960), vocab=151936, tied=True)


def shaped_config(tokenizer, shape, vocab: int, tied: bool, arch: str = "qwen2", max_positions: int = 32768):
    cfg = hf.tiny_config(tokenizer, "student", arch, tuple(shape), vocab_size=vocab, max_positions=max_positions)
    cfg.tie_word_embeddings = bool(tied)
    return cfg


def build_dirs(directory, student_shape, teacher_shape, *, vocab: int | None = None, arch: str = "qwen2",
               tokenizer=None) -> tuple[Path, Path]:
    """Save a random-weight (teacher, student) pair of the given shapes; returns their directories."""
    d = Path(directory)
    hf_logging.disable_progress_bar()
    tok = tokenizer or hf.make_tiny_tokenizer(512)
    name = lambda sh: "x".join(map(str, sh)) + f"-v{vocab or len(tok)}-{arch}"      # noqa: E731
    t_dir, s_dir = d / f"teacher-{name(teacher_shape)}", d / f"student-{name(student_shape)}"
    for role, path, shape, seed in (("teacher", t_dir, teacher_shape, 1), ("student", s_dir, student_shape, 0)):
        if (path / "config.json").exists():
            continue
        cfg = hf.tiny_config(tok, role, arch, tuple(shape), vocab_size=vocab)
        model = hf.make_tiny_model(cfg, seed=seed)
        path.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(path, safe_serialization=True)
        tok.save_pretrained(path)
    return t_dir, s_dir


def max_prompt_len(task, tokenizer) -> int:
    return max(len(task.encode_prompt(tokenizer, p.prompt)) for p in task.train)


def _cfg_of(model):
    return model.config if model is not None else None


def measure_step(pair, task, method: str = "opd", *, batch_size: int, max_new_tokens: int, mode: str = "tracker",
                 warmup: int = 1, num_generations: int | None = None, lr: float = 1e-4,
                 chunked_logits: bool = True, **overrides) -> dict:
    """Run `warmup` steps, then measure one step; return measurement, estimate and timing (bytes, seconds).

    `chunked_logits=False` measures the trainer's full-copy logits path (before issue 22), the baseline."""
    if mode not in ("tracker", "rss", "cuda"):
        raise ValueError(f"mode must be tracker, rss or cuda, got {mode!r}")
    kw = dict(overrides)
    if num_generations:
        kw["num_generations"] = num_generations
    task.max_new_tokens = max_new_tokens
    trainer = hf.trainer_for(pair, task, method, steps=warmup + 1, batch_size=batch_size, eval_every=0,
                             max_new_tokens=max_new_tokens, lr=lr, **kw)
    trainer.chunked_logits = chunked_logits
    t_w = time.time()
    for _ in range(warmup):
        trainer.step()
    warm_s = time.time() - t_w
    gc.collect()
    out: dict = {"mode": mode, "method": method, "batch_size": batch_size, "max_new_tokens": max_new_tokens,
                 "chunked_logits": chunked_logits, "warmup_s": round(warm_s, 3)}
    if mode == "tracker":
        tr = memory.LiveTensorTracker()
        with tr:
            tr.add_existing(memory.model_tensors(trainer.student, pair.teacher, optimizer=trainer.opt))
            before = tr.current
            tr.reset_peak()
            t0 = time.time()
            rec = trainer.step()
            step_s = time.time() - t0
        peak = tr.peak
    elif mode == "rss":
        before = memory.rss_now_and_peak()[0]
        if not memory.rss_peak_reset():
            raise RuntimeError("cannot reset the peak RSS here (/proc/self/clear_refs); use mode='tracker'")
        t0 = time.time()
        rec = trainer.step()
        step_s = time.time() - t0
        peak = memory.rss_now_and_peak()[1]
    else:
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        t0 = time.time()
        rec = trainer.step()
        torch.cuda.synchronize()
        step_s = time.time() - t0
        peak = torch.cuda.max_memory_allocated()
    P = max_prompt_len(task, pair.tokenizer)
    dtype = str(pair.dtype).replace("torch.", "")
    lora_r = pair.lora.r if pair.lora is not None else None
    targets = pair.lora.target_modules if pair.lora is not None else "all-linear"
    est = memory.estimate(_cfg_of(pair.student), _cfg_of(pair.teacher), batch_size=batch_size, prompt_len=P,
                          max_new_tokens=max_new_tokens, dtype=dtype, lora_r=lora_r, lora_targets=targets,
                          gradient_checkpointing=pair.info.get("gradient_checkpointing", False),
                          uses_teacher=trainer.teacher is not None,
                          ref_logits=trainer.ref is not None, teacher_samples=trainer.cfg.source == "teacher",
                          teacher_loaded=pair.teacher is not None, chunked=chunked_logits,
                          loss=trainer.cfg.loss, kl_anchor=trainer.cfg.kl_coef > 0,
                          sft_batch=batch_size // trainer.cfg.num_generations if trainer.cfg.sft_coef > 0 else 0)
    gen_tokens = int(rec["rollout/mean_length"] * batch_size)
    out.update({
        "measured_before": int(before), "measured_peak": int(peak), "measured_dynamic": int(peak - before),
        "estimate_peak": est["peak"], "estimate_resident": est["resident"],
        "estimate_dynamic": est["peak"] - est["resident"], "estimate_phases": est["phases"],
        "rel_error": memory.relative_error(est["peak"], peak) if mode != "rss" else None,
        "rel_error_dynamic": memory.relative_error(est["peak"] - est["resident"], peak - before),
        "prompt_len_planned": P, "prompt_len_step": int(rec.get("rollout/prompt_len", 0)) or None,
        "mean_completion": rec["rollout/mean_length"], "step_s": round(step_s, 3),
        "time_generate_s": round(rec["time/generate_s"], 3), "time_teacher_s": round(rec["time/teacher_s"], 3),
        "time_update_s": round(rec["time/update_s"], 3),
        "generated_tokens_per_s": round(gen_tokens / max(rec["time/generate_s"], 1e-9), 1),
        "step_tokens_per_s": round(gen_tokens / max(step_s, 1e-9), 1), "loss": rec["loss"],
    })
    return out


def _probe(spec: dict) -> dict:
    """One measurement described by a JSON-able spec (used in a fresh process by rss_check)."""
    torch.set_num_threads(int(spec.get("threads", 1)))
    hf_logging.set_verbosity_error()
    d = spec.get("dir") or tempfile.mkdtemp(prefix="memcheck-")
    t_dir, s_dir = build_dirs(d, spec["student"], spec["teacher"], vocab=spec.get("vocab"),
                              arch=spec.get("arch", "qwen2"))
    gc_on = bool(spec.get("gradient_checkpointing", False))
    lora = hf.LoraSpec(r=spec["lora_r"]) if spec.get("lora_r") else None
    pair = hf.load_pair(t_dir, s_dir, lora=lora, gradient_checkpointing=gc_on, device=spec.get("device", "cpu"),
                        dtype=spec.get("dtype", "auto"), load_teacher=spec.get("method", "opd") != "grpo")
    task = GSM8K(max_new_tokens=spec["max_new_tokens"])
    return measure_step(pair, task, spec.get("method", "opd"), batch_size=spec["batch_size"],
                        max_new_tokens=spec["max_new_tokens"], mode=spec.get("mode", "tracker"),
                        num_generations=spec.get("num_generations"), chunked_logits=spec.get("chunked_logits", True),
                        **spec.get("overrides", {}))


def rss_check(spec: dict, timeout: float = 300) -> dict:
    """`_probe(spec | mode=rss)` in a fresh Python process with glibc's mmap threshold pinned at 64 KiB."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0",
               TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS=str(spec.get("threads", 1)))
    root = Path(__file__).resolve().parents[1]
    env["PYTHONPATH"] = str(root) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-m", "workbench.memcheck", json.dumps({**spec, "mode": "rss"})],
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=str(root))
    if proc.returncode != 0:
        raise RuntimeError(f"memcheck subprocess failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(__doc__)
        return 2
    out = _probe(json.loads(argv[0]))
    out["process_peak_rss"] = memory.rss_now_and_peak()[1]      # the whole process's high-water mark (VmHWM)
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
