"""workbench.fast_rollout: every fast path keeps the model's distribution exactly.

Greedy output equals `model.generate` (left-padded prompts of different lengths, rows ending with EOS at
different steps, row chunking and compaction on and off, all three decode paths (compiled C kernels, bmm,
SDPA), GQA, biases, non-default rotary scaling, peft LoRA adapters (active, disabled, merged; bf16 base
with float32 adapters)); stored log-probs equal a re-scoring forward and the generic loop's; sampled
token frequencies match the model's exact joint distribution (chi-square at a fixed seed, with a control
showing the bound rejects a slightly wrong distribution); unsupported models fall back to the generic loop.
No timing assertions here: speed is measured by `python -m benchmarks` (docs/benchmarks.md).
"""
import math

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from workbench import fast_rollout as fr
from workbench import zoo
from workbench.batching import prompt_batch
from workbench.models import build_model
from workbench.pairs import load_checkpoint
from workbench.rollout import to_rollout, pad_prompts, positions_from_mask, sample, sequence_logprobs
from workbench.tasks import get_task
from workbench.tokenizer import build_tokenizer

from f32 import assert_greedy_agrees, assert_logprobs_close, logit_tol

PAD, BOS, EOS = 0, 1, 2
PROMPTS = [[BOS, 5, 6], [BOS, 5, 6, 7, 8, 9, 4], [BOS, 9], [BOS, 4, 4, 4, 4], [BOS, 10, 11, 12, 5], [BOS, 7, 7]]
# (row_chunk, compact): the default, neither, and both with chunks that do not divide the batch
VARIANTS = [(None, None), (10_000, False), (4, True)]


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer(get_task("addition").charset)


