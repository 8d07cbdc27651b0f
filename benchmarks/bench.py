"""Benchmarks: every speed or cost claim is a measurement against a baseline measured in the same run.

    python -m benchmarks rollout --json      # our rollout engine vs model.generate (KV cache on)
    python -m benchmarks step --json         # one training step per method: generate / teacher / update
    python -m benchmarks teacher --json      # teacher scoring: one batched no-grad forward vs baselines
    python -m benchmarks dashboard --json    # a training step with and without the dashboard (static, live)
    python -m benchmarks memory --json       # peak memory of an OPD / GKD step at V = 151,936: chunked vs full-copy
    python -m benchmarks all --json          # all of the above (what docs/benchmarks.md reports)

Method: each measured call is warmed up once, then run `--repeats` times; variants are interleaved
(round-robin, order rotated every repeat) so that machine load hits them alike; rows give the median
and the min/max over repeats, and ratios are medians of per-repeat paired ratios. The first row is
the machine; the second the matmul peak (a square matmul in the model dtype, repeated; FLOP/s of the
best run), measured in the same run, against which achieved FLOP/s (2 x params x tokens processed,
prompt tokens included; the usual forward approximation) are reported as `*_frac_of_peak`. On CPU,
`bench rollout` also splits one instrumented call of our engine into matmuls, decode attention, prefill,
decode steps, sampling and bookkeeping, and a KV-cache read floor (`time_parts`), and reports two bounds
on the ratio to `generate`: the ceiling (matmuls + KV floor alone) and the budget (every part at its best
measured rate, the decode step's other work free).

Models: `--model` is a zoo name (default: the addition teacher; `bench rollout` also runs the student
at the largest batch), a checkpoint directory, or `qwen2-0.5b-shape`: a random-weight model with
Qwen2-0.5B's shape (hidden 896, 24 layers, 14 heads / 2 KV heads, MLP 4864, vocab 151936; bf16 on
GPU), prompts from the addition task (ids inside its vocabulary; a random model rarely ends early).
`--lora R` (rollout): the model wrapped with rank-R LoRA adapters on every projection, as a LoRA
student samples (adapters at peft's initialisation: B = 0, same work as any B).
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import io
import os
import platform
import statistics
import sys
import time

import torch

from workbench import rollout as R
from workbench import hf
from workbench.cli import emit as _emit
from workbench.models import count_params, pick_device, pick_dtype

SYNTHETIC = {
    "qwen2-0.5b-shape": dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                             intermediate_size=4864, vocab_size=151936, max_position_embeddings=32768,
                             tie_word_embeddings=True, rms_norm_eps=1e-6),
}
DEFAULT_MODEL = "addition-teacher"
DEFAULT_STUDENT = "addition-student"
DEFAULT_BATCHES = (1, 32, 256)
DEFAULT_NEW_TOKENS = 64
STEP_METHODS = ("opd", "sft", "grpo")


# ---------------------------------------------------------------------------------------------------
# timing helpers
# ---------------------------------------------------------------------------------------------------
def _sync(dev: torch.device):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _timed(fn, dev):
    _sync(dev)
    t = time.perf_counter()
    out = fn()
    _sync(dev)
    return out, time.perf_counter() - t


def _stats(xs: list[float]) -> tuple[float, float, float]:
    return statistics.median(xs), min(xs), max(xs)


def _interleaved(variants: dict, repeats: int, dev) -> dict[str, list]:
    """Warm each variant up once, then run all `repeats` times round-robin (order rotated each repeat).
    Each variant is fn(rep) -> payload; returns name -> [(seconds, payload), ...]."""
    names = list(variants)
    for n in names:
        _timed(lambda: variants[n](-1), dev)
    out = {n: [] for n in names}
    for rep in range(repeats):
        k = rep % len(names)
        for n in names[k:] + names[:k]:
            payload, dt = _timed(lambda: variants[n](rep), dev)
            out[n].append((dt, payload))
    return out


def machine_info(dev: torch.device) -> dict:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import transformers
    row = {"bench": "machine", "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
           "nproc": os.cpu_count(), "cpu": cpu, "torch": torch.__version__, "transformers": transformers.__version__,
           "python": platform.python_version(), "threads": torch.get_num_threads(), "device": str(dev)}
    try:
        row["load_avg_1m"] = os.getloadavg()[0]
    except OSError:
        pass
    if dev.type == "cuda":
        row["gpu"] = torch.cuda.get_device_name(dev)
        row["cuda"] = torch.version.cuda
    return row


def matmul_peak(dev: torch.device, dtype: torch.dtype, n: int | None = None, repeats: int = 10) -> dict:
    """FLOP/s of a square n x n matmul in `dtype` on `dev` (best of `repeats`; median too)."""
    n = n or (1024 if dev.type == "cpu" else 8192)
    g = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=g).to(dev, dtype)
    b = torch.randn(n, n, generator=g).to(dev, dtype)
    inner = 1 if dev.type == "cpu" else 10
    def run():
        for _ in range(inner):
            torch.mm(a, b)
    for _ in range(2):
        _timed(run, dev)
    ts = [_timed(run, dev)[1] / inner for _ in range(repeats)]
    flops = 2 * n ** 3
    return {"bench": "matmul_peak", "device": str(dev), "dtype": str(dtype).replace("torch.", ""), "n": n,
            "threads": torch.get_num_threads(), "peak_flops": flops / min(ts),
            "median_flops": flops / statistics.median(ts), "repeats": repeats}


# ---------------------------------------------------------------------------------------------------
# models and prompts
# ---------------------------------------------------------------------------------------------------
def load_model(name: str, dev: torch.device):
    """(model, tokenizer, task name) for a zoo name, a checkpoint directory or a SYNTHETIC shape."""
    from workbench import zoo
    from workbench.pairs import load_checkpoint
    from workbench.tasks import get_task
    from workbench.tokenizer import build_tokenizer
    if name in SYNTHETIC:
        from transformers import Qwen2Config, Qwen2ForCausalLM
        tok = build_tokenizer(get_task("addition").charset)
        cfg = Qwen2Config(**SYNTHETIC[name], bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                          pad_token_id=tok.pad_token_id)
        dtype = pick_dtype(dev)
        with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
            torch.manual_seed(0)
            with dev:
                model = Qwen2ForCausalLM(cfg).to(dtype)
        return model.eval().requires_grad_(False), tok, "addition"
    model, tok = load_checkpoint("benchmark model", name, str(dev), trainable=False)
    task = zoo.RECIPES[name].task if name in zoo.RECIPES else "addition"
    return model, tok, task


def prompts_for(tok, task_name: str, batch_size: int, dev, seed: int = 1234):
    from workbench.batching import prompt_batch
    from workbench.tasks import get_task
    task = get_task(task_name)
    return prompt_batch(tok, task.problems(batch_size, seed=seed, split="test"), dev, task=task)


def _completion_lengths(completion: torch.Tensor, eos_id: int) -> torch.Tensor:
    is_eos = completion == eos_id
    has = is_eos.any(-1)
    first = is_eos.float().argmax(-1)
    return torch.where(has, first + 1, torch.full_like(first, completion.shape[1]))


# ---------------------------------------------------------------------------------------------------
# rollout: our engine vs model.generate
# ---------------------------------------------------------------------------------------------------
def bench_rollout(model, tok, task_name: str, label: str, batch_size: int, max_new_tokens: int, repeats: int,
                  dev, peak: float | None, temperature: float = 1.0, hf_loop: bool = True) -> dict:
    from workbench import fast_rollout
    ids, mask = prompts_for(tok, task_name, batch_size, dev)
    eos, pad = tok.eos_token_id, tok.pad_token_id
    params = count_params(model)
    prompt_tokens = int(mask.sum())
    greedy = temperature == 0
    engine = "fast" if fast_rollout.is_supported(model) else "hf"

    def ours(engine_name):
        def run(rep):
            g = torch.Generator(device=dev).manual_seed(1000 + rep)
            r = R.sample(model, ids, mask, max_new_tokens=max_new_tokens, eos_token_id=eos, pad_token_id=pad,
                         temperature=temperature, generator=g, engine=engine_name)
            return int(r.lengths.sum())
        return run

    def generate(rep):
        torch.manual_seed(1000 + rep)            # generate samples from the global RNG
        kw = dict(do_sample=False) if greedy else dict(do_sample=True, temperature=temperature, top_k=0, top_p=1.0)
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, eos_token_id=eos,
                             pad_token_id=pad, use_cache=True, **kw)
        return int(_completion_lengths(out[:, ids.shape[1]:], eos).sum())

    variants = {"ours": ours("auto"), "generate": generate}
    if hf_loop and engine == "fast":
        variants["hf_loop"] = ours("hf")
    kernels = fast_rollout.attention_used(model, dev) if engine == "fast" else None
    if kernels == "c":          # the same engine with its torch decode path: what the compiled kernels add
        def torch_kernels(rep):
            g = torch.Generator(device=dev).manual_seed(1000 + rep)
            c, _ = fast_rollout.fast_sample(model, ids, mask, max_new_tokens=max_new_tokens, eos_token_id=eos,
                                            pad_token_id=pad, temperature=temperature, generator=g, attention="bmm")
            return int(_completion_lengths(c, eos).sum())
        variants["ours_torch_kernels"] = torch_kernels
    if engine == "fast" and dev.type == "cuda":   # ours replays a CUDA graph there; this is its eager path
        def eager(rep):
            g = torch.Generator(device=dev).manual_seed(1000 + rep)
            c, _ = fast_rollout.fast_sample(model, ids, mask, max_new_tokens=max_new_tokens, eos_token_id=eos,
                                            pad_token_id=pad, temperature=temperature, generator=g, cuda_graph=False)
            return int(_completion_lengths(c, eos).sum())
        variants["ours_eager"] = eager
    res = _interleaved(variants, repeats, dev)
    row = {"bench": "rollout", "model": label, "params": params, "device": str(dev),
           "dtype": str(next(model.parameters()).dtype).replace("torch.", ""), "threads": torch.get_num_threads(),
           "engine": engine, "decode_kernels": kernels, "batch_size": batch_size, "max_new_tokens": max_new_tokens,
           "temperature": temperature, "repeats": repeats}
    tps = {}
    for name, runs in res.items():
        tps[name] = [tokens / dt for dt, tokens in runs]
        med, lo, hi = _stats(tps[name])
        row[f"{name}_tokens_per_s"] = med
        row[f"{name}_tokens_per_s_min"] = lo
        row[f"{name}_tokens_per_s_max"] = hi
        row[f"{name}_mean_length"] = statistics.mean(tokens for _, tokens in runs) / batch_size
        row[f"{name}_s_median"] = statistics.median(dt for dt, _ in runs)
        if peak:
            flops = [2 * params * (prompt_tokens + tokens) / dt for dt, tokens in runs]
            row[f"{name}_flops_per_s"] = statistics.median(flops)
            row[f"{name}_frac_of_peak"] = statistics.median(flops) / peak
    for name in variants:
        if name == "generate":
            continue
        key = "ratio_vs_generate" if name == "ours" else f"{name}_ratio_vs_generate"
        ratios = [a / b for a, b in zip(tps[name], tps["generate"])]
        row[key], row[key + "_min"], row[key + "_max"] = _stats(ratios)
    if "hf_loop" in tps:
        ratios = [a / b for a, b in zip(tps["ours"], tps["hf_loop"])]
        row["ratio_vs_hf_loop"], row["ratio_vs_hf_loop_min"], row["ratio_vs_hf_loop_max"] = _stats(ratios)
    if engine == "fast" and dev.type == "cpu" and not hf.is_peft(model):     # with LoRA, _lin is not one mm
        parts = time_parts(model, ids, mask, max_new_tokens, eos, pad, temperature, repeats)
        row.update(parts)
        row["ceiling_ratio_vs_generate"] = row["generate_s_median"] / (parts["parts_matmul_s"] + parts["parts_kv_floor_s"])
        if parts.get("parts_budget_s"):
            row["budget_ratio_vs_generate"] = row["generate_s_median"] / parts["parts_budget_s"]
    return row


def kv_read_rate(n_bytes: int, repeats: int = 10) -> float:
    """Bytes/s of `sum` over float32 buffers of `n_bytes` in total, rotated over 4 buffers like the per-layer
    caches (best of `repeats`, torch's current thread count): the rate at which decode attention could at
    best read its cache."""
    bufs = [torch.randn(max(1, n_bytes // 16)) for _ in range(4)]
    for b in bufs:
        b.sum()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        for b in bufs:
            b.sum()
        best = min(best, time.perf_counter() - t)
    return 4 * bufs[0].numel() * 4 / best


def attention_kernel_rate(H: int, Hkv: int, D: int, layers: int, rows: int, context: int, repeats: int = 10) -> float:
    """Bytes/s of K and V that the compiled decode-attention kernel reads on its own: `rows` rows attending
    over `context` cached positions in each of `layers` per-layer caches of the engine's layout, called
    layer after layer as a decode step calls it, nothing else running in between (best of `repeats`). The
    most the kernel reaches here, so `kv bytes / this` is a lower bound on its time inside the engine."""
    from workbench import ckernels
    g = torch.Generator().manual_seed(0)
    kvw, n = Hkv * D, max(1, context)
    Ks = [torch.randn(rows, n, kvw, generator=g) for _ in range(layers)]
    Vs = [torch.randn(rows, n, kvw, generator=g) for _ in range(layers)]
    qkv0 = torch.randn(rows, (H + 2 * Hkv) * D, generator=g)
    cs = torch.rand(rows, 2 * D, generator=g) * 2 - 1
    qkvs = [qkv0.clone() for _ in range(layers)]
    best = float("inf")
    for _ in range(repeats + 1):                          # the first round warms up
        for q in qkvs:
            q.copy_(qkv0)                                 # the kernel rotates and scales q in place
        t = time.perf_counter()
        for q, K, V in zip(qkvs, Ks, Vs):
            ckernels.attn_decode(q, cs, K, V, n - 1, None, H, Hkv, D, D ** -0.5)
        best = min(best, time.perf_counter() - t)
    return 2 * layers * rows * n * kvw * 4 / best


def time_parts(model, ids, mask, max_new_tokens, eos, pad, temperature, repeats) -> dict:
    """Where one call of the fast engine spends its time (CPU; median over `repeats` instrumented calls,
    separate from the timed ones): its matmuls (time inside every `torch.mm`/`addmm` of prefill and decode),
    decode attention (the kernel calls), the prefill, the decode steps, the rest of the loop (sampling and
    bookkeeping), and the KV-cache bytes decode attention must read. Two bounds follow:
      * the KV floor: those bytes at this machine's `sum` rate (`kv_read_rate` on one chunk's cache size);
        `ceiling_ratio_vs_generate` (set by `bench_rollout`) = generate's time / (matmuls + KV floor), the
        best ratio possible if everything else (norms, rotary, softmax, sampling, Python) cost nothing;
      * the budget (compiled kernels only): matmuls + the KV bytes at the attention kernel's own best rate
        in isolation (`attention_kernel_rate`, same rows and mean context) + the prefill outside its
        matmuls + sampling and bookkeeping, i.e. every measured part at its best and the decode step's
        remaining elementwise work and Python free; `budget_ratio_vs_generate` = generate's time / that."""
    from workbench import fast_rollout as fr
    rows = []
    with fr.profiled() as rec:                            # the engine's own instrumentation (public)
        fresh = dict(rec)
        for rep in range(repeats):
            rec.update(fresh)
            g = torch.Generator().manual_seed(1000 + rep)
            t = time.perf_counter()
            fr.fast_sample(model, ids, mask, max_new_tokens=max_new_tokens, eos_token_id=eos, pad_token_id=pad,
                           temperature=temperature, generator=g)
            rows.append(dict(rec, total=time.perf_counter() - t))
    rate = kv_read_rate(rows[0]["cache_bytes"])
    med = lambda k: statistics.median(r[k] for r in rows)          # noqa: E731
    kv = rows[0]["kv_bytes"]
    out = {"parts_total_s": med("total"), "parts_matmul_s": med("mm"),
           "parts_attention_s": med("attn") if rows[0]["c"] else None,
           "parts_prefill_s": med("prefill"), "parts_prefill_matmul_s": med("mm_prefill"),
           "parts_decode_s": med("decode"),
           "parts_loop_s": statistics.median(r["total"] - r["prefill"] - r["decode"] for r in rows),
           "parts_kv_bytes": kv, "kv_read_bytes_per_s": rate, "parts_kv_floor_s": kv / rate}
    if rows[0]["c"] and rows[0]["row_steps"]:
        H, Hkv, D, L = rows[0]["dims"]
        ctx = round(rows[0]["row_ctx"] / rows[0]["row_steps"])
        att_rate = attention_kernel_rate(H, Hkv, D, L, rows[0]["rows"], ctx)
        out.update(attention_kernel_bytes_per_s=att_rate, attention_kernel_context=ctx,
                   parts_budget_s=(out["parts_matmul_s"] + kv / att_rate
                                   + out["parts_prefill_s"] - out["parts_prefill_matmul_s"] + out["parts_loop_s"]))
    return out


