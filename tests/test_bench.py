"""workbench.bench's time decomposition of a rollout call: its byte count against a brute-force sum, the
instrumentation removed afterwards, and the report table built from it. No timing assertions."""
from workbench import bench, ckernels
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
    before = (fr._lin, fr._decode_c, fr._decode, ckernels.load)
    parts = bench.time_parts(model, ids, mask, N, NO_EOS, PAD, 1.0, repeats=2)
    assert (fr._lin, fr._decode_c, fr._decode, ckernels.load) == before          # instrumentation undone
    cfg = model.config
    kvw = cfg.num_key_value_heads * (cfg.hidden_size // cfg.num_attention_heads)
    # brute force: decode step t (t = 0 .. N-2) writes slot P + t and reads slots 0 .. P + t, K and V,
    # in every layer, for every row (no row ends)
    expected = sum(B * (P + t + 1) * kvw * 2 * 4 * cfg.num_hidden_layers for t in range(N - 1))
    assert parts["parts_kv_bytes"] == expected
    assert 0 < parts["parts_matmul_s"] < parts["parts_total_s"]
    assert parts["kv_read_bytes_per_s"] > 0 and parts["parts_kv_floor_s"] > 0
    if fr.attention_used(model, "cpu") == "c":
        assert 0 < parts["parts_attention_s"] < parts["parts_total_s"]
    else:
        assert parts["parts_attention_s"] is None


def test_report_has_the_decomposition_table():
    row = {"bench": "rollout", "model": "m", "batch_size": 4, "max_new_tokens": 8, "temperature": 1.0,
           "ours_mean_length": 8.0, "ours_tokens_per_s": 100.0, "ours_tokens_per_s_min": 90.0,
           "ours_tokens_per_s_max": 110.0, "generate_tokens_per_s": 50.0, "generate_tokens_per_s_min": 45.0,
           "generate_tokens_per_s_max": 55.0, "ratio_vs_generate": 2.0, "ratio_vs_generate_min": 1.9,
           "ratio_vs_generate_max": 2.1, "decode_kernels": "c", "parts_total_s": 0.5, "parts_matmul_s": 0.2,
           "parts_attention_s": 0.15, "parts_kv_bytes": 2e9, "kv_read_bytes_per_s": 2.5e10,
           "parts_kv_floor_s": 0.08, "ours_torch_kernels_ratio_vs_generate": 1.5, "ceiling_ratio_vs_generate": 3.6}
    text = bench.report([row])
    line = [ln for ln in text.splitlines() if ln.startswith("| m | 4 | c |")]
    assert line and "0.150" in line[0] and "**3.60**" in line[0] and "0.150 | 2.00 | 25.0 | 0.080 | 0.150" in line[0]