def _scramble(model, eos_scale=1.0, seed=3, std=0.5):
    """Large random weights (greedy output depends on the context); EOS row scaled so rows end at
    different steps."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2 or name.endswith("bias"):                  # weights and q/k/v biases, not norms
                p.copy_(torch.randn(p.shape, generator=g) * std)
        model.get_output_embeddings().weight[EOS] *= eos_scale
    return model.eval()


def _gqa_qwen2(tok):
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      tie_word_embeddings=False, bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD)
    torch.manual_seed(0)
    return Qwen2ForCausalLM(cfg)


def _rope_llama(tok, rope_type):
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, max_position_embeddings=16, tie_word_embeddings=True,
                      rope_parameters={"rope_type": rope_type, "factor": 2.0, "rope_theta": 10000.0},
                      bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD)
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg)


def _generate(model, ids, mask, max_new):
    out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=max_new,
                         eos_token_id=EOS, pad_token_id=PAD)
    return out[:, ids.shape[1]:]


def _fast(model, ids, mask, max_new, temperature=0.0, generator=None, **kw):
    c, lp = fr.fast_sample(model, ids, mask, max_new_tokens=max_new, eos_token_id=EOS, pad_token_id=PAD,
                           temperature=temperature, generator=generator, **kw)
    return to_rollout(ids, mask, c, lp, EOS)


def _check_consistency(r, max_new):
    B, N = r.completion_ids.shape
    for b in range(B):
        row = r.completion_ids[b].tolist()
        n = row.index(EOS) + 1 if EOS in row else N
        assert r.truncated[b] == (EOS not in row)
        assert row[n:] == [PAD] * (N - n)
        assert r.lengths[b].item() == n
        assert (r.logprobs[b, n:] == 0).all() and (r.logprobs[b, :n] <= 0).all()
    assert N == max_new or (not r.truncated.any() and r.lengths.max().item() == N)   # early exit


ATTENTIONS = ("c", "bmm", "sdpa")


MODELS = {
    "llama": lambda tok: build_model("tiny-student", tok, "llama", seed=1),
    "qwen2": lambda tok: build_model("tiny-student", tok, "qwen2", seed=1),     # q/k/v biases
    "qwen2-gqa": _gqa_qwen2,
    "llama-linear-rope": lambda tok: _rope_llama(tok, "linear"),
    "llama-dynamic-rope": lambda tok: _rope_llama(tok, "dynamic"),               # past max_position_embeddings
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_greedy_equals_generate_on_random_models(tok, name):
    model = MODELS[name](tok)
    assert fr.unsupported_reason(model) is None
    prompts = PROMPTS * 7 + [[BOS, 3, 3, 3, 3, 3, 3, 3, 3]]            # 43 rows, widths 2..9: left padding
    ids, mask = pad_prompts(prompts, PAD)
    lengths = set()
    for eos_scale in (1.0, 3.0):
        _scramble(model, eos_scale)
        for B in (1, 6, 43):
            gen = _generate(model, ids[:B], mask[:B], 20)
            for row_chunk, compact in VARIANTS:
                for attention in ATTENTIONS:
                    if attention == "c" and fr.attention_used(model, "cpu") != "c":   # kernels can't run it
                        continue
                    r = _fast(model, ids[:B], mask[:B], 20, row_chunk=row_chunk, compact=compact,
                              attention=attention)
                    assert_greedy_agrees(model, ids[:B], mask[:B], r.completion_ids, gen)
                    _check_consistency(r, 20)
            lengths |= set(r.lengths.tolist())
    assert 20 in lengths and len(lengths) >= 3, lengths                # EOS at varying steps, and never


@pytest.mark.parametrize("name", ["llama", "qwen2", "qwen2-gqa"])
def test_unfused_weights_path(tok, name, monkeypatch):
    """Models above FUSE_MAX_PARAMS use the weights as views, one matmul per projection: same output."""
    monkeypatch.setattr(fr, "FUSE_MAX_PARAMS", 0)
    model = _scramble(MODELS[name](tok), 3.0)
    ids, mask = pad_prompts(PROMPTS * 3, PAD)
    pl = fr._Plan(model, 8, torch.device("cpu"))
    assert isinstance(pl.layers[0][2], tuple)                          # q/k/v not fused
    for row_chunk, compact in VARIANTS:
        r = _fast(model, ids, mask, 20, row_chunk=row_chunk, compact=compact)
        assert_greedy_agrees(model, ids, mask, r.completion_ids, _generate(model, ids, mask, 20))


@pytest.mark.parametrize("name", ["llama", "qwen2-gqa"])
def test_greedy_equals_generate_in_bfloat16(tok, name):
    """Not float32 (e.g. bf16 on a GPU): the engine makes transformers' SDPA calls, and output stays equal."""
    model = _scramble(MODELS[name](tok), 3.0, std=0.3).to(torch.bfloat16)
    ids, mask = pad_prompts(PROMPTS * 7, PAD)
    gen = _generate(model, ids, mask, 20)
    for row_chunk, compact in VARIANTS:
        assert_greedy_agrees(model, ids, mask, _fast(model, ids, mask, 20, row_chunk=row_chunk,
                                                     compact=compact).completion_ids, gen)


def test_greedy_equals_generate_without_padding(tok):
    model = _scramble(build_model("tiny-student", tok, "llama", seed=2), 2.0)
    ids, mask = pad_prompts([[BOS, 5, 6, 7], [BOS, 9, 9, 4], [BOS, 4, 11, 12]], PAD)
    assert bool(mask.all())
    for row_chunk, compact in VARIANTS:
        assert_greedy_agrees(model, ids, mask, _fast(model, ids, mask, 25, row_chunk=row_chunk,
                                                     compact=compact).completion_ids, _generate(model, ids, mask, 25))