# ---------------------------------------------------------------------------------------------------
# training step: generate / teacher / update, per method; rollout engine "auto" vs "hf" (before/after)
# ---------------------------------------------------------------------------------------------------
def bench_step(methods, repeats: int, dev, peak: float | None, engines=("auto", "hf"), batch_size=None,
               max_new_tokens=None, teacher=None, student=None) -> list[dict]:
    from workbench.config import TrainConfig
    from workbench.trainer import Trainer
    rows = []
    for method in methods:
        over = dict(eval_every=0, device=str(dev), num_samples=1)
        if batch_size:
            over["batch_size"] = batch_size
        if max_new_tokens:
            over["max_new_tokens"] = max_new_tokens
        if teacher:
            over["teacher"] = teacher
        if student:
            over["student"] = student
        trainers = {e: Trainer(TrainConfig.for_method(method, **over)) for e in engines}
        recs = {e: [] for e in engines}
        for rep in range(-1, repeats):                 # rep -1: warm-up
            order = list(engines) if rep % 2 else list(reversed(engines))
            for e in order:
                tr = trainers[e]
                flops0 = tr.costs.flops
                with R.use_engine(e):
                    _sync(dev)
                    rec = tr.step()
                    _sync(dev)
                if rep >= 0:
                    recs[e].append((rec, tr.costs.flops - flops0))
        for e in engines:
            tr = trainers[e]
            rs = recs[e]
            g = [r["time/generate_s"] for r, _ in rs]
            te = [r["time/teacher_s"] for r, _ in rs]
            u = [r["time/update_s"] for r, _ in rs]
            st = [r["time/step_s"] for r, _ in rs]
            share = [a / b for a, b in zip(g, st)]
            from workbench import fast_rollout
            gen_model = tr.student if tr.cfg.source == "student" else tr.teacher
            row = {"bench": "step", "method": method, "rollout_engine": e,
                   "engine_used": ("fast" if e != "hf" and gen_model is not None
                                   and fast_rollout.is_supported(gen_model) else "hf"),
                   "generated_by": tr.cfg.source, "batch_size": tr.cfg.batch_size,
                   "max_new_tokens": tr.cfg.max_new_tokens, "loss": tr.cfg.loss, "repeats": repeats,
                   "step_s": statistics.median(st), "step_s_min": min(st), "step_s_max": max(st),
                   "generate_s": statistics.median(g), "teacher_s": statistics.median(te),
                   "update_s": statistics.median(u),
                   "other_s": statistics.median([s - a - b - c for s, a, b, c in zip(st, g, te, u)]),
                   "generate_share": statistics.median(share), "generate_share_min": min(share),
                   "generate_share_max": max(share),
                   "mean_completion_length": statistics.mean(r["rollout/mean_length"] for r, _ in rs),
                   "flops_per_step": statistics.median(f for _, f in rs)}
            if peak:
                fl = [f / r["time/step_s"] for r, f in rs]
                row["flops_per_s"] = statistics.median(fl)
                row["frac_of_peak"] = statistics.median(fl) / peak
            rows.append(row)
        if len(engines) == 2 and "hf" in engines:
            other = [e for e in engines if e != "hf"][0]
            a, b = rows[-2:] if rows[-2]["rollout_engine"] == other else rows[-1:-3:-1]
            a["generate_speedup_vs_hf"] = b["generate_s"] / a["generate_s"]
            a["step_speedup_vs_hf"] = b["step_s"] / a["step_s"]
    return rows


