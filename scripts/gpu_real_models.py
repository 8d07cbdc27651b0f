"""Real-size architectures, random weights, one GPU: OPD steps with LoRA, measured against the memory planner.

    python scripts/gpu_real_models.py            # on CUDA: Qwen2.5-0.5B-shaped student, 1.5B-shaped teacher, bf16
    python scripts/gpu_real_models.py --tiny     # the same path on CPU-sized models (tests; any machine)

Nothing is downloaded: the models are built from configs with the shapes of Qwen2.5-0.5B
(hidden 896, 24 layers, 14 heads / 2 KV heads, MLP 4864, vocab 151936, tied embeddings) and
Qwen2.5-1.5B (hidden 1536, 28 layers, 12 / 2 heads, MLP 8960), random weights, and a byte-level
BPE tokenizer trained here and padded to 151936 ids. The task is the shipped GSM8K-format
sample (prompts through the chat template). Random weights never emit EOS, so every
completion runs to max_new_tokens: the worst case for memory and the simplest for timing.

For each configuration: the planner's estimate (before anything runs), a warm-up step, then
one measured step: torch.cuda.max_memory_allocated (reset before the step), tokens/s of
generation and of the whole step. One JSON line per configuration goes to
$OUT/gpu_real_models.jsonl (or --out DIR); progress is printed as it goes. Designed to finish
in under 4 minutes on an H100.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from workbench import hf, memcheck, memory  # noqa: E402
from workbench.tasks.gsm8k import GSM8K  # noqa: E402

FULL = {
    "student": memcheck.QWEN25_05B, "teacher": memcheck.QWEN25_15B, "dtype": torch.bfloat16, "lora_r": 16,
    # (method, batch_size, max_new_tokens, gradient_checkpointing, num_generations)
    "runs": [("opd", 8, 128, True, None), ("opd", 16, 128, True, None), ("opd", 8, 128, False, None),
             ("grpo", 16, 128, True, 4)],
}
TINY = {
    "student": dict(shape=(64, 2, 4, 2, 176), vocab=512, tied=True),
    "teacher": dict(shape=(96, 2, 6, 2, 256), vocab=512, tied=True), "dtype": torch.float32, "lora_r": 8,
    "runs": [("opd", 4, 12, True, None), ("grpo", 4, 12, False, 2)],
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def build(spec, tok, dtype, device, seed):
    cfg = memcheck.shaped_config(tok, spec["shape"], spec["vocab"], spec["tied"])
    torch.manual_seed(seed)
    with torch.device(device):
        from transformers import AutoModelForCausalLM
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    return model


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiny", action="store_true", help="CPU-sized models (the test path)")
    ap.add_argument("--out", default=os.environ.get("OUT", "."), help="directory for gpu_real_models.jsonl")
    ap.add_argument("--warmup", type=int, default=1)
    args = ap.parse_args(argv)
    setup = TINY if args.tiny else FULL
    cuda = torch.cuda.is_available()
    if not args.tiny and not cuda:
        print("no CUDA device visible: run this on a GPU machine, or use --tiny for the CPU-sized check",
              file=sys.stderr)
        return 2
    device = torch.device("cuda" if cuda and not args.tiny else "cpu")
    mode = "cuda" if device.type == "cuda" else "tracker"
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    out_path = out_dir / "gpu_real_models.jsonl"
    env = {"device": torch.cuda.get_device_name(0) if device.type == "cuda" else platform.processor() or "cpu",
           "torch": torch.__version__, "cuda": torch.version.cuda, "tiny": args.tiny}
    log(f"device {env['device']}, torch {env['torch']}, writing {out_path}")
    t_start = time.time()

    vocab = setup["student"]["vocab"]
    tok = hf.make_tiny_tokenizer(512, pad_to=vocab if vocab > 512 else None)
    log(f"tokenizer: {len(tok)} ids (byte-level BPE trained here, padded)")
    s_model = build(setup["student"], tok, setup["dtype"], device, 0)
    t_model = build(setup["teacher"], tok, setup["dtype"], device, 1).eval().requires_grad_(False)
    log(f"built student {sum(p.numel() for p in s_model.parameters()) / 1e6:.0f}M and teacher "
        f"{sum(p.numel() for p in t_model.parameters()) / 1e6:.0f}M params ({setup['dtype']}) in "
        f"{time.time() - t_start:.1f}s")
    s_cfg, t_cfg = s_model.config, t_model.config
    hf.enable_gradient_checkpointing(s_model)
    spec = hf.LoraSpec(r=setup["lora_r"], alpha=2 * setup["lora_r"])
    student = hf.add_lora(s_model, spec)
    from workbench.compat import check_pair
    report = check_pair(tok, tok, t_cfg, s_cfg, teacher_name="qwen2.5-1.5b-shape", student_name="qwen2.5-0.5b-shape")
    report.raise_if_errors()
    pair = hf.Pair(teacher=t_model, student=student, tokenizer=tok, teacher_tokenizer=tok, report=report,
                   teacher_name="random-qwen2.5-1.5b-shape", student_name="random-qwen2.5-0.5b-shape",
                   device=device, dtype=setup["dtype"], lora=spec, info={"gradient_checkpointing": True})
    task = GSM8K()
    P = memcheck.max_prompt_len(task, tok)
    budget = memory.device_budget(device) if device.type == "cuda" else None
    with open(out_path, "a") as f:
        for method, B, N, gc_on, G in setup["runs"]:
            base = student.get_base_model()
            if gc_on:
                hf.enable_gradient_checkpointing(student)
            else:
                (getattr(base, "activation_checkpointing_disable", None) or base.gradient_checkpointing_disable)()
            pair.info["gradient_checkpointing"] = gc_on
            p = memory.plan(s_cfg, t_cfg, batch_size=B, prompt_len=P, max_new_tokens=N, dtype=setup["dtype"],
                            lora_r=spec.r, gradient_checkpointing=gc_on, method=method, num_generations=G or 1,
                            device=device, budget_bytes=budget)
            log(f"--- {method} B={B} N={N} checkpointing={gc_on}\n{p.table()}")
            if device.type == "cuda":
                torch.cuda.empty_cache()
            t0 = time.time()
            res = memcheck.measure_step(pair, task, method, batch_size=B, max_new_tokens=N, mode=mode,
                                        warmup=args.warmup, num_generations=G)
            res.update(env)
            res.update({"gradient_checkpointing": gc_on, "lora_r": spec.r, "dtype": str(setup["dtype"]),
                        "student_params": sum(q.numel() for q in student.parameters()),
                        "teacher_params": sum(q.numel() for q in t_model.parameters()),
                        "plan_total_with_margin": p.total, "plan_largest_batch": p.largest_batch,
                        "plan_budget": p.budget, "wall_s": round(time.time() - t0, 2)})
            f.write(json.dumps(res) + "\n")
            f.flush()
            log(f"measured peak {memory.fmt_bytes(res['measured_peak'])} vs estimate "
                f"{memory.fmt_bytes(res['estimate_peak'])} ({res['rel_error'] * 100:+.1f}%; dynamic part "
                f"{res['rel_error_dynamic'] * 100:+.1f}%), generation {res['generated_tokens_per_s']:.0f} tok/s, "
                f"step {res['step_s']:.2f}s ({res['wall_s']:.1f}s with warm-up)")
    log(f"done in {time.time() - t_start:.0f}s -> {out_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
