"""benchmarks.bench's time decomposition of a rollout call (the engine's public `fast_rollout.profiled`): its
byte count against a brute-force sum, the instrumentation removed afterwards, the profiled call's output equal
to an unprofiled one, and the report table built from it. No timing assertions."""
import inspect

import torch

from benchmarks import bench
from workbench import ckernels
from workbench import fast_rollout as fr
from workbench.models import build_model
from workbench.rollout import pad_prompts
from workbench.tasks import get_task
from workbench.tokenizer import build_tokenizer

NO_EOS, PAD = -1, 0      # an end id no token has: every row runs all max_new_tokens steps


def test_time_parts_counts_the_kv_bytes_decode_attention_reads():
    tok = build_tokenizer(get_task("addition").charset)
    model = build_model("tiny-student", tok, "llama", seed=1).eval()
    prompts = [[1, 5, 6], [1, 7], [1, 4, 4, 9]] * 3
    ids, mask = pad_prompts(prompts, PAD)
    B, P = ids.shape
    N = 6
    before = (fr._lin, fr._decode_c, fr._decode, fr._prefill, fr._kernels, ckernels.load)
    parts = bench.time_parts(model, ids, mask, N, NO_EOS, PAD, 1.0, repeats=2)
    assert (fr._lin, fr._decode_c, fr._decode, fr._prefill, fr._kernels, ckernels.load) == before   # undone
    cfg = model.config
    kvw = cfg.num_key_value_heads * (cfg.hidden_size // cfg.num_attention_heads)
    # brute force: decode step t (t = 0 .. N-2) writes slot P + t and reads slots 0 .. P + t, K and V,
    # in every layer, for every row (no row ends)
    expected = sum(B * (P + t + 1) * kvw * 2 * 4 * cfg.num_hidden_layers for t in range(N - 1))
    assert parts["parts_kv_bytes"] == expected
    assert 0 < parts["parts_matmul_s"] < parts["parts_total_s"]
    assert parts["kv_read_bytes_per_s"] > 0 and parts["parts_kv_floor_s"] > 0
    # the phases nest: the prefill's matmuls inside the prefill, prefill + decode steps inside the call
    assert 0 < parts["parts_prefill_matmul_s"] < parts["parts_prefill_s"]
    assert parts["parts_prefill_s"] + parts["parts_decode_s"] < parts["parts_total_s"]
    assert parts["parts_loop_s"] > 0
    if fr.attention_used(model, "cpu") == "c":
        assert 0 < parts["parts_attention_s"] < parts["parts_decode_s"]
        # the budget's attention rate was measured at the mean context the decode steps attended over
        assert parts["attention_kernel_context"] == round(sum(P + t + 1 for t in range(N - 1)) / (N - 1))
        kv_at_rate = parts["parts_kv_bytes"] / parts["attention_kernel_bytes_per_s"]
        assert parts["parts_budget_s"] == (parts["parts_matmul_s"] + kv_at_rate + parts["parts_prefill_s"]
                                           - parts["parts_prefill_matmul_s"] + parts["parts_loop_s"])
    else:
        assert parts["parts_attention_s"] is None and "parts_budget_s" not in parts


def test_attention_kernel_rate_counts_the_bytes_it_reads(monkeypatch):
    """attention_kernel_rate = K and V bytes of every layer / the best round's time: checked with a stub
    kernel and a clock that advances a fixed amount per call."""
    calls, clock = [], iter(range(0, 10 ** 6))
    monkeypatch.setattr(ckernels, "attn_decode", lambda *a: calls.append(a))
    monkeypatch.setattr(bench.time, "perf_counter", lambda: float(next(clock)))
    rate = bench.attention_kernel_rate(H=4, Hkv=2, D=8, layers=3, rows=5, context=7, repeats=2)
    assert len(calls) == 3 * 3                                   # a warm-up round + 2 repeats, 3 layers each
    assert calls[0][4] == 6 and calls[0][2].shape == (5, 7, 16)  # attends over slots 0..6 of a [5, 7, 16] cache
    assert rate == 2 * 3 * 5 * 7 * 16 * 4 / 1.0                  # each round reads the clock twice: 1 "second"


# a rollout row as bench_rollout writes it on CPU with the compiled kernels (values chosen by hand)
ROW = {"bench": "rollout", "model": "m", "batch_size": 4, "max_new_tokens": 8, "temperature": 1.0,
       "ours_mean_length": 8.0, "ours_tokens_per_s": 100.0, "ours_tokens_per_s_min": 90.0,
       "ours_tokens_per_s_max": 110.0, "generate_tokens_per_s": 50.0, "generate_tokens_per_s_min": 45.0,
       "generate_tokens_per_s_max": 55.0, "ratio_vs_generate": 2.0, "ratio_vs_generate_min": 1.9,
       "ratio_vs_generate_max": 2.1, "decode_kernels": "c", "parts_total_s": 0.5, "parts_matmul_s": 0.2,
       "parts_attention_s": 0.15, "parts_kv_bytes": 2e9, "kv_read_bytes_per_s": 2.5e10,
       "parts_kv_floor_s": 0.08, "ours_torch_kernels_ratio_vs_generate": 1.5, "ceiling_ratio_vs_generate": 3.6}


def test_report_has_the_decomposition_table():
    row = dict(ROW)
    text = bench.report([row])
    line = [ln for ln in text.splitlines() if ln.startswith("| m | 4 | c |")]
    assert line and "0.150" in line[0] and "**3.60**" in line[0] and "0.150 | 2.00 | 25.0 | 0.080 | 0.150" in line[0]


def test_report_has_the_budget_table():
    row = dict(ROW, parts_prefill_s=0.1, parts_prefill_matmul_s=0.05, parts_decode_s=0.35, parts_loop_s=0.05,
               attention_kernel_bytes_per_s=2e10, attention_kernel_context=40, parts_budget_s=0.4,
               generate_s_median=1.0, budget_ratio_vs_generate=2.5)
    line = [ln for ln in bench.report([row]).splitlines() if ln.startswith("| m | 4 | 0.200 |")]
    # decode's other work = decode 0.35 - decode matmuls (0.2 - 0.05) - attention 0.15 = 0.05
    assert line and "2.00 / 20.0 (40) = 0.100" in line[0] and "| 0.050 | 0.400 | 1.000 | **2.50** |" in line[0]


def test_profiling_changes_nothing_the_engine_returns_and_the_benchmark_patches_nothing():
    tok = build_tokenizer(get_task("addition").charset)
    model = build_model("tiny-student", tok, "llama", seed=1).eval()
    ids, mask = pad_prompts([[1, 5, 6], [1, 7]], PAD)
    kw = dict(max_new_tokens=5, eos_token_id=NO_EOS, pad_token_id=PAD, temperature=1.0)
    plain = fr.fast_sample(model, ids, mask, generator=torch.Generator().manual_seed(3), **kw)
    with fr.profiled() as rec:
        timed = fr.fast_sample(model, ids, mask, generator=torch.Generator().manual_seed(3), **kw)
    assert all(torch.equal(a, b) for a, b in zip(plain, timed)) and rec["decode"] > 0 and rec["mm"] > 0
    # benchmarks call public APIs only: no assignment to a workbench module's attributes
    src = inspect.getsource(bench)
    assert "setattr(" not in src and not any(f"{m}._" in src for m in ("fr", "R", "trainer", "evaluation", "ckernels"))


def test_bench_memory_measures_both_paths_in_one_run():
    """`python -m benchmarks memory` at a small vocabulary: each path in its own process, the ratio and the
    planner's estimate from the same run, and the report's table from the rows."""
    rows = bench.bench_memory(batch_size=4, max_new_tokens=8, vocab=2048, methods=("opd",))
    assert [r["path"] for r in rows] == ["full-copy", "chunked"]
    old, new = rows
    assert old["chunked_logits"] is False and new["chunked_logits"] is True
    assert new["peak_ratio_vs_full_copy"] == new["measured_peak"] / old["measured_peak"]
    for r in rows:
        assert r["measured_peak"] > r["measured_before"] > 0 and r["estimate_peak"] > 0
        assert r["estimate_vs_measured"] == r["estimate_peak"] / r["measured_peak"]
        assert r["process_peak_rss"] >= r["measured_before"]      # the process held at least its resident tensors
    table = bench.report(rows)
    line = [ln for ln in table.splitlines() if ln.startswith("| opd | 4 x 8 | chunked |")]
    assert line and f"**{new['peak_ratio_vs_full_copy']:.2f}**" in line[0]


def test_trl_side_by_side_tiny_path(tmp_path):
    """The prepared GPU script (benchmarks/trl_side_by_side.py) end to end on CPU-sized models: our two
    methods, TRL's DistillationTrainer, both largest-batch searches and the planner's largest batches."""
    import json
    from benchmarks import trl_side_by_side
    assert trl_side_by_side.main(["--tiny", "--out", str(tmp_path), "--largest-budget-s", "60",
                                  "--budget-gib", "2"]) == 0
    rows = [json.loads(x) for x in (tmp_path / "trl_side_by_side.jsonl").read_text().splitlines()]
    assert [(r["side"], r.get("method"), "search" in r) for r in rows] == [
        ("ours", "opd", False), ("ours", "opd_full", False), ("trl", "DistillationTrainer(beta=1.0)", False),
        ("ours", "opd", True), ("trl", "DistillationTrainer(beta=1.0)", True), ("summary", None, False)]
    for r in rows[:3]:
        assert r["step_s"] > 0 and r["step_tokens_per_s"] > 0 and r["mean_completion"] == 12
    assert rows[0]["peak_bytes"] > 0 and rows[0]["estimate_peak"] > 0            # ours: tracker on CPU
    s = rows[-1]
    assert s["opd_step_speedup_vs_trl"] == rows[2]["step_s"] / rows[0]["step_s"]
    assert s["largest_batch_ours"] == s["largest_batch_trl"] == 8                 # no OOM on CPU: the cap (2 x 4)
    assert s["planner_largest_batch_chunked"] > 0 and s["planner_largest_batch_full_copy"] > 0