# ---------------------------------------------------------------------------------------------------
# teacher scoring
# ---------------------------------------------------------------------------------------------------
def bench_teacher(teacher, student, tok, task_name: str, batch_size: int, max_new_tokens: int, repeats: int,
                  dev, peak: float | None, label: str) -> dict:
    """What the trainer does (one no-grad forward over the batch, logits of completion positions only)
    against: a per-sample loop, a batched forward keeping all logits, and one that keeps a graph."""
    ids, mask = prompts_for(tok, task_name, batch_size, dev, seed=99)
    g = torch.Generator(device=dev).manual_seed(0)
    r = R.sample(student, ids, mask, max_new_tokens=max_new_tokens, eos_token_id=tok.eos_token_id,
                 pad_token_id=tok.pad_token_id, temperature=1.0, generator=g)
    full_ids, full_mask = r.input_ids, r.attention_mask
    pos = R.positions_from_mask(full_mask)
    tokens = int(full_mask.sum())
    params = count_params(teacher)

    def batched(_):
        with torch.no_grad():
            return R.completion_logits(teacher, r).shape

    def all_logits(_):
        with torch.no_grad():
            return teacher(input_ids=full_ids, attention_mask=full_mask, position_ids=pos, use_cache=False).logits.shape

    def per_sample(_):
        with torch.no_grad():
            for i in range(full_ids.shape[0]):
                keep = full_mask[i].bool()
                x = full_ids[i][keep][None]
                teacher(input_ids=x, use_cache=False).logits
        return None

    def with_graph(_):
        req = [p.requires_grad for p in teacher.parameters()]
        teacher.requires_grad_(True)
        try:
            with torch.enable_grad():
                out = R.completion_logits(teacher, r)
                return out.grad_fn is not None
        finally:
            for p, q in zip(teacher.parameters(), req):
                p.requires_grad_(q)

    variants = {"batched_no_grad": batched, "all_logits_no_grad": all_logits, "per_sample_loop": per_sample,
                "batched_with_graph": with_graph}
    res = _interleaved(variants, repeats, dev)
    row = {"bench": "teacher", "model": label, "params": params, "device": str(dev), "batch_size": batch_size,
           "max_new_tokens": max_new_tokens, "completion_width": r.completion_ids.shape[1],
           "tokens_scored": tokens, "repeats": repeats, "trainer_uses": "batched_no_grad"}
    med = {}
    for name, runs in res.items():
        ts = [dt for dt, _ in runs]
        med[name], lo, hi = _stats(ts)
        row[f"{name}_s"], row[f"{name}_s_min"], row[f"{name}_s_max"] = med[name], lo, hi
        row[f"{name}_tokens_per_s"] = tokens / med[name]
        if peak:
            row[f"{name}_frac_of_peak"] = 2 * params * tokens / med[name] / peak
    for name in ("all_logits_no_grad", "per_sample_loop", "batched_with_graph"):
        row[f"speedup_vs_{name}"] = med[name] / med["batched_no_grad"]
    V = teacher.config.vocab_size
    row["logits_bytes_trainer"] = r.completion_ids.numel() * V * 4
    row["logits_bytes_all_positions"] = full_ids.numel() * V * 4
    return row


