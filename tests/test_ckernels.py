"""workbench.ckernels: each compiled kernel against an independent torch computation, and the engine's
choice of path (compiled kernels when they build, the torch path otherwise).

Greedy equality of the whole engine with `model.generate` on the compiled path is in
tests/test_fast_rollout.py (attention="c" is one of its variants and the CPU float32 default)."""
import math

import pytest
import torch
import torch.nn.functional as F
from transformers.models.llama.modeling_llama import LlamaRMSNorm

from workbench import ckernels
from workbench import fast_rollout as fr
from workbench.models import build_model
from workbench.rollout import pad_prompts, sample
from workbench.tasks import get_task
from workbench.tokenizer import build_tokenizer

needs_c = pytest.mark.skipif(not ckernels.available(), reason=f"C kernels unavailable: {ckernels.unavailable_reason()}")


@needs_c
def test_rmsnorm_matches_transformers_module():
    g = torch.Generator().manual_seed(0)
    for rows, d in ((1, 8), (37, 64), (128, 128), (5, 896)):
        x = torch.randn(rows, d, generator=g) * 3
        norm = LlamaRMSNorm(d, eps=1e-6)
        with torch.no_grad():
            norm.weight.copy_(torch.randn(d, generator=g))
            ref = norm(x)
        got = ckernels.rmsnorm(x, norm.weight.detach(), 1e-6)
        x64, w64 = x.double(), norm.weight.detach().double()
        exact = w64 * x64 * torch.rsqrt(x64.pow(2).mean(-1, keepdim=True) + 1e-6)
        # float32 bound (tests/f32.py): the mean of d squares carries ~sqrt(d)*eps relative error, the rest a
        # few eps; both float32 implementations must sit within it of the float64 value (not of each other's bits)
        tol = 16 * torch.finfo(torch.float32).eps * d ** 0.5 * exact.abs().max().item()
        for impl in (got, ref):
            assert (impl.double() - exact).abs().max() <= tol, (rows, d, (impl.double() - exact).abs().max(), tol)


@needs_c
def test_silu_mul_matches_torch_over_the_float_range():
    # a wide range: exp's clamps (|x| > 87), its underflow to 0 and overflow to inf all go through silu
    g = torch.linspace(-120, 120, 24_001)
    u = torch.linspace(-3, 3, 24_001).flip(0)
    gu = torch.stack([g, u], 0).reshape(1, -1)                     # one row: [gate | up]
    got = ckernels.silu_mul(gu, g.numel())[0]
    ref = (F.silu(g.double()) * u.double())
    err = ((got.double() - ref).abs() / ref.abs().clamp_min(1e-30))
    assert err.max() < 2e-6, err.max()                            # a few float32 ulps, exp included
    assert torch.isfinite(got).all()


@needs_c
def test_silu_mul_rejects_a_bad_width():
    with pytest.raises(ValueError, match="2 \\* inter"):
        ckernels.silu_mul(torch.zeros(2, 10), 4)