@pytest.mark.parametrize("name", ["llama", "qwen2", "qwen2-gqa"])
@pytest.mark.parametrize("padded", [True, False])
def test_prefill_last_layer_trim_matches_a_full_forward(tok, name, padded):
    """The prefill runs its last layer for the last position only: its logits and every layer's cached
    keys/values must still equal a full forward's (last-position logits, `past_key_values`)."""
    model = _scramble(MODELS[name](tok), 2.0, std=0.2)
    prompts = PROMPTS * 2 if padded else [p[:2] for p in PROMPTS]
    ids, mask = pad_prompts(prompts, PAD)
    assert bool(mask.all()) != padded
    B, T = ids.shape
    pl = fr._Plan(model, T + 4, torch.device("cpu"))
    K = torch.zeros(pl.n_layers, B, T + 4, pl.Hkv * pl.D)
    V = torch.zeros_like(K)
    m4 = None
    if padded:
        pm = mask.bool()
        m4 = torch.ones(T, T, dtype=torch.bool).tril_()[None, None] & pm[:, None, None, :]
        m4 |= torch.eye(T, dtype=torch.bool)[None, None]
    with torch.no_grad():
        logits = fr._prefill(pl, ids, positions_from_mask(mask.long()), m4, K.unbind(0), V.unbind(0))
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions_from_mask(mask.long()),
                    use_cache=True)
    ref = out.logits[:, -1].float()
    assert (logits - ref).abs().max() <= logit_tol(model, ref.abs().max())   # float32 bound: tests/f32.py
    cache = out.past_key_values
    for li in range(pl.n_layers):
        k_ref, v_ref = cache.layers[li].keys, cache.layers[li].values          # [B, Hkv, T, D]
        real = mask.bool()                                                      # padding slots are masked anyway
        k = K[li, :, :T].view(B, T, pl.Hkv, pl.D).transpose(1, 2)
        v = V[li, :, :T].view(B, T, pl.Hkv, pl.D).transpose(1, 2)
        for got, want in ((k, k_ref), (v, v_ref)):      # activations: the same bound at their own scale
            got, want = got.transpose(1, 2)[real], want.transpose(1, 2)[real]
            assert (got - want).abs().max() <= logit_tol(model, want.abs().max())


def _zoo_or_skip(name):
    try:
        zoo.path(name)
    except FileNotFoundError:
        pytest.skip(f"zoo checkpoint {name} not built")
    return load_checkpoint("model", name, "cpu", trainable=False)


@pytest.mark.parametrize("name", ["addition-student", "addition-teacher"])
def test_greedy_equals_generate_on_zoo_models(name):
    model, tk = _zoo_or_skip(name)
    task = get_task("addition")
    problems = (task.problems(40, seed=5, split="test") + task.problems(12, seed=5, split="short")
                + task.problems(12, seed=5, split="long"))
    ids, mask = prompt_batch(tk, problems, task=task)
    assert len(set(mask.sum(-1).tolist())) >= 2                      # prompts of different lengths
    for B in (1, 8, len(problems)):
        gen = _generate(model, ids[:B], mask[:B], task.max_new_tokens)
        r = sample(model, ids[:B], mask[:B], max_new_tokens=task.max_new_tokens, eos_token_id=EOS,
                   pad_token_id=PAD, temperature=0)                    # engine="auto" -> fast
        assert_greedy_agrees(model, ids[:B], mask[:B], r.completion_ids, gen)
        _check_consistency(r, task.max_new_tokens)
    assert (~r.truncated).sum() >= len(problems) // 4                 # it ends its answers with EOS
    r2 = _fast(model, ids, mask, task.max_new_tokens, row_chunk=5, compact=True)
    assert_greedy_agrees(model, ids, mask, r2.completion_ids, gen)


