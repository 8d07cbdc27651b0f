"""One GPU, one run: this project's OPD step against TRL's `DistillationTrainer` step (issue 22, item 3).

    python -m benchmarks.trl_side_by_side                  # CUDA: Qwen2.5-0.5B/1.5B-shaped random pair, bf16
    python -m benchmarks.trl_side_by_side --tiny           # CPU-sized models, the same code path (tests)
    flags: --batch-size 16 --max-new-tokens 256 --out DIR ($OUT or .) --largest-budget-s 120 (0: skip) --vllm

Expected cost on one H100 (not yet measured): model building and the four measured steps well under two
minutes, plus up to --largest-budget-s per side for the largest-batch search (the search only starts a
batch while time is left, and one step at the last batch may run past it): about 5-7 minutes in all, so
give the command a 9-minute timeout. Run from the repository root on the GPU machine:

    OUT=... timeout 540 python -m benchmarks.trl_side_by_side

Prepared, not yet run on a GPU (docs/benchmarks.md says so). Nothing is downloaded: the pair is built as in
scripts/gpu_real_models.py (Qwen2.5-0.5B- and 1.5B-shaped configs, vocabulary 151,936, random weights, a
byte-level BPE tokenizer trained here and padded), GSM8K-format prompts, LoRA r = 16 (alpha 32; r = 8 with --tiny) on every
projection of the student, gradient checkpointing, bf16. Random weights rarely emit EOS, so completions run
to max_new_tokens on both sides.

Measured, one JSON line each in DIR/trl_side_by_side.jsonl, in this order so that one side's models are
freed before the other is measured (the frozen teacher is shared and counted in both):
  ours  `opd` (sampled-token reverse KL) and `opd_full` (full-vocabulary reverse KL: what TRL computes at
        beta = 1), each via `memcheck.measure_step(mode="cuda")`: one warm-up step, then one step timed with
        torch.cuda.max_memory_allocated reset before it; the planner's estimate for the same shapes.
  trl   `DistillationTrainer(beta=1.0)`: on-policy, HF `generate` (vLLM with --vllm if it is installed),
        the same LoRA and batch; a callback times each optimizer step and reads max_memory_allocated (reset
        at the step's start); the step after the warm-up is reported.
  largest batch  for ours (opd) and for TRL: the batch doubled from --batch-size until the device runs out
        of memory or --largest-budget-s seconds pass (the last batch that completed a step); with it the
        planner's largest batch for the chunked and the full-copy logits path on this device.
The summary line: ours / TRL step time and tokens/s, peak memory, largest batch.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import gpu_real_models as G  # noqa: E402

from workbench import hf, memcheck, memory  # noqa: E402
from workbench.tasks.gsm8k import GSM8K  # noqa: E402

OURS_METHODS = ("opd", "opd_full")


def _oom(e: BaseException) -> bool:
    return isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower()


def _free(device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def build_ours(setup, tok, teacher, device):
    """The student with LoRA and checkpointing, wrapped as a `hf.Pair` with the shared teacher."""
    s_model = G.build(setup["student"], tok, setup["dtype"], device, 0)
    hf.enable_gradient_checkpointing(s_model)
    spec = hf.LoraSpec(r=setup["lora_r"], alpha=2 * setup["lora_r"])
    student = hf.add_lora(s_model, spec)
    from workbench.compat import check_pair
    report = check_pair(tok, tok, teacher.config, s_model.config, teacher_name="qwen2.5-1.5b-shape",
                        student_name="qwen2.5-0.5b-shape")
    report.raise_if_errors()
    return hf.Pair(teacher=teacher, student=student, tokenizer=tok, teacher_tokenizer=tok, report=report,
                   teacher_name="random-qwen2.5-1.5b-shape", student_name="random-qwen2.5-0.5b-shape",
                   device=device, dtype=setup["dtype"], lora=spec, info={"gradient_checkpointing": True})


def ours_step(setup, tok, teacher, device, method: str, B: int, N: int) -> dict:
    pair = build_ours(setup, tok, teacher, device)
    try:
        mode = "cuda" if device.type == "cuda" else "tracker"
        res = memcheck.measure_step(pair, GSM8K(), method, batch_size=B, max_new_tokens=N, mode=mode, warmup=1)
    finally:
        del pair
        _free(device)
    step_tokens = res["mean_completion"] * B
    return {"side": "ours", "method": method, "batch_size": B, "max_new_tokens": N, "step_s": res["step_s"],
            "generate_s": res["time_generate_s"], "teacher_s": res["time_teacher_s"],
            "update_s": res["time_update_s"], "generated_tokens_per_s": res["generated_tokens_per_s"],
            "step_tokens_per_s": round(step_tokens / res["step_s"], 1), "peak_bytes": res["measured_peak"],
            "estimate_peak": res["estimate_peak"], "estimate_vs_measured": res["estimate_peak"] / res["measured_peak"],
            "mean_completion": res["mean_completion"], "prompt_len": res["prompt_len_planned"],
            "memory_mode": mode}


class _StepMeter:
    """TrainerCallback (duck-typed: transformers calls the hooks that exist): wall time and peak memory of
    each optimizer step."""

    def __init__(self, device):
        self.device, self.steps = device, []

    def on_step_begin(self, args, state, control, **kw):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        self.t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() if self.device.type == "cuda" else None
        self.steps.append({"step_s": time.perf_counter() - self.t0, "peak_bytes": peak})

    def __getattr__(self, name):          # every other TrainerCallback hook: nothing to do
        if name.startswith("on_"):
            return lambda *a, **k: None
        raise AttributeError(name)


def trl_step(setup, tok, teacher, device, B: int, N: int, vllm: bool = False) -> dict:
    from datasets import Dataset
    from peft import LoraConfig
    from trl import DistillationConfig, DistillationTrainer
    r = setup["lora_r"]
    s_model = G.build(setup["student"], tok, setup["dtype"], device, 0)
    task = GSM8K()
    prompts = [[{"role": "user", "content": p.prompt}] for p in (task.train * (1 + 2 * B // len(task.train)))[:2 * B]]
    meter = _StepMeter(device)
    with tempfile.TemporaryDirectory(prefix="trl-side-by-side-") as out:
        args = DistillationConfig(
            output_dir=out, per_device_train_batch_size=B, max_completion_length=N, beta=1.0, max_steps=2,
            learning_rate=1e-4, logging_steps=1, report_to=[], save_strategy="no", use_vllm=vllm,
            use_cpu=device.type != "cuda", bf16=setup["dtype"] == torch.bfloat16, gradient_checkpointing=True,
            temperature=1.0, top_p=1.0, top_k=0, disable_dropout=True)
        trainer = DistillationTrainer(
            model=s_model, teacher_model=teacher, args=args, train_dataset=Dataset.from_dict({"prompt": prompts}),
            processing_class=tok, peft_config=LoraConfig(r=r, lora_alpha=2 * r, target_modules="all-linear",
                                                         task_type="CAUSAL_LM"), callbacks=[meter])
        try:
            trainer.train()
            logs = [h for h in trainer.state.log_history if "loss" in h]
        finally:
            del trainer, s_model
            _free(device)
    last, step = logs[-1], meter.steps[-1]          # the step after the warm-up
    gen_tokens = last["completions/mean_length"] * B
    return {"side": "trl", "method": "DistillationTrainer(beta=1.0)", "batch_size": B, "max_new_tokens": N,
            "generation": "vllm" if vllm else "hf generate", "step_s": round(step["step_s"], 3),
            "step_tokens_per_s": round(gen_tokens / step["step_s"], 1), "peak_bytes": step["peak_bytes"],
            "mean_completion": last["completions/mean_length"], "loss": last["loss"]}


def largest(fn, start: int, budget_s: float, cap: int) -> dict:
    """Double the batch from `start` while a step completes, until out of memory, `cap`, or `budget_s`."""
    t0, ok, tried, stopped = time.time(), 0, [], "cap"
    B = start
    while B <= cap:
        if time.time() - t0 > budget_s:
            stopped = "time budget"
            break
        try:
            fn(B)
            ok = B
            tried.append([B, "ok"])
        except Exception as e:          # noqa: BLE001 - out of memory ends the search, anything else is raised
            if not _oom(e):
                raise
            tried.append([B, "out of memory"])
            stopped = "out of memory"
            break
        B *= 2
    return {"largest_batch": ok, "tried": tried, "stopped_by": stopped, "search_s": round(time.time() - t0, 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiny", action="store_true", help="CPU-sized models (the test path)")
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--max-new-tokens", type=int, default=None)
    ap.add_argument("--largest-budget-s", type=float, default=120.0, help="per side; 0 skips the search")
    ap.add_argument("--budget-gib", type=float, default=None,
                    help="device memory for the planner's largest batch (default: the CUDA device's; none on CPU)")
    ap.add_argument("--vllm", action="store_true", help="TRL generates with vLLM (colocated), if installed")
    a = ap.parse_args(argv)
    cuda = torch.cuda.is_available()
    if not a.tiny and not cuda:
        print("no CUDA device visible: run this on a GPU machine, or use --tiny for the CPU-sized check",
              file=sys.stderr)
        return 2
    setup = G.TINY if a.tiny else G.FULL
    device = torch.device("cuda" if cuda and not a.tiny else "cpu")
    B = a.batch_size or (4 if a.tiny else 16)
    N = a.max_new_tokens or (12 if a.tiny else 256)
    out_dir = Path(a.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "trl_side_by_side.jsonl"
    env = {"device": torch.cuda.get_device_name(0) if device.type == "cuda" else platform.processor() or "cpu",
           "torch": torch.__version__, "cuda": torch.version.cuda, "tiny": a.tiny,
           "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    try:
        import trl
        import transformers
        env.update(trl=trl.__version__, transformers=transformers.__version__)
    except ImportError as e:
        print(f"TRL is needed for the side-by-side ({e}); pip install 'trl>=1.16'", file=sys.stderr)
        return 2
    vocab = setup["student"]["vocab"]
    tok = hf.make_tiny_tokenizer(512, pad_to=vocab if vocab > 512 else None)
    teacher = G.build(setup["teacher"], tok, setup["dtype"], device, 1).eval().requires_grad_(False)
    rows = []

    def emit(row):
        row = {**env, **row}
        rows.append(row)
        with open(path, "a") as f:
            f.write(json.dumps(row) + "\n")
        G.log(json.dumps(row))

    for method in OURS_METHODS:
        emit(ours_step(setup, tok, teacher, device, method, B, N))
    emit(trl_step(setup, tok, teacher, device, B, N, vllm=a.vllm))
    summary = {"side": "summary", "batch_size": B, "max_new_tokens": N}
    trl_row = rows[-1]
    for r in rows[:-1]:
        summary[f"{r['method']}_step_speedup_vs_trl"] = trl_row["step_s"] / r["step_s"]
        if r["peak_bytes"] and trl_row["peak_bytes"]:
            summary[f"{r['method']}_peak_vs_trl"] = r["peak_bytes"] / trl_row["peak_bytes"]
    if a.largest_budget_s > 0:
        cap = 2 * B if a.tiny else 4096
        ours_l = largest(lambda b: ours_step(setup, tok, teacher, device, "opd", b, N), B, a.largest_budget_s, cap)
        emit({"side": "ours", "method": "opd", "search": "largest batch", **ours_l})
        trl_l = largest(lambda b: trl_step(setup, tok, teacher, device, b, N, vllm=a.vllm), B, a.largest_budget_s, cap)
        emit({"side": "trl", "method": "DistillationTrainer(beta=1.0)", "search": "largest batch", **trl_l})
        summary["largest_batch_ours"], summary["largest_batch_trl"] = ours_l["largest_batch"], trl_l["largest_batch"]
    budget = memory.device_budget(device) if device.type == "cuda" else None
    if a.budget_gib:
        budget = int(a.budget_gib * 2**30)
    if budget is not None:
        P = memcheck.max_prompt_len(GSM8K(), tok)
        for chunked in (True, False):
            s_cfg = memcheck.shaped_config(tok, setup["student"]["shape"], setup["student"]["vocab"],
                                           setup["student"]["tied"])
            p = memory.plan(s_cfg, teacher.config, batch_size=B, prompt_len=P, max_new_tokens=N, dtype=setup["dtype"],
                            lora_r=setup["lora_r"], gradient_checkpointing=True, method="opd", device=device,
                            budget_bytes=budget, chunked=chunked)
            summary[f"planner_largest_batch_{'chunked' if chunked else 'full_copy'}"] = p.largest_batch
    emit(summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