# ---------------------------------------------------------------------------------------------------
# dashboard overhead
# ---------------------------------------------------------------------------------------------------
def bench_dashboard(repeats: int, dev, steps_per_run: int = 3, mode: str = "static") -> dict:
    """Wall time per training step with and without a dashboard callback; mode="live" redraws at the
    default throttle (once a second) into an IPython shell that serialises each output (benchmarks.live_shell)."""
    try:
        from widgets import TrainingDashboard
        if mode == "live":
            from benchmarks.live_shell import live_shell
            live_shell()
    except Exception as e:  # the widgets package is optional here
        return {"bench": "dashboard", "mode": mode, "skipped": True, "reason": f"widgets not importable: {e!r}"}
    from workbench.config import TrainConfig
    from workbench.trainer import Trainer
    tr = Trainer(TrainConfig.for_method("opd", eval_every=0, device=str(dev)))
    sink = io.StringIO()
    plain, dashed, in_cb = [], [], []
    try:
        with contextlib.redirect_stdout(sink):
            tr.run(steps=1)                                    # warm-up
            for rep in range(repeats):
                for with_dash in ((False, True) if rep % 2 == 0 else (True, False)):
                    cbs = []
                    if with_dash:
                        dash = TrainingDashboard(mode=mode, pump_kernel=False)
                        cbs = [dash]
                    t = time.perf_counter()
                    tr.run(steps=steps_per_run, callbacks=cbs)
                    dt = (time.perf_counter() - t) / steps_per_run
                    (dashed if with_dash else plain).append(dt)
                    if with_dash:
                        in_cb.append(dash.overhead() if hasattr(dash, "overhead") else {})
    except Exception as e:
        return {"bench": "dashboard", "mode": mode, "skipped": True, "reason": f"dashboard run failed: {e!r}"}
    p, d = statistics.median(plain), statistics.median(dashed)
    med = lambda key: (statistics.median(o[key] for o in in_cb)                          # noqa: E731
                       if in_cb and all(key in o for o in in_cb) else None)
    # step_s_* are wall time per step of Trainer.run(steps_per_run) (the final redraw at on_end included),
    # so their difference is within machine noise; on_step_ms / redraw_ms are the dashboard's own timers
    return {"bench": "dashboard", "mode": mode, "steps_per_run": steps_per_run, "repeats": repeats,
            "redraws": sum(o.get("redraws", 0) for o in in_cb),
            "step_s_without": p, "step_s_with": d, "overhead_s_per_step": d - p,
            "overhead_frac": (d - p) / p,
            # each repeat ran both variants back to back: the median of those paired ratios, minus 1
            "overhead_frac_paired": statistics.median(b / a for a, b in zip(plain, dashed)) - 1,
            "step_s_without_min": min(plain), "step_s_with_min": min(dashed),
            "on_step_ms": med("on_step_mean_ms"), "redraw_ms": med("redraw_mean_ms"),
            "on_step_frac_of_step": (med("on_step_mean_ms") / 1e3 / p) if med("on_step_mean_ms") is not None
            else None}