def test_logprobs_match_generic_loop_and_rescoring(tok):
    model = _scramble(build_model("tiny-student", tok, "llama", seed=4), 2.0, std=0.2)
    ids, mask = pad_prompts(PROMPTS * 4, PAD)
    fast = sample(model, ids, mask, max_new_tokens=24, eos_token_id=EOS, pad_token_id=PAD, temperature=0,
                  engine="fast")
    hf = sample(model, ids, mask, max_new_tokens=24, eos_token_id=EOS, pad_token_id=PAD, temperature=0,
                engine="hf")
    assert_greedy_agrees(model, ids, mask, fast.completion_ids, hf.completion_ids)
    same = (fast.completion_ids == hf.completion_ids).all(-1)      # log-probs compared where the tokens agree
    assert_logprobs_close(model, fast, fast.logprobs[same], hf.logprobs[same])
    assert_logprobs_close(model, fast, sequence_logprobs(model, fast), fast.logprobs)
    # sampled rollouts (chunked and compacted) re-score to their stored log-probs too
    g = torch.Generator().manual_seed(0)
    rs = _fast(model, ids, mask, 24, temperature=1.0, generator=g, row_chunk=7, compact=True)
    _check_consistency(rs, 24)
    assert_logprobs_close(model, rs, sequence_logprobs(model, rs), rs.logprobs)


def test_same_generator_same_samples_as_generic_loop_without_chunking(tok):
    """With neither chunking nor compaction, the engine draws exactly as the generic loop does: the same
    seed gives the same samples (up to a rare sample whose uniform draw falls within float noise of a
    boundary: logits agree to ~1e-7, not bitwise)."""
    model = _scramble(build_model("tiny-student", tok, "llama", seed=5), 2.0, std=0.2)
    ids, mask = pad_prompts(PROMPTS * 20, PAD)
    outs = []
    for engine, kw in (("hf", {}), ("fast", dict(row_chunk=10_000, compact=False))):
        g = torch.Generator().manual_seed(7)
        if engine == "hf":
            outs.append(sample(model, ids, mask, max_new_tokens=16, eos_token_id=EOS, pad_token_id=PAD,
                               temperature=1.0, generator=g, engine="hf").completion_ids)
        else:
            outs.append(_fast(model, ids, mask, 16, temperature=1.0, generator=g, **kw).completion_ids)
    assert outs[0].shape == outs[1].shape
    same_rows = (outs[0] == outs[1]).all(-1).float().mean().item()
    assert same_rows >= 0.95, same_rows


# ---- sampled token frequencies ------------------------------------------------------------------------------
def _chi2_999(dof: int) -> float:
    """99.9% quantile of chi-square(dof) (Wilson-Hilferty)."""
    z = 3.090
    return dof * (1 - 2 / (9 * dof) + z * math.sqrt(2 / (9 * dof))) ** 3


@torch.no_grad()
def _exact_joint(model, prompt, temperature=1.0):
    """{(t1, t2): p} of the first two sampled tokens (t2 = PAD after EOS) under the tempered model."""
    ids = torch.tensor([prompt])
    p1 = torch.softmax(model(input_ids=ids).logits[0, -1].double() / temperature, -1)
    V = p1.shape[0]
    cont = torch.cat([ids.expand(V, -1), torch.arange(V)[:, None]], 1)
    p2 = torch.softmax(model(input_ids=cont).logits[:, -1].double() / temperature, -1)
    joint = {}
    for a in range(V):
        if a == EOS:
            joint[(a, PAD)] = p1[a].item()
        else:
            for b in range(V):
                joint[(a, b)] = (p1[a] * p2[a, b]).item()
    return joint


def _chi2_joint(samples, joint, min_expected=5.0):
    """Chi-square of observed (t1, t2) pairs against `joint`, small cells pooled. Returns (stat, dof)."""
    n = samples.shape[0]
    counts = {}
    for a, b in samples.tolist():
        counts[(a, b)] = counts.get((a, b), 0) + 1
    assert set(counts) <= set(joint), set(counts) - set(joint)
    stat, dof, pool_obs, pool_exp = 0.0, -1, 0, 0.0
    for cell, p in joint.items():
        e, o = p * n, counts.get(cell, 0)
        if e >= min_expected:
            stat += (o - e) ** 2 / e
            dof += 1
        else:
            pool_obs, pool_exp = pool_obs + o, pool_exp + e
    if pool_exp > 0:
        stat += (pool_obs - pool_exp) ** 2 / max(pool_exp, 1e-9)
        dof += 1
    return stat, dof