def _reference_attention(qkv, cs, K, V, slot, mask, H, Hkv, D, scale):
    """Rotary, cache write and attention written out with torch ops (softmax over explicit scores, GQA by
    repeating kv heads): an independent computation of what attn_decode must do."""
    B = qkv.shape[0]
    q = qkv[:, :H * D].view(B, H, D).double()
    k = qkv[:, H * D:(H + Hkv) * D].view(B, Hkv, D).double()
    v = qkv[:, (H + Hkv) * D:].view(B, Hkv, D).double()
    cos, sin = cs[:, None, :D].double(), cs[:, None, D:].double()   # sin has rotate_half's sign folded in

    def rot(x):
        return x * cos + torch.cat([x[..., D // 2:], x[..., :D // 2]], -1) * sin
    K2, V2 = K.clone().double(), V.clone().double()
    K2[:, slot] = rot(k).reshape(B, -1)
    V2[:, slot] = v.reshape(B, -1)
    n = slot + 1
    kk = K2[:, :n].view(B, n, Hkv, D).permute(0, 2, 1, 3).repeat_interleave(H // Hkv, 1)
    vv = V2[:, :n].view(B, n, Hkv, D).permute(0, 2, 1, 3).repeat_interleave(H // Hkv, 1)
    s = (rot(q) * scale)[:, :, None, :] @ kk.transpose(-1, -2)          # [B, H, 1, n]
    if mask is not None:
        s = s + mask[:, None, :, :n].double()
    return (torch.softmax(s, -1) @ vv).reshape(B, H * D), K2, V2


@needs_c
@pytest.mark.parametrize("H,Hkv,D", [(4, 4, 32), (4, 2, 16), (14, 2, 64), (2, 1, 8), (2, 2, 24)])
def test_attn_decode_matches_explicit_softmax_attention(H, Hkv, D):
    g = torch.Generator().manual_seed(H * 100 + D)
    B, S = 9, 20
    for slot in (0, 3, 13, S - 1):
        qkv = torch.randn(B, (H + 2 * Hkv) * D, generator=g)
        cs = torch.randn(B, 2 * D, generator=g)
        K = torch.randn(B, S, Hkv * D, generator=g)
        V = torch.randn(B, S, Hkv * D, generator=g)
        mask = torch.zeros(B, 1, S)
        mask[:4, 0, :min(2, slot)] = float("-inf")                   # left padding on some rows
        for m in (None, mask):
            ref, K_ref, V_ref = _reference_attention(qkv, cs, K, V, slot, m, H, Hkv, D, 0.3)
            K1, V1 = K.clone(), V.clone()
            got = ckernels.attn_decode(qkv.clone(), cs, K1, V1, slot, m, H, Hkv, D, 0.3)
            # against a float64 reference; float32 error: scores carry ~sqrt(D)*eps*|q||k|, the weighted sum
            # ~sqrt(S)*eps*max|V| (here |q|,|k|,|V| ~ 1-4, D <= 64, S = 20: ~1e-6), so 2e-5 is a wide margin
            assert torch.allclose(got.double(), ref, atol=2e-5, rtol=1e-5), (slot, (got - ref).abs().max())
            assert torch.allclose(K1.double(), K_ref, atol=1e-5) and torch.equal(V1.double(), V_ref)


@needs_c
def test_attn_decode_on_a_row_slice_of_a_bigger_cache():
    """The engine passes the live rows of a compacted cache: a leading slice whose rows keep their stride."""
    g = torch.Generator().manual_seed(1)
    H, Hkv, D, S = 4, 2, 16, 12
    big_K, big_V = torch.randn(2, 10, S, Hkv * D, generator=g), torch.randn(2, 10, S, Hkv * D, generator=g)
    K, V = big_K[1, :6], big_V[1, :6]
    qkv = torch.randn(6, (H + 2 * Hkv) * D, generator=g)
    cs = torch.randn(6, 2 * D, generator=g)
    ref, K_ref, _ = _reference_attention(qkv, cs, K, V, 7, None, H, Hkv, D, 0.25)
    untouched = big_K[1, 6:].clone()
    got = ckernels.attn_decode(qkv.clone(), cs, K, V, 7, None, H, Hkv, D, 0.25)
    assert torch.allclose(got.double(), ref, atol=2e-5)
    assert torch.allclose(big_K[1, :6].double(), K_ref, atol=1e-5)
    assert torch.equal(big_K[1, 6:], untouched)


@needs_c
def test_attn_decode_rejects_bad_input():
    qkv, cs = torch.zeros(2, 4 * 8 * 3), torch.zeros(2, 16)
    K = V = torch.zeros(2, 5, 32)
    with pytest.raises(ValueError, match="slot"):
        ckernels.attn_decode(qkv, cs, K, V, 5, None, 4, 4, 8, 1.0)
    with pytest.raises(ValueError, match="shape mismatch"):
        ckernels.attn_decode(torch.zeros(2, 7), cs, K, V, 0, None, 4, 4, 8, 1.0)
    with pytest.raises(ValueError, match="float32"):
        ckernels.attn_decode(qkv.double(), cs, K, V, 0, None, 4, 4, 8, 1.0)


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer(get_task("addition").charset)


def test_engine_picks_the_compiled_path_only_where_it_runs(tok, monkeypatch):
    model = build_model("tiny-student", tok, "llama", seed=1)
    pl = fr._Plan(model, 8, "cpu")
    assert (fr.c_unsupported_reason(pl, "cpu") is None) == ckernels.available()
    assert fr.attention_used(model, "cpu") == ("c" if ckernels.available() else "bmm")
    assert "float32" in fr.c_unsupported_reason(fr._Plan(model.to(torch.bfloat16), 8, "cpu"), "cpu")
    model = model.float()
    ids, mask = pad_prompts([[1, 5, 6], [1, 7]], 0)
    with pytest.raises(ValueError, match="attention must be"):
        fr.fast_sample(model, ids, mask, max_new_tokens=5, eos_token_id=2, pad_token_id=0, attention="C")
    # not buildable (no compiler, build failure, or disabled): auto keeps the torch path, "c" says why
    monkeypatch.setattr(ckernels, "_tried", True)
    monkeypatch.setattr(ckernels, "_lib", None)
    monkeypatch.setattr(ckernels, "_reason", "RuntimeError: no C compiler found")
    assert "no C compiler" in fr.c_unsupported_reason(pl, "cpu")
    assert fr.attention_used(model, "cpu") == "bmm"
    r = sample(model, ids, mask, max_new_tokens=5, eos_token_id=2, pad_token_id=0, temperature=0)
    assert r.completion_ids.shape[0] == 2
    with pytest.raises(ValueError, match="no C compiler"):
        fr.fast_sample(model, ids, mask, max_new_tokens=5, eos_token_id=2, pad_token_id=0, temperature=0,
                       attention="c")


def test_build_failure_is_reported_not_raised(monkeypatch, tmp_path):
    monkeypatch.setattr(ckernels, "_tried", False)
    monkeypatch.setattr(ckernels, "_lib", None)
    monkeypatch.setenv("OPD_WORKBENCH_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", "false")                                  # a "compiler" that always fails
    monkeypatch.delenv("OPD_WORKBENCH_NO_C", raising=False)            # the suite may run with the kernels off
    monkeypatch.setattr(ckernels, "_compiler", lambda: "false")
    assert ckernels.load() is None
    assert "failed" in ckernels.unavailable_reason()
    assert not list(tmp_path.rglob("*.so"))                            # nothing half-written left behind


def test_cache_key_depends_on_the_cpu(monkeypatch):
    """A library built for one CPU (-march=native) is never loaded on another sharing the cache directory."""
    src = ckernels.SOURCE.read_bytes()
    keys = set()
    for fp in ("flags: avx2", "flags: avx512f"):
        monkeypatch.setattr(ckernels, "_cpu_fingerprint", lambda fp=fp: fp)
        keys.add(ckernels._library_path("cc", src).name)
    assert len(keys) == 2


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("OPD_WORKBENCH_CACHE", str(tmp_path / "a"))
    assert ckernels.cache_dir() == tmp_path / "a" / "kernels"
    monkeypatch.delenv("OPD_WORKBENCH_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert ckernels.cache_dir() == tmp_path / "xdg" / "opd-workbench" / "kernels"