# ---------------------------------------------------------------------------------------------------
# exactness on the device at hand (scripts/gpu_check.sh runs this on a GPU)
# ---------------------------------------------------------------------------------------------------
def exactness_rows(model, tok, task_name: str, label: str, dev, batch_size: int = 64,
                   max_new_tokens: int | None = None) -> list[dict]:
    """Greedy agreement of the fast engine (each variant) with `model.generate`, and how far its stored
    log-probs are from a re-scoring forward. On CPU in float32 agreement is exact (tests assert it); in
    bf16 on a GPU two different attention kernels may round a near-tie differently, so this reports the
    fraction of identical rows instead of asserting."""
    from workbench import fast_rollout
    from workbench.batching import prompt_batch
    from workbench.tasks import get_task
    task = get_task(task_name)
    n = batch_size
    problems = task.problems(n - n // 4, seed=7, split="test")
    if n // 4:
        problems += task.problems(n // 4, seed=7, split="long")       # longer prompts: left padding
    ids, mask = prompt_batch(tok, problems, dev, task=task)
    new = max_new_tokens or task.max_new_tokens
    eos, pad = tok.eos_token_id, tok.pad_token_id
    with torch.no_grad():
        gen = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=new,
                             eos_token_id=eos, pad_token_id=pad)[:, ids.shape[1]:]
    if dev.type == "cuda":      # "fast" replays a CUDA graph there (the default); the eager path too
        variants = {"fast": {}, "fast_eager": dict(cuda_graph=False),
                    "fast_eager_no_chunk_no_compact": dict(cuda_graph=False, row_chunk=10 ** 9, compact=False),
                    "fast_eager_bmm_attention": dict(cuda_graph=False, attention="bmm")}
    else:
        variants = {"fast": {}, "fast_no_chunk_no_compact": dict(row_chunk=10 ** 9, compact=False)}
    rows = []
    for name, kw in variants.items():
        c, lp = fast_rollout.fast_sample(model, ids, mask, max_new_tokens=new, eos_token_id=eos, pad_token_id=pad,
                                         temperature=0.0, **kw)
        r = R.to_rollout(ids, mask, c, lp, eos)
        w = min(c.shape[1], gen.shape[1])
        same_rows = ((c[:, :w] == gen[:, :w]).all(-1) & torch.tensor(c.shape[1] == gen.shape[1], device=dev))
        with torch.no_grad():
            rescored = R.sequence_logprobs(model, r)
        rows.append({"bench": "exactness", "model": label, "device": str(dev),
                     "dtype": str(next(model.parameters()).dtype).replace("torch.", ""), "variant": name,
                     "batch_size": n, "max_new_tokens": new, "greedy_rows_equal_generate": float(same_rows.float().mean()),
                     "greedy_tokens_equal_generate": float((c[:, :w] == gen[:, :w]).float().mean()),
                     "logprob_max_abs_diff_vs_rescoring": float((rescored - r.logprobs).abs().max()),
                     "mean_length": float(r.lengths.float().mean())})
    return rows


# ---------------------------------------------------------------------------------------------------
# memory at a real vocabulary: the chunked logits path vs the full-copy path (issue 22)
# ---------------------------------------------------------------------------------------------------
MEMORY_STUDENT, MEMORY_TEACHER = [64, 2, 4, 2, 176], [96, 2, 6, 2, 256]     # tiny: the logits dominate
MEMORY_METHODS = {"opd": {}, "gkd": {"lmbda": 1.0}}        # GKD on-policy every step: the JSD loss each time


def _memory_probe(spec: dict, timeout: float) -> dict:
    """`memcheck._probe(spec)` in a fresh Python process (one torch thread), so each path's peak is its own."""
    import json
    import subprocess
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, OMP_NUM_THREADS=str(spec.get("threads", 1)), TOKENIZERS_PARALLELISM="false")
    env["PYTHONPATH"] = str(root) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-m", "workbench.memcheck", json.dumps(spec)], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=str(root))
    if proc.returncode != 0:
        raise RuntimeError(f"memory probe failed ({proc.returncode}) for {spec}:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench_memory(batch_size: int = 16, max_new_tokens: int = 64, vocab: int = 151936, methods=("opd", "gkd"),
                 mode: str = "tracker", timeout: float = 1800) -> list[dict]:
    """Peak memory of one training step, full-copy path (`Trainer.chunked_logits = False`, the trainer
    before issue 22) and chunked path, each in its own fresh process, and the planner's estimate of each.

    A tiny random-weight Qwen2-style pair (student hidden 64 x 2 layers, teacher 96 x 2) with a `vocab`-token
    vocabulary, full fine-tuning in float32 on CPU, GSM8K prompts, one warm-up step, then the measured step.
    `mode="tracker"`: live tensor storage (`memory.LiveTensorTracker`, what torch.cuda.max_memory_allocated
    is on CUDA); `mode="rss"`: the process's resident-set peak over the step (`memcheck.rss_check`'s method).
    """
    import tempfile
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as d:
        for method in methods:
            got = {}
            for chunked in (False, True):
                spec = dict(student=MEMORY_STUDENT, teacher=MEMORY_TEACHER, vocab=vocab, batch_size=batch_size,
                            max_new_tokens=max_new_tokens, method=method, mode=mode, dir=d, chunked_logits=chunked,
                            overrides=MEMORY_METHODS.get(method, {}))
                if mode == "rss":
                    from workbench import memcheck
                    r = memcheck.rss_check(spec, timeout=timeout)
                else:
                    r = _memory_probe(spec, timeout)
                got[chunked] = r
                rows.append({"bench": "memory", "vocab": vocab, "student": MEMORY_STUDENT, "teacher": MEMORY_TEACHER,
                             "path": "chunked" if chunked else "full-copy", **r,
                             "estimate_vs_measured": r["estimate_peak"] / r["measured_peak"]})
            old, new = got[False], got[True]
            rows[-1]["peak_ratio_vs_full_copy"] = new["measured_peak"] / old["measured_peak"]
            rows[-1]["dynamic_ratio_vs_full_copy"] = new["measured_dynamic"] / old["measured_dynamic"]
            rows[-1]["estimate_ratio_vs_full_copy"] = new["estimate_peak"] / old["estimate_peak"]
    return rows