@pytest.fixture(scope="module")
def peaked(tok):
    """A small Llama model whose next-token distributions are far from uniform, EOS likely at step 1."""
    model = build_model("nano", tok, "llama", seed=6)
    return _scramble(model, eos_scale=1.0, seed=8, std=0.6)


@pytest.mark.parametrize("row_chunk,compact", VARIANTS)
def test_sampled_token_frequencies_match_the_model(peaked, row_chunk, compact):
    prompts = [[BOS, 5, 6, 7, 8], [BOS, 9]]          # different lengths: left padding on
    n = 3000
    ids, mask = pad_prompts([p for p in prompts for _ in range(n)], PAD)
    g = torch.Generator().manual_seed(11)
    r = _fast(peaked, ids, mask, 2, temperature=1.0, generator=g, row_chunk=row_chunk, compact=compact)
    assert r.completion_ids.shape[1] == 2
    for i, prompt in enumerate(prompts):
        joint = _exact_joint(peaked, prompt)
        samples = r.completion_ids[i * n:(i + 1) * n]
        stat, dof = _chi2_joint(samples, joint)
        assert dof >= 10 and stat < _chi2_999(dof), (prompt, stat, dof)
        # the control: the same samples against a slightly tempered distribution are rejected
        stat_wrong, _ = _chi2_joint(samples, _exact_joint(peaked, prompt, temperature=1.15))
        assert stat_wrong > _chi2_999(dof), (prompt, stat_wrong, dof)
    # stored log-probs are the model's own (temperature 1) log-probs of the sampled tokens
    assert_logprobs_close(peaked, r, sequence_logprobs(peaked, r), r.logprobs)
    assert r.truncated.any() and (~r.truncated).any()               # some rows ended at step 1 (EOS)


def test_sampled_frequencies_with_temperature(peaked):
    prompt = [BOS, 5, 6, 7, 8]
    n = 4000
    ids, mask = pad_prompts([prompt] * n, PAD)
    g = torch.Generator().manual_seed(12)
    r = _fast(peaked, ids, mask, 2, temperature=0.7, generator=g)
    stat, dof = _chi2_joint(r.completion_ids, _exact_joint(peaked, prompt, temperature=0.7))
    assert stat < _chi2_999(dof), (stat, dof)
    stat_wrong, _ = _chi2_joint(r.completion_ids, _exact_joint(peaked, prompt, temperature=1.0))
    assert stat_wrong > _chi2_999(dof)


# ---- fallback and engine selection --------------------------------------------------------------------------
def test_gpt2_falls_back_to_the_generic_loop(tok):
    model = _scramble(build_model("nano", tok, "gpt2", seed=1), 3.0)
    assert "gpt2" in fr.unsupported_reason(model)
    ids, mask = pad_prompts(PROMPTS, PAD)
    r = sample(model, ids, mask, max_new_tokens=16, eos_token_id=EOS, pad_token_id=PAD, temperature=0)
    assert_greedy_agrees(model, ids, mask, r.completion_ids, _generate(model, ids, mask, 16))
    with pytest.raises(ValueError, match="engine='fast' cannot run this model"):
        sample(model, ids, mask, max_new_tokens=4, eos_token_id=EOS, pad_token_id=PAD, engine="fast")
    with pytest.raises(ValueError, match="engine must be one of"):
        sample(model, ids, mask, max_new_tokens=4, eos_token_id=EOS, pad_token_id=PAD, engine="turbo")


def random_lora_b(model, seed=5):
    """LoRA B factors set to random values (at init B = 0 and the adapters do nothing); eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return model.eval()


def _lora(base, seed=5, **cfg):
    """`base` wrapped with LoRA (peft), its B factors random."""
    peft = pytest.importorskip("peft")
    cfg = {"r": 4, "lora_alpha": 8, "target_modules": "all-linear", **cfg}
    return random_lora_b(peft.get_peft_model(base, peft.LoraConfig(**cfg)), seed)


@pytest.mark.parametrize("name", ["llama", "qwen2", "qwen2-gqa"])
def test_lora_wrapped_model_runs_the_fast_engine_exactly(tok, name, monkeypatch):
    """A peft LoRA student (the real-checkpoint setting) decodes through the fast engine, adapters applied as
    peft applies them: greedy output equals the wrapped model's `generate` with the adapters active,
    disabled (`disable_adapter()`, what pi_ref scoring uses) and merged."""
    model = _lora(_scramble(MODELS[name](tok), 3.0))
    assert fr.unsupported_reason(model) is None
    used, orig = [], fr.fast_sample
    monkeypatch.setattr(fr, "fast_sample", lambda *a, **k: used.append(1) or orig(*a, **k))
    ids, mask = pad_prompts(PROMPTS * 7, PAD)

    def check():
        want = _generate(model, ids, mask, 20)
        r = sample(model, ids, mask, max_new_tokens=20, eos_token_id=EOS, pad_token_id=PAD, temperature=0)
        assert_greedy_agrees(model, ids, mask, r.completion_ids, want)
        assert_logprobs_close(model, r, sequence_logprobs(model, r), r.logprobs)
        return want

    adapted = check()
    with model.disable_adapter():
        assert not torch.equal(check(), adapted)           # the adapters matter, and are switched off
    model.merge_adapter()                                  # merged weights: other arithmetic, same function
    assert_greedy_agrees(model, ids, mask, check(), adapted)
    model.unmerge_adapter()
    assert len(used) == 3


def test_lora_student_with_gradient_checkpointing_still_runs_fast(tok):
    """workbench.hf's default LoRA student trains with gradient checkpointing, which hooks the input
    embedding (`enable_input_require_grads`); that hook changes nothing under no_grad, so the engine runs."""
    from workbench import hf
    model = _lora(_scramble(MODELS["qwen2"](tok), 3.0))
    hf.enable_gradient_checkpointing(model)
    model.enable_input_require_grads()
    assert model.get_base_model().model.embed_tokens._forward_hooks        # the hook is there
    assert fr.unsupported_reason(model) is None
    model.eval()
    ids, mask = pad_prompts(PROMPTS * 7, PAD)
    r = sample(model, ids, mask, max_new_tokens=20, eos_token_id=EOS, pad_token_id=PAD, temperature=0)
    assert_greedy_agrees(model, ids, mask, r.completion_ids, _generate(model, ids, mask, 20))
    model.get_base_model().model.embed_tokens.register_forward_hook(lambda *a: None)   # any other hook: refused
    assert "hooks" in fr.unsupported_reason(model)


def test_lora_in_bfloat16_with_float32_adapters(tok):
    """workbench.hf.add_lora's setting: a bf16 base with float32 adapters (peft casts the input to the
    adapter's dtype and the sum back)."""
    from workbench import hf
    base = _scramble(MODELS["llama"](tok), 3.0).to(torch.bfloat16)
    model = random_lora_b(hf.add_lora(base, hf.LoraSpec(r=4, alpha=8)))
    assert {p.dtype for n, p in model.named_parameters() if "lora" in n} == {torch.float32}
    ids, mask = pad_prompts(PROMPTS * 7, PAD)
    r = sample(model, ids, mask, max_new_tokens=20, eos_token_id=EOS, pad_token_id=PAD, temperature=0)
    assert_greedy_agrees(model, ids, mask, r.completion_ids, _generate(model, ids, mask, 20))