# ---------------------------------------------------------------------------------------------------
# entry point
# ---------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    b = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    b.add_argument("what", choices=["rollout", "step", "teacher", "dashboard", "memory", "all"])
    b.add_argument("--batch-size", type=int, default=None)
    b.add_argument("--max-new-tokens", type=int, default=None)
    b.add_argument("--model", default=None, help="zoo name or checkpoint directory")
    b.add_argument("--repeats", type=int, default=5)
    b.add_argument("--device", default="auto")
    b.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    b.add_argument("--lora", type=int, default=0, metavar="R",
                   help="bench rollout: wrap the model with rank-R LoRA adapters on every projection "
                        "(workbench.hf.add_lora: float32 adapters), as a LoRA student samples")
    b.add_argument("--vocab", type=int, default=151936, help="bench memory: the pair's vocabulary size")
    b.add_argument("--mode", choices=["tracker", "rss"], default="tracker",
                   help="bench memory: live tensor storage (default) or the process's resident-set peak")
    b.add_argument("--json", action="store_true")
    return b


def main(ns) -> int:
    """Run the benchmarks `ns` (parsed by `build_parser`, or any object with the same attributes) asks for."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error()
    lora = getattr(ns, "lora", 0) or 0
    if lora < 0 or (lora and ns.what != "rollout"):
        raise SystemExit(f"--lora {lora}: give a positive rank, with `bench rollout` only")
    dev = pick_device(getattr(ns, "device", "auto"))
    threads = getattr(ns, "threads", None) or int(os.environ.get("WORKBENCH_BENCH_THREADS", "0") or 0)
    if threads:
        torch.set_num_threads(threads)
    what = ns.what
    repeats = max(1, ns.repeats or 5)
    as_json = bool(getattr(ns, "json", False))
    t_start = time.perf_counter()
    emit = lambda row: _emit(row, as_json)                     # noqa: E731
    summary = {"bench": "summary", "what": what, "command": " ".join(["python -m benchmarks"] + sys.argv[1:])}
    emit(machine_info(dev))
    if what == "memory":        # not part of `all`: a few GB of RAM and minutes per path at the real vocabulary
        for row in bench_memory(ns.batch_size or 16, ns.max_new_tokens or 64, getattr(ns, "vocab", 151936),
                                mode=getattr(ns, "mode", "tracker")):
            emit(row)
            if "peak_ratio_vs_full_copy" in row:
                summary[f"memory_{row['method']}_peak_ratio_vs_full_copy"] = row["peak_ratio_vs_full_copy"]
                summary[f"memory_{row['method']}_estimate_vs_measured"] = row["estimate_vs_measured"]
        summary["wall_s"] = time.perf_counter() - t_start
        emit(summary)
        return 0
    model_name = ns.model or DEFAULT_MODEL
    if what in ("rollout", "teacher", "all"):
        model, tok, task_name = load_model(model_name, dev)
        dtype = next(model.parameters()).dtype
        if lora:
            model = hf.add_lora(model, hf.LoraSpec(r=lora, alpha=2 * lora)).eval()
            model_name = f"{model_name}+lora{lora}"
    else:
        model, tok, task_name, dtype = None, None, "addition", pick_dtype(dev)
    peak_row = matmul_peak(dev, dtype)
    emit(peak_row)
    peak = peak_row["peak_flops"]
    summary["peak_flops"] = peak

    if what in ("rollout", "all"):
        new = ns.max_new_tokens or DEFAULT_NEW_TOKENS
        batches = [ns.batch_size] if ns.batch_size else list(DEFAULT_BATCHES)
        for B in batches:
            row = bench_rollout(model, tok, task_name, model_name, B, new, repeats, dev, peak)
            emit(row)
            summary[f"rollout_ratio_vs_generate_b{B}"] = row.get("ratio_vs_generate")
        if not ns.model and not ns.batch_size and not lora:
            st, st_tok, st_task = load_model(DEFAULT_STUDENT, dev)
            row = bench_rollout(st, st_tok, st_task, DEFAULT_STUDENT, max(batches), new, repeats, dev, peak)
            emit(row)
            summary[f"rollout_ratio_vs_generate_student_b{max(batches)}"] = row.get("ratio_vs_generate")
    if what in ("teacher", "all") and model_name not in SYNTHETIC:
        st_name = DEFAULT_STUDENT if model_name == DEFAULT_MODEL else model_name
        st, _, _ = load_model(st_name, dev)
        from workbench.tasks import get_task
        row = bench_teacher(model, st, tok, task_name, ns.batch_size or 64,
                            ns.max_new_tokens or get_task(task_name).max_new_tokens, repeats, dev, peak, model_name)
        emit(row)
        summary["teacher_speedup_vs_per_sample_loop"] = row["speedup_vs_per_sample_loop"]
    if what in ("step", "all") and model_name not in SYNTHETIC:
        teacher = ns.model if ns.model and ns.model != DEFAULT_MODEL else None
        for row in bench_step(STEP_METHODS, repeats, dev, peak, batch_size=ns.batch_size if what == "step" else None,
                              max_new_tokens=ns.max_new_tokens if what == "step" else None, teacher=teacher):
            emit(row)
            summary[f"step_{row['method']}_{row['rollout_engine']}_generate_share"] = row["generate_share"]
    if what in ("dashboard", "all"):
        row = bench_dashboard(repeats, dev)
        emit(row)
        summary["dashboard_overhead_frac"] = row.get("overhead_frac")
        # live: the redraws people watch; enough steps per run that once-a-second redraws happen mid-run
        row = bench_dashboard(repeats, dev, steps_per_run=12, mode="live")
        emit(row)
        summary["dashboard_live_overhead_frac"] = row.get("overhead_frac")
    summary["wall_s"] = time.perf_counter() - t_start
    emit(summary)
    return 0


# ---------------------------------------------------------------------------------------------------
# markdown tables from saved JSON lines: python -m benchmarks.bench report FILE.jsonl
# ---------------------------------------------------------------------------------------------------
def report(rows: list[dict]) -> str:
    """docs/benchmarks.md tables from the rows `bench ... --json` printed."""
    f = lambda x, nd=2: "" if x is None else (f"{x:,.{nd}f}" if isinstance(x, float) else str(x))  # noqa: E731
    out = []
    for r in rows:
        if r.get("bench") == "machine":
            out.append(f"Machine: {r.get('nproc')} CPUs, {r.get('cpu')}, torch {r.get('torch')}, transformers "
                       f"{r.get('transformers')}, {r.get('threads')} thread(s), device {r.get('device')}"
                       + (f" ({r['gpu']})" if r.get("gpu") else "")
                       + f"; load average at start {f(r.get('load_avg_1m'))}; {r.get('date')}\n")
        elif r.get("bench") == "matmul_peak":
            out.append(f"Matmul peak ({r['n']}x{r['n']} {r['dtype']}, best of {r['repeats']}): "
                       f"{r['peak_flops'] / 1e9:.1f} GFLOP/s (median {r['median_flops'] / 1e9:.1f})\n")
    ro = [r for r in rows if r.get("bench") == "rollout"]
    if ro:
        # the extra CUDA column: rows up to 2026-11-26 timed an opt-in graph ("ours" was eager), later rows
        # time the eager path ("ours" replays the graph)
        extra = next((k for k in ("ours_cuda_graph", "ours_eager") if any(f"{k}_tokens_per_s" in r for r in ro)), None)
        xlabel = "CUDA graph tok/s | graph / generate |" if extra == "ours_cuda_graph" else "eager tok/s | eager / generate |"
        out.append("Rollout: generated tokens (through EOS) per second; ours = `rollout.sample` (fast engine), "
                   "generic loop = `sample(engine=\"hf\")`, what `sample` ran before:\n")
        out.append("| model | batch | new tokens | T | ours tok/s [min-max] | generate tok/s [min-max] | "
                   "generic loop tok/s | **ours / generate** [min-max] | ours / generic loop |"
                   + (" " + xlabel if extra else "")
                   + " ours % of peak | generate % of peak |")
        out.append("|---|---|---|---|---|---|---|---|---|" + ("---|---|" if extra else "") + "---|---|")
        for r in ro:
            out.append(f"| {r['model']} | {r['batch_size']} | {r['max_new_tokens']} (mean {r['ours_mean_length']:.1f}) "
                       f"| {r['temperature']:g} | {r['ours_tokens_per_s']:,.0f} [{r['ours_tokens_per_s_min']:,.0f}-"
                       f"{r['ours_tokens_per_s_max']:,.0f}] | {r['generate_tokens_per_s']:,.0f} "
                       f"[{r['generate_tokens_per_s_min']:,.0f}-{r['generate_tokens_per_s_max']:,.0f}] | "
                       f"{f(r.get('hf_loop_tokens_per_s'), 0)} | **{r['ratio_vs_generate']:.2f}** "
                       f"[{r['ratio_vs_generate_min']:.2f}-{r['ratio_vs_generate_max']:.2f}] | "
                       f"{f(r.get('ratio_vs_hf_loop'))} |"
                       + (f" {f(r.get(f'{extra}_tokens_per_s'), 0)} | "
                          f"{f(r.get(f'{extra}_ratio_vs_generate'))} |" if extra else "")
                       + f" {100 * r.get('ours_frac_of_peak', 0):.1f} | {100 * r.get('generate_frac_of_peak', 0):.1f} |")
        out.append("")
        parts = [r for r in ro if r.get("parts_matmul_s") is not None]
        if parts:
            out.append("Where one call of ours goes (instrumented calls, medians; the KV floor = bytes decode "
                       "attention reads / this machine's measured read rate; ceiling = generate s / (matmuls + KV "
                       "floor), the best ratio possible if nothing else cost anything):\n")
            out.append("| model | batch | decode kernels | ours s | matmuls s | decode attention s | KV read GB "
                       "| read rate GB/s | KV floor s | everything else s | torch-kernel engine / generate "
                       "| **ceiling / generate** |")
            out.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
            for r in parts:
                att = r.get("parts_attention_s")
                rest = r["parts_total_s"] - r["parts_matmul_s"] - (att or 0)
                out.append(f"| {r['model']} | {r['batch_size']} | {r.get('decode_kernels')} | {r['parts_total_s']:.3f} | "
                           f"{r['parts_matmul_s']:.3f} | {f(att, 3) or 'in the rest'} | {r['parts_kv_bytes'] / 1e9:.2f} | "
                           f"{r['kv_read_bytes_per_s'] / 1e9:.1f} | {r['parts_kv_floor_s']:.3f} | {rest:.3f} | "
                           f"{f(r.get('ours_torch_kernels_ratio_vs_generate'))} | "
                           f"**{r['ceiling_ratio_vs_generate']:.2f}** |")
            out.append("")
            budget = [r for r in parts if r.get("budget_ratio_vs_generate") is not None]
            if budget:
                out.append("The budget: every part at the best rate measured for it, the decode step's other work "
                           "(norms, SiLU, residual adds, kernel calls, Python) free; budget = matmuls + KV bytes at "
                           "the attention kernel's own rate in isolation (same rows, mean context) + prefill outside "
                           "its matmuls + sampling and bookkeeping:\n")
                out.append("| model | batch | matmuls s | KV GB / kernel-alone GB/s (context) = s | prefill s "
                           "(its matmuls) | sampling + bookkeeping s | decode step's other work s | budget s "
                           "| generate s | **budget / generate** |")
                out.append("|---|---|---|---|---|---|---|---|---|---|")
                for r in budget:
                    kv, rate = r["parts_kv_bytes"], r["attention_kernel_bytes_per_s"]
                    other = r["parts_decode_s"] - (r["parts_matmul_s"] - r["parts_prefill_matmul_s"]) - r["parts_attention_s"]
                    out.append(f"| {r['model']} | {r['batch_size']} | {r['parts_matmul_s']:.3f} | {kv / 1e9:.2f} / "
                               f"{rate / 1e9:.1f} ({r['attention_kernel_context']}) = {kv / rate:.3f} | "
                               f"{r['parts_prefill_s']:.3f} ({r['parts_prefill_matmul_s']:.3f}) | {r['parts_loop_s']:.3f} | "
                               f"{other:.3f} | {r['parts_budget_s']:.3f} | {r['generate_s_median']:.3f} | "
                               f"**{r['budget_ratio_vs_generate']:.2f}** |")
                out.append("")
    st = [r for r in rows if r.get("bench") == "step"]
    if st:
        out.append("Training step (full-size defaults; medians; generation share = generate_s / step_s; "
                   "\"hf\" = before, the generic rollout loop):\n")
        out.append("| method | rollout engine | step s [min-max] | generate s | teacher s | update s | other s | "
                   "**generation share** [min-max] | % of peak |")
        out.append("|---|---|---|---|---|---|---|---|---|")
        for r in st:
            eng = r["rollout_engine"] + ("" if r["rollout_engine"] == r["engine_used"] else f" ({r['engine_used']})")
            out.append(f"| {r['method']} ({r['loss']}, {r['generated_by']} generates) | {eng} | {r['step_s']:.3f} "
                       f"[{r['step_s_min']:.3f}-{r['step_s_max']:.3f}] | {r['generate_s']:.3f} | {r['teacher_s']:.3f} | "
                       f"{r['update_s']:.3f} | {r['other_s']:.3f} | **{100 * r['generate_share']:.0f}%** "
                       f"[{100 * r['generate_share_min']:.0f}-{100 * r['generate_share_max']:.0f}] | "
                       f"{100 * r.get('frac_of_peak', 0):.1f} |")
        out.append("")
    mem = [r for r in rows if r.get("bench") == "memory"]
    if mem:
        gib = lambda b: f"{b / 2**30:.2f}"                                     # noqa: E731
        out.append(f"Peak memory of one training step (V = {mem[0]['vocab']:,}; measured = "
                   f"{'live tensor storage' if mem[0]['mode'] == 'tracker' else 'resident set'}, GiB; each path in "
                   "its own process; ratio = chunked / full-copy in this run):\n")
        out.append("| method | B x N | path | measured peak | above resident | planner estimate | planner / measured "
                   "| process RSS peak | **peak ratio** |")
        out.append("|---|---|---|---|---|---|---|---|---|")
        for r in mem:
            ratio = r.get("peak_ratio_vs_full_copy")
            out.append(f"| {r['method']} | {r['batch_size']} x {r['max_new_tokens']} | {r['path']} | "
                       f"{gib(r['measured_peak'])} | {gib(r['measured_dynamic'])} | {gib(r['estimate_peak'])} | "
                       f"{r['estimate_vs_measured']:.3f} | {gib(r['process_peak_rss']) if r.get('process_peak_rss') else ''}"
                       f" | {'**%.2f**' % ratio if ratio is not None else '-'} |")
        out.append("")
    for r in rows:
        if r.get("bench") == "teacher":
            out.append(f"Teacher scoring ({r['model']}, {r['batch_size']} rollouts, {r['tokens_scored']} tokens):\n")
            out.append("| variant | s [min-max] | tokens/s | % of peak | trainer's path is faster by |")
            out.append("|---|---|---|---|---|")
            for v in ("batched_no_grad", "all_logits_no_grad", "per_sample_loop", "batched_with_graph"):
                sp = "-" if v == "batched_no_grad" else f"{r[f'speedup_vs_{v}']:.2f}x"
                out.append(f"| {v}{' (what the trainer does)' if v == r['trainer_uses'] else ''} | {r[f'{v}_s']:.3f} "
                           f"[{r[f'{v}_s_min']:.3f}-{r[f'{v}_s_max']:.3f}] | {r[f'{v}_tokens_per_s']:,.0f} | "
                           f"{100 * r.get(f'{v}_frac_of_peak', 0):.1f} | {sp} |")
            out.append("")
        if r.get("bench") == "dashboard":
            if r.get("skipped"):
                out.append(f"Dashboard: skipped ({r['reason']})\n")
            else:
                out.append(f"Dashboard (static): step {r['step_s_without']:.3f}s without, {r['step_s_with']:.3f}s with "
                           f"(difference {r['overhead_s_per_step'] * 1e3:+.1f} ms, within noise); its own timers: "
                           f"on_step {f(r.get('on_step_ms'), 3)} ms per step, final redraw {f(r.get('redraw_ms'), 1)} ms\n")
        if r.get("bench") == "exactness":
            out.append(f"Exactness {r['model']} {r['dtype']} {r['variant']}: greedy rows equal to generate "
                       f"{r['greedy_rows_equal_generate']:.3f}, tokens {r['greedy_tokens_equal_generate']:.4f}, "
                       f"log-prob vs re-scoring max |diff| {r['logprob_max_abs_diff_vs_rescoring']:.1e}")
    return "\n".join(out)


if __name__ == "__main__":
    import json
    if len(sys.argv) != 3 or sys.argv[1] != "report":
        sys.exit("usage: python -m benchmarks.bench report FILE.jsonl")
    rows = []
    for line in open(sys.argv[2]):
        try:
            rows.append(json.loads(line))
        except ValueError:
            pass
    print(report(rows))