@pytest.mark.parametrize("cfg,reason", [
    (dict(target_modules=["q_proj"], use_dora=True), "DoRA"),
    (dict(target_modules=["q_proj"], lora_bias=True), "biases"),
    (dict(target_modules=["q_proj", "lm_head"]), "lm_head"),
    (dict(target_modules=["q_proj", "embed_tokens"]), "embedding"),
])
def test_lora_variants_the_engine_does_not_mirror_fall_back(tok, cfg, reason):
    model = _lora(_scramble(build_model("nano", tok, "llama", seed=1), 3.0), **cfg)
    assert reason in fr.unsupported_reason(model)
    ids, mask = pad_prompts(PROMPTS, PAD)
    r = sample(model, ids, mask, max_new_tokens=12, eos_token_id=EOS, pad_token_id=PAD, temperature=0)
    assert_greedy_agrees(model, ids, mask, r.completion_ids, _generate(model, ids, mask, 12))


def test_other_peft_adapters_fall_back(tok):
    peft = pytest.importorskip("peft")
    model = peft.get_peft_model(build_model("nano", tok, "llama", seed=1),
                                peft.IA3Config(target_modules=["q_proj", "down_proj"], feedforward_modules=["down_proj"]))
    assert "IA3" in fr.unsupported_reason(model)


def test_hooks_and_other_attention_fall_back(tok):
    model = build_model("nano", tok, "llama", seed=1)
    h = model.model.layers[0].mlp.register_forward_hook(lambda *a: None)
    assert "hooks" in fr.unsupported_reason(model)
    h.remove()
    assert fr.unsupported_reason(model) is None
    model.config._attn_implementation = "eager"
    assert "eager" in fr.unsupported_reason(model)


def check_weights_are_live(tok, device="cpu"):
    """The engine reads the current weights on every call (no stale copies) and restores training mode."""
    model = _scramble(build_model("nano", tok, "llama", seed=1), 2.0).to(device)
    ids, mask = pad_prompts(PROMPTS, PAD, device=device)
    model.train()
    before = sample(model, ids, mask, max_new_tokens=10, eos_token_id=EOS, pad_token_id=PAD, temperature=0)
    assert model.training
    with torch.no_grad():
        model.model.layers[0].mlp.down_proj.weight.mul_(-3.0)
    after = sample(model, ids, mask, max_new_tokens=10, eos_token_id=EOS, pad_token_id=PAD, temperature=0)
    model.eval()
    assert_greedy_agrees(model, ids, mask, after.completion_ids, _generate(model, ids, mask, 10))
    assert not torch.equal(before.completion_ids, after.completion_ids)


def test_training_mode_and_weights_are_live(tok):
    check_weights_are_live(tok)


@pytest.mark.parametrize("name", ["llama", "qwen2-gqa"])
def test_cuda_graph_step_body_on_cpu(tok, name, monkeypatch):
    """The static-shape step a GPU captures (attention over the whole preallocated cache behind a mask, slot
    written through index_copy_) run eagerly on the CPU: greedy output still equals generate."""
    monkeypatch.setattr(fr, "_GRAPH_BODY_ON_CPU", True)
    model = _scramble(MODELS[name](tok), 3.0)
    for prompts in (PROMPTS * 3, [[BOS, 5, 6, 7], [BOS, 9, 9, 4]]):        # with and without left padding
        ids, mask = pad_prompts(prompts, PAD)
        r = _fast(model, ids, mask, 20, cuda_graph=True)
        assert_greedy_agrees(model, ids, mask, r.completion_ids, _generate(model, ids, mask, 20))
    with pytest.raises(ValueError, match="do not combine"):
        _fast(model, ids, mask, 4, cuda_graph=True, compact=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graph_greedy_equals_eager(tok):
    model = _scramble(build_model("tiny-student", tok, "llama", seed=1), 2.0).cuda()
    ids, mask = pad_prompts(PROMPTS, PAD, device="cuda")
    eager = _fast(model, ids, mask, 20)
    graph = _fast(model, ids, mask, 20, cuda_graph=True)
    assert_greedy_agrees(model, ids, mask, eager.completion_ids, graph.completion_ids)
