"""A fast decoding loop for Llama/Qwen2-style models: static KV cache, no per-token HF machinery.

`workbench.rollout.sample(..., engine="auto")` (the default) uses this engine when
`unsupported_reason(model)` is None, and the generic loop (`engine="hf"`: a `DynamicCache` and
`model(...)` per token) otherwise: GPT-2 and other architectures, peft adapters other than plain LoRA on
the q/k/v/o and MLP projections (DoRA, LoRA biases, LoRA on embeddings or lm_head, quantized bases, IA3...),
models with hooks, non-`nn.Linear` projections or parameters on several devices, sliding-window layers,
attention implementations other than sdpa.

What it does instead of calling `model(...)` per token:
  * the KV cache is preallocated once per call, [layers, batch, prompt + max_new_tokens, kv_heads*head_dim];
    each step writes one slot in place and attends over the filled prefix (no `torch.cat` of the whole
    cache per step, no Cache objects, no per-step mask construction: padding is one preallocated buffer);
  * the model's own parameters are used directly (`torch.mm`/`F.embedding` on the embedding, norm, q/k/v/o
    and MLP weights, the rotary module's own cos/sin), with q/k/v and gate/up fused into one matmul each
    for small models: the HF modules' op sequence minus module-call, decorator, mask and output overhead;
    a LoRA projection (peft) adds its adapters' two matmuls as peft's forward does (`_Lora`), unfused;
  * on CPU in float32, everything between the matmuls of a decode step (RMSNorm, rotary, cache write,
    attention, SiLU x up) runs in the fused C kernels of `workbench.ckernels`, compiled on first use
    (attention="c"); without a C compiler, decode attention is two small batched GEMMs per layer (scores of
    all heads of a row against a block-diagonal query matrix, then values; attention="bmm"), several times
    faster than SDPA's kernel at query length 1; prefill and the CUDA path make the same SDPA calls
    transformers makes;
  * the prefill runs the last layer for the last prompt position only (the other positions need only
    that layer's keys and values);
  * rows that have ended are dropped from the batch as they end (compaction), the loop stops when every
    row has ended, and on CPU the batch is decoded in chunks of DEFAULT_CPU_ROW_CHUNK rows so that a
    chunk's KV cache stays in the CPU caches;
  * on CUDA (`cuda_graph=None` -> on there): the decode step is captured once per call in a CUDA graph
    (static shapes: attention over the whole cache behind a mask, no compaction) and replayed, so a step
    costs one graph launch instead of a few hundred kernel launches (measured 4-7x `generate` on an H200;
    the eager path with compaction was slower than `generate` there, docs/benchmarks.md "GPU").

Exactness (tests/test_fast_rollout.py): greedy output equals `model.generate`; stored log-probs equal a
re-scoring forward to float noise; sampling uses the generic loop's procedure (softmax of the filtered,
tempered logits, one `torch.multinomial` per step with the caller's generator), so sampled frequencies
match the model's exact distribution. Speed: `python -m benchmarks rollout` (docs/benchmarks.md).
"""
from __future__ import annotations

import contextlib
import time

import torch
import torch.nn.functional as F

from . import ckernels
from .sampling import is_peft, pick, positions_from_mask

_kernels = ckernels.load      # the compiled kernels `_decode_c` calls (`profiled` times their attention calls)

SUPPORTED_TYPES = ("llama", "qwen2")
SUPPORTED_CLASSES = ("LlamaForCausalLM", "Qwen2ForCausalLM")


def unsupported_reason(model) -> str | None:
    """None when the fast engine can run `model` exactly; else a short reason (the generic loop is used)."""
    if is_peft(model):
        kinds = {str(getattr(c, "peft_type", "")).split(".")[-1] for c in model.peft_config.values()}
        if kinds != {"LORA"}:
            return f"peft adapters of type {sorted(kinds)} (only LoRA is mirrored)"
        model = model.get_base_model()
    elif type(model).__name__.startswith("Peft"):
        return "peft-wrapped model without peft_config"
    cfg = getattr(model, "config", None)
    if cfg is None:
        return "no config"
    mt = getattr(cfg, "model_type", None)
    if mt not in SUPPORTED_TYPES:
        return f"model_type {mt!r} not in {SUPPORTED_TYPES}"
    if type(model).__name__ not in SUPPORTED_CLASSES:
        return f"class {type(model).__name__} (supported: {', '.join(SUPPORTED_CLASSES)}, exactly)"
    devices = {p.device for p in model.parameters()}
    if len(devices) != 1:
        return f"parameters on {len(devices)} devices"
    inner = getattr(model, "model", None)
    for name in ("embed_tokens", "layers", "norm", "rotary_emb"):
        if inner is None or not hasattr(inner, name):
            return f"model.model.{name} missing"
    if not isinstance(getattr(model, "lm_head", None), torch.nn.Linear):
        return "lm_head is not nn.Linear"
    impl = getattr(cfg, "_attn_implementation", None)
    if impl != "sdpa":
        return f"attention implementation {impl!r} (fast engine mirrors sdpa only)"
    layer_types = getattr(cfg, "layer_types", None)
    if layer_types is not None and any(t != "full_attention" for t in layer_types):
        return "sliding-window / non-full attention layers"
    if getattr(cfg, "use_sliding_window", False):
        return "sliding window attention"
    if len(inner.layers) != cfg.num_hidden_layers:
        return "layer count differs from config"
    if type(inner.embed_tokens) is not torch.nn.Embedding:
        return "embedding is not nn.Embedding"
    projections = set()
    for layer in inner.layers:
        for lin in _projections(layer):
            projections.add(lin)
            if type(lin) is not torch.nn.Linear:
                why = _lora_reason(lin)
                if why is not None:
                    return why
                projections.update(lin.modules())
    for mod in model.modules():
        hooks = [h for h in mod._forward_hooks.values()
                 if not (mod is inner.embed_tokens and getattr(h, "__name__", "") in _HARMLESS_EMBEDDING_HOOKS)]
        if hooks or mod._forward_pre_hooks:
            return f"forward hooks on {type(mod).__name__}"
        if "lora" in type(mod).__name__.lower() and mod not in projections:
            return f"LoRA module {type(mod).__name__} outside the q/k/v/o and MLP projections"
    for layer in inner.layers:
        a = layer.self_attn
        for norm in (layer.input_layernorm, layer.post_attention_layernorm):
            if not hasattr(norm, "variance_epsilon") or not type(norm).__name__.endswith("RMSNorm"):
                return f"norm of type {type(norm).__name__}"
        if getattr(a, "sliding_window", None):
            return "sliding window attention"
    if not type(inner.norm).__name__.endswith("RMSNorm"):
        return f"final norm of type {type(inner.norm).__name__}"
    return None


# Forward hooks that gradient checkpointing with adapters puts on the input embedding (transformers'
# `enable_input_require_grads`, peft's equivalent): they mark the embedding output as requiring grad, which
# changes nothing under the engine's no_grad, so a LoRA student with checkpointing still decodes fast.
_HARMLESS_EMBEDDING_HOOKS = ("make_inputs_require_grads", "make_inputs_require_grad")


def is_supported(model) -> bool:
    return unsupported_reason(model) is None


def _projections(layer):
    """A decoder layer's seven projections (q, k, v, o, gate, up, down)."""
    a, m = layer.self_attn, layer.mlp
    return a.q_proj, a.k_proj, a.v_proj, a.o_proj, m.gate_proj, m.up_proj, m.down_proj


def _lora_reason(lin) -> str | None:
    """None when `lin` is a peft LoRA layer over an nn.Linear whose forward `_lin` mirrors (plain LoRA:
    base(x) + B(A(dropout(x))) * scaling per active adapter, input cast to the adapter's dtype, sum cast
    back); else why not. Dropout is not mirrored: `rollout.sample` puts the model in eval mode."""
    base = getattr(lin, "base_layer", None)
    if base is None or not hasattr(lin, "lora_A"):
        return f"projection of type {type(lin).__name__} (not nn.Linear)"
    if type(base) is not torch.nn.Linear:
        return f"LoRA over a {type(base).__name__} (not nn.Linear; e.g. a quantized base)"
    if lin.disable_adapters and lin.merged:
        return "merged LoRA adapters with adapters disabled (peft unmerges them in its forward)"
    for name in lin.active_adapters:
        if name not in lin.lora_A:
            continue
        if name in getattr(lin, "lora_variant", {}) or getattr(lin, "use_dora", {}).get(name, False):
            return f"LoRA variant on adapter {name!r} (e.g. DoRA)"
        A, B = lin.lora_A[name], lin.lora_B[name]
        if type(A) is not torch.nn.Linear or type(B) is not torch.nn.Linear or A.bias is not None or B.bias is not None:
            return f"LoRA adapter {name!r} with biases or non-Linear factors"
        if A.weight.dtype != base.weight.dtype and not getattr(lin, "cast_input_dtype_enabled", True):
            return "LoRA input dtype casting disabled"
    return None


class _Lora:
    """A LoRA projection as `_lin` takes it: the base weight (as `_Plan` lays out any weight) and, per active
    unmerged adapter, (A.t(), B.t(), scaling) -- the adapter's own parameters, read at call time."""

    def __init__(self, base_wt, lin):
        self.base = base_wt
        self.adapters = []
        if not (lin.disable_adapters or lin.merged):
            for name in lin.active_adapters:
                if name in lin.lora_A:
                    self.adapters.append((lin.lora_A[name].weight.t(), lin.lora_B[name].weight.t(),
                                          lin.scaling[name]))


def _rms_exact(x, w, eps):
    # exactly LlamaRMSNorm / Qwen2RMSNorm.forward
    dt = x.dtype
    h = x.to(torch.float32)
    var = h.pow(2).mean(-1, keepdim=True)
    h = h * torch.rsqrt(var + eps)
    return w * h.to(dt)


def _rms_fp32(x, w, eps):
    # _rms_exact without its (no-op for float32) casts: the same ops on the same values, fewer dispatches
    # than F.rms_norm, whose CPU implementation is itself a composite that adds casts
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


class _Plan:
    """What one call needs from the model: its parameters (q/k/v and gate/up concatenated into one matmul
    each; transposed views for `torch.mm`, which is what `F.linear` runs on 2-D inputs), dimensions, and the
    rotary table. Built per call (cheap), so optimiser updates between calls are always seen."""

    def __init__(self, model, max_len: int, device):
        n_params = sum(p.numel() for p in model.parameters())
        if is_peft(model):
            model = model.get_base_model()
        inner, cfg = model.model, model.config
        a0 = inner.layers[0].self_attn
        self.D = a0.head_dim
        self.H = cfg.num_attention_heads
        self.Hkv = cfg.num_key_value_heads
        self.nrep = self.H // self.Hkv
        self.scaling = a0.scaling
        self.embed = inner.embed_tokens.weight
        self.dtype = self.embed.dtype
        self.rms = _rms_fp32 if self.dtype == torch.float32 else _rms_exact
        self.norm_w, self.norm_eps = inner.norm.weight, inner.norm.variance_epsilon
        # Small models (the per-call copies cost well under a millisecond): q/k/v and gate/up fused into one
        # matmul each, and on CPU every weight as a contiguous [in, out] copy (MKL's mm is faster on those than
        # on transposed views: 2x at one row, 5-40% at 32-256 rows). Larger models: transposed views, no
        # copies (a per-call copy of their weights would cost more than the dispatches it saves).
        # LoRA projections (peft) are never fused: each keeps its adapters' two extra matmuls (see `_Lora`).
        small = n_params <= FUSE_MAX_PARAMS
        copy = small and torch.device(device).type != "cuda"
        lora = any(hasattr(lin, "base_layer") for layer in inner.layers for lin in _projections(layer))
        fuse = small and not lora

        def one(lin):
            w = getattr(lin, "base_layer", lin).weight
            w = w.t().contiguous() if copy else w.t()
            return _Lora(w, lin) if hasattr(lin, "base_layer") else w

        def wt(*lins):
            if fuse and len(lins) > 1:
                return torch.cat([lin.weight.t() for lin in lins], 1).contiguous()
            return tuple(one(lin) for lin in lins) if len(lins) > 1 else one(lins[0])

        def bias(*lins):
            bs = tuple(getattr(lin, "base_layer", lin).bias for lin in lins)
            if bs[0] is None:
                return None
            return torch.cat(bs, 0) if fuse else (bs if len(bs) > 1 else bs[0])

        self.lm_wt, self.lm_b = wt(model.lm_head), model.lm_head.bias
        self.rotary = inner.rotary_emb
        self.layers = []
        for layer in inner.layers:
            a, m = layer.self_attn, layer.mlp
            act = F.silu if type(m.act_fn).__name__ in ("SiLUActivation", "SiLU") else m.act_fn
            self.layers.append((layer.input_layernorm.weight, layer.input_layernorm.variance_epsilon,
                                wt(a.q_proj, a.k_proj, a.v_proj), bias(a.q_proj, a.k_proj, a.v_proj),
                                wt(a.o_proj), bias(a.o_proj),
                                layer.post_attention_layernorm.weight, layer.post_attention_layernorm.variance_epsilon,
                                wt(m.gate_proj, m.up_proj), bias(m.gate_proj, m.up_proj),
                                wt(m.down_proj), bias(m.down_proj), act,
                                getattr(m.gate_proj, "base_layer", m.gate_proj).weight.shape[0]))
        self.n_layers = len(self.layers)
        # rotary table [max_len, 2, D]: (cos, sin with rotate_half's sign folded in) from the rotary module itself
        # (elementwise in the position, so a lookup equals calling it per step). rotate_half(x) * sin ==
        # swap_halves(x) * sin_signed exactly. Dynamic rope types (their frequencies depend on the largest
        # position in the batch so far: stateful, batch-dependent) call the module every step instead, and
        # the whole batch is decoded together, without compaction, as `generate` does.
        self.table = None
        rope = getattr(cfg, "rope_parameters", None) or {}
        rope_type = str(rope.get("rope_type", "default"))
        self.dynamic_rope = "dynamic" in rope_type or rope_type == "longrope"
        if not self.dynamic_rope:
            cos, sin = self.rotary(self.embed[:1][None], torch.arange(max_len, device=device)[None])
            self.table = torch.stack([cos[0], self._signed(sin[0])], 1).reshape(max_len, 2 * self.D)
        # head -> kv head selection for the block-diagonal decode attention (GQA included), with the scale
        h = torch.arange(self.H, device=device)
        sel = (h[:, None] // self.nrep == torch.arange(self.Hkv, device=device)[None]).to(self.dtype)
        self.selx = (sel * self.scaling)[:, :, None]                         # [H, Hkv, 1]

    def _signed(self, sin):
        half = self.D // 2
        return torch.cat([-sin[..., :half], sin[..., half:]], -1)

    def cos_sin(self, x, pos):
        """(cos, sin_signed), each [*pos.shape, D], for position ids `pos`."""
        if self.table is not None:
            cs = F.embedding(pos, self.table).view(*pos.shape, 2, self.D)
            return cs[..., 0, :], cs[..., 1, :]
        cos, sin = self.rotary(x, pos)
        return cos, self._signed(sin)


def _lin(x, wt, b):
    """F.linear(x, w, b) for a 2-D x given wt = w.t() (on CPU a contiguous copy: same math, float noise at
    one row), as one mm/addmm call without the dispatch layers. A tuple wt (unfused large models): the
    outputs of each part, concatenated."""
    if isinstance(wt, tuple):
        bs = b if b is not None else (None,) * len(wt)
        return torch.cat([_lin(x, w, bb) for w, bb in zip(wt, bs)], -1)
    if isinstance(wt, _Lora):                  # peft's lora.Linear.forward, op for op
        out = _lin(x, wt.base, b)
        if wt.adapters:
            dt = out.dtype
            for at, bt, scaling in wt.adapters:
                x = x.to(at.dtype)
                out = out + torch.mm(torch.mm(x, at), bt) * scaling
            out = out.to(dt)
        return out
    return torch.mm(x, wt) if b is None else torch.addmm(b, x, wt)


def _swap_halves(x, D):
    """cat(x[..., D/2:], x[..., :D/2]) (one kernel; faster than flip or cat on CPU)."""
    return torch.roll(x, D // 2, -1)


def _prefill(pl: _Plan, ids, pos, mask4, Ks, Vs, use_c: bool = False):
    """Forward over the prompts [B, P] (same ops and SDPA calls as transformers' sdpa path), writing keys
    and values into cache slots [0, P). Returns the last position's logits [B, V] (float).

    The last layer runs attention, o-projection and MLP for the last position only: the other positions'
    outputs of that layer feed nothing (only their keys and values are kept), so skipping them changes no
    result used; measured 1.23x faster prefill on the zoo teacher (4 layers, 128 rows x 13 tokens).
    use_c: RMSNorm and SiLU x up by the C kernels (as in `_decode_c`)."""
    B, T = ids.shape
    rms = ckernels.rmsnorm if use_c else pl.rms
    D, H, Hkv = pl.D, pl.H, pl.Hkv
    x = F.embedding(ids, pl.embed)
    cos, ss = pl.cos_sin(x, pos)
    cos_u, ss_u = cos.unsqueeze(1), ss.unsqueeze(1)
    h = x.reshape(B * T, -1)
    for li, (ln1, e1, qkv_wt, qkv_b, o_wt, o_b, ln2, e2, gu_wt, gu_b, d_wt, d_b, act, inter) in enumerate(pl.layers):
        last = li == pl.n_layers - 1
        qkv = _lin(rms(h, ln1, e1), qkv_wt, qkv_b).view(B, T, -1)
        q = qkv[..., :H * D].reshape(B, T, H, D).transpose(1, 2)
        k = qkv[..., H * D:(H + Hkv) * D].reshape(B, T, Hkv, D).transpose(1, 2)
        v = qkv[..., (H + Hkv) * D:].reshape(B, T, Hkv, D)
        cq, sq, m = cos_u, ss_u, mask4
        if last:                                     # only the last position's query
            q, cq, sq = q[:, :, -1:], cos_u[:, :, -1:], ss_u[:, :, -1:]
            m = None if mask4 is None else mask4[:, :, -1:]
        q = (q * cq) + (_swap_halves(q, D) * sq)
        k = (k * cos_u) + (_swap_halves(k, D) * ss_u)
        Ks[li][:, :T] = k.transpose(1, 2).reshape(B, T, Hkv * D)
        Vs[li][:, :T] = v.reshape(B, T, Hkv * D)
        v = v.transpose(1, 2)
        Tq = q.shape[2]
        causal = m is None and Tq > 1                # the last query alone sees every key: no mask needed
        if pl.nrep > 1:
            if m is None:
                o = F.scaled_dot_product_attention(q, k, v, attn_mask=None, dropout_p=0.0, scale=pl.scaling,
                                                   is_causal=causal, enable_gqa=True)
            else:
                k = k[:, :, None].expand(B, Hkv, pl.nrep, T, D).reshape(B, H, T, D)
                v = v[:, :, None].expand(B, Hkv, pl.nrep, T, D).reshape(B, H, T, D)
                o = F.scaled_dot_product_attention(q, k, v, attn_mask=m, dropout_p=0.0, scale=pl.scaling,
                                                   is_causal=False)
        else:
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=m, dropout_p=0.0, scale=pl.scaling,
                                               is_causal=causal)
        o = o.transpose(1, 2).contiguous().reshape(B * Tq, -1)
        if last:
            h = h.view(B, T, -1)[:, -1, :]
        h = h + _lin(o, o_wt, o_b)
        gu = _lin(rms(h, ln2, e2), gu_wt, gu_b)
        a = ckernels.silu_mul(gu, inter) if use_c else act(gu[:, :inter]) * gu[:, inter:]
        h = h + _lin(a, d_wt, d_b)
    return _lin(rms(h, pl.norm_w, pl.norm_eps), pl.lm_wt, pl.lm_b).float()


def _decode(pl: _Plan, tok, pos, slot: int, Ks, Vs, mask_add, attention: str):
    """One token per row: tok [B], pos [B] -> logits [B, V] (float); keys/values go to cache slot `slot`
    of the per-layer caches Ks[l], Vs[l] [B, S, Hkv*D].

    attention="bmm" (CPU default): the scores of all heads of a row come from one small GEMM against a
    block-diagonal query matrix [H, Hkv*D], and the outputs from one GEMM with the values, whose diagonal
    blocks are kept (on CPU, SDPA's kernel at query length 1 is several times slower; the extra FLOPs are
    free, the cache is read once). "sdpa": the SDPA call transformers makes. `mask_add` [B, 1, S] (0 or
    -inf) hides left padding; None when there is none.
    """
    B = tok.shape[0]
    D, H, Hkv, nrep = pl.D, pl.H, pl.Hkv, pl.nrep
    n_qk = H + Hkv
    end = slot + 1
    h = F.embedding(tok, pl.embed)                                   # [B, d]
    cos, ss = pl.cos_sin(h, pos)                                     # [B, D] each
    cos, ss = cos[:, None], ss[:, None]
    m = None if mask_add is None else mask_add[:, :, :end]
    for li, (ln1, e1, qkv_wt, qkv_b, o_wt, o_b, ln2, e2, gu_wt, gu_b, d_wt, d_b, act, inter) in enumerate(pl.layers):
        qkv = _lin(pl.rms(h, ln1, e1), qkv_wt, qkv_b)               # [B, (H + 2 Hkv) D]
        qk = qkv[:, :n_qk * D].view(B, n_qk, D)
        qk = qk * cos + _swap_halves(qk, D) * ss                     # rotary on q and k together
        Kl, Vl = Ks[li], Vs[li]
        Kl[:, slot] = qk[:, H:].reshape(B, Hkv * D)
        Vl[:, slot] = qkv[:, n_qk * D:]
        if attention == "bmm":
            qbd = qk[:, :H, None, :] * pl.selx                       # [B, H, Hkv, D], scaled, block-diagonal
            s = torch.bmm(qbd.view(B, H, Hkv * D), Kl[:, :end].transpose(1, 2))   # [B, H, end]
            if m is not None:
                s = s + m
            o = torch.bmm(torch.softmax(s, -1), Vl[:, :end])         # [B, H, Hkv*D]: keep head h's kv block
            o = o.view(B, Hkv, nrep, Hkv, D).diagonal(dim1=1, dim2=3).permute(0, 3, 1, 2).reshape(B, H * D)
        else:
            q = qk[:, :H]
            kk = Kl[:, :end].view(B, end, Hkv, D).transpose(1, 2)
            vv = Vl[:, :end].view(B, end, Hkv, D).transpose(1, 2)
            m4 = None if m is None else (m[:, None] == 0)
            if nrep > 1 and m4 is not None:
                o = F.scaled_dot_product_attention(q.reshape(B, Hkv, nrep, D), kk, vv, attn_mask=m4,
                                                   dropout_p=0.0, scale=pl.scaling)
            else:
                o = F.scaled_dot_product_attention(q[:, :, None], kk, vv, attn_mask=m4, dropout_p=0.0,
                                                   scale=pl.scaling, enable_gqa=nrep > 1)
            o = o.reshape(B, H * D)
        h = h + _lin(o, o_wt, o_b)
        gu = _lin(pl.rms(h, ln2, e2), gu_wt, gu_b)
        h = h + _lin(act(gu[:, :inter]) * gu[:, inter:], d_wt, d_b)
    return _lin(pl.rms(h, pl.norm_w, pl.norm_eps), pl.lm_wt, pl.lm_b).float()


def _decode_c(pl: _Plan, tok, pos, slot: int, Ks, Vs, mask_add):
    """`_decode` with attention="c": the matmuls in torch, everything between them in the fused C kernels of
    `workbench.ckernels` (RMSNorm; rotary, cache write and attention in one pass per row; SiLU x up). Same
    math, float32 on CPU only; rounding can differ from the torch path in the last bits.

    The kernels are called directly (no argument checks: every tensor here is a contiguous float32 CPU
    tensor made by this function or by `_sample_rows`; `ckernels`' public wrappers check the same calls)."""
    lib = _kernels()
    D, H, Hkv = pl.D, pl.H, pl.Hkv
    B = tok.shape[0]
    d = pl.embed.shape[1]
    h = F.embedding(tok, pl.embed)                                   # [B, d]
    cs = F.embedding(pos, pl.table)                                  # [B, 2D]: cos | signed sin
    hn = torch.empty_like(h)
    o = h.new_empty(B, H * D)
    scratch = h.new_empty(H * (slot + 1))
    m_ptr, m_stride = (None, 0) if mask_add is None else (mask_add.data_ptr(), mask_add.stride(0))
    row_stride = Ks[0].stride(0)
    for li, (ln1, e1, qkv_wt, qkv_b, o_wt, o_b, ln2, e2, gu_wt, gu_b, d_wt, d_b, act, inter) in enumerate(pl.layers):
        lib.rmsnorm(h.data_ptr(), ln1.data_ptr(), hn.data_ptr(), B, d, e1)
        qkv = _lin(hn, qkv_wt, qkv_b)
        lib.attn_decode(qkv.data_ptr(), cs.data_ptr(), Ks[li].data_ptr(), Vs[li].data_ptr(), row_stride, slot,
                        m_ptr, m_stride, o.data_ptr(), B, H, Hkv, D, pl.scaling, scratch.data_ptr())
        h = h + _lin(o, o_wt, o_b)
        lib.rmsnorm(h.data_ptr(), ln2.data_ptr(), hn.data_ptr(), B, d, e2)
        gu = _lin(hn, gu_wt, gu_b)
        a = gu.new_empty(B, inter)
        lib.silu_mul(gu.data_ptr(), a.data_ptr(), B, inter)
        h = h + _lin(a, d_wt, d_b)
    lib.rmsnorm(h.data_ptr(), pl.norm_w.data_ptr(), hn.data_ptr(), B, d, pl.norm_eps)
    return _lin(hn, pl.lm_wt, pl.lm_b).float()


def attention_used(model, dev) -> str:
    """The decode path `fast_sample(attention="auto")` takes for `model` on `dev`: "c", "bmm" or "sdpa"."""
    return _resolve_attention(_Plan(model, 2, torch.device(dev)), torch.device(dev), "auto", cuda_graph=False)


def _resolve_attention(pl: _Plan, dev: torch.device, attention: str, cuda_graph: bool) -> str:
    """`fast_sample`'s attention option made concrete ("auto" -> the fastest path that runs here, by
    measurement: "c" on CPU float32 when the C kernels build, else "bmm" there, else the SDPA call HF makes);
    a clear error for "c" where it cannot run."""
    cpu32 = dev.type == "cpu" and pl.dtype == torch.float32
    if attention == "c":
        if cuda_graph:
            raise ValueError("attention='c' does not combine with cuda_graph=True")
        why_not = c_unsupported_reason(pl, dev)
        if why_not is not None:
            raise ValueError(f"attention='c' cannot run here: {why_not}")
        return "c"
    if attention != "auto":
        return attention
    if cpu32 and not cuda_graph and c_unsupported_reason(pl, dev) is None:
        return "c"
    return "bmm" if cpu32 else "sdpa"


def c_unsupported_reason(pl: _Plan, dev) -> str | None:
    """None when `_decode_c` can run this plan; else why not (the "bmm" path is used)."""
    if torch.device(dev).type != "cpu" or pl.dtype != torch.float32:
        return "C kernels are float32 on CPU only"
    if pl.table is None:
        return "dynamic rope scaling (no static rotary table)"
    for layer in pl.layers:
        if layer[12] is not F.silu:
            return f"activation {layer[12]} is not SiLU"
        if not (isinstance(layer[2], torch.Tensor) and isinstance(layer[8], torch.Tensor)):
            return "unfused q/k/v or gate/up weights (model above FUSE_MAX_PARAMS, or LoRA projections)"
    if pl.D % 8:
        return f"head_dim {pl.D} is not a multiple of 8"
    if not ckernels.available():
        return f"C kernels unavailable ({ckernels.unavailable_reason()})"
    return None


# Models up to this many parameters get fused and (on CPU) re-laid-out weight copies per call (see _Plan).
FUSE_MAX_PARAMS = 50_000_000

# Tests only: let cuda_graph=True run the graph's step body eagerly on the CPU (no capture), so that the
# static-shape computation a GPU would capture is checked for exactness without a GPU.
_GRAPH_BODY_ON_CPU = False

# Row compaction: once this fraction of the rows still being decoded has ended, the finished rows are
# dropped from the batch (their cache rows included), so later steps compute only live rows.
COMPACT_FRACTION = 0.25
# CPU: decode at most this many rows at a time (their KV cache then stays in the CPU caches between steps).
DEFAULT_CPU_ROW_CHUNK = 128


@torch.no_grad()
def fast_sample(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, *, max_new_tokens: int,
                eos_token_id: int, pad_token_id: int, temperature: float = 1.0, top_p: float | None = None,
                top_k: int | None = None, generator: torch.Generator | None = None, attention: str = "auto",
                cuda_graph: bool | None = None, row_chunk: int | None = None, compact: bool | None = None,
                return_sampler_logprobs: bool = False):
    """Same contract as `workbench.rollout.sample` (which calls this); returns its raw pieces.

    Returns (completion [B, N] long, logprobs [B, N] float) with N <= max_new_tokens the number of steps run
    (completion is padded with `pad_token_id` after each row's EOS, logprobs with 0); with
    return_sampler_logprobs, a third [B, N] tensor: the log-probs of the distribution each token was drawn
    from (temperature, top-k, top-p applied; see `sampling.draw`).

    Options (defaults chosen per device by measurement, see docs/benchmarks.md):
      attention: "auto" (CPU float32: "c" when the C kernels build and support the model, else "bmm";
        otherwise "sdpa"), "c" (`_decode_c`; an error if it cannot run), "bmm" or "sdpa" (see `_decode`).
      row_chunk: decode the batch in chunks of at most this many rows, one after the other; None = CPU:
        DEFAULT_CPU_ROW_CHUNK, CUDA: the whole batch.
      compact: drop finished rows from the batch as they end (None = on, except with cuda_graph).
      cuda_graph: capture the decode step in a CUDA graph and replay it (True: CUDA only; None = on CUDA
        unless the model uses dynamic rope scaling, whose update is data-dependent; off elsewhere).
    With a sampler (temperature > 0), chunking and compaction change which random numbers each row gets
    (not the distribution); with neither active, the same generator state gives the same samples as the
    generic loop (`engine="hf"`) and `model.generate` whenever the logits agree bitwise.
    """
    reason = unsupported_reason(model)
    if reason is not None:
        raise ValueError(f"fast rollout engine cannot run this model: {reason}; use engine='hf'")
    dev = prompt_ids.device
    if attention not in ("auto", "c", "bmm", "sdpa"):
        raise ValueError(f"attention must be 'auto', 'c', 'bmm' or 'sdpa', got {attention!r}")
    B, P = prompt_ids.shape
    pl = _Plan(model, P + max_new_tokens, dev)
    if cuda_graph is None:
        cuda_graph = dev.type == "cuda" and not pl.dynamic_rope and compact is not True
    if cuda_graph and dev.type != "cuda" and not _GRAPH_BODY_ON_CPU:
        raise ValueError("cuda_graph=True needs the model on a CUDA device")
    if compact is None:
        compact = not cuda_graph
    if cuda_graph and compact:
        raise ValueError("compact=True and cuda_graph=True do not combine (a graph has fixed shapes)")
    if row_chunk is None:
        row_chunk = B if dev.type == "cuda" else DEFAULT_CPU_ROW_CHUNK
    attention = _resolve_attention(pl, dev, attention, cuda_graph)
    if pl.dynamic_rope:
        if cuda_graph:
            raise ValueError("cuda_graph=True does not support dynamic rope scaling (its update is data-dependent)")
        row_chunk, compact = B, False
    outs = []
    for i in range(0, B, max(1, row_chunk)):
        outs.append(_sample_rows(pl, prompt_ids[i:i + row_chunk], prompt_mask[i:i + row_chunk], max_new_tokens,
                                 eos_token_id, pad_token_id, temperature, top_p, top_k, generator, attention,
                                 cuda_graph, compact))
    if len(outs) == 1:
        out = outs[0]
    else:
        n = max(o[0].shape[1] for o in outs)
        out = (torch.cat([F.pad(o[0], (0, n - o[0].shape[1]), value=pad_token_id) for o in outs]),
               *(torch.cat([F.pad(o[i], (0, n - o[i].shape[1]), value=0.0) for o in outs]) for i in (1, 2)))
    return out if return_sampler_logprobs else out[:2]


def _sample_rows(pl, prompt_ids, prompt_mask, max_new_tokens, eos_token_id, pad_token_id, temperature, top_p,
                 top_k, generator, attention, cuda_graph, compact):
    dev = prompt_ids.device
    B, P = prompt_ids.shape
    S = P + max_new_tokens
    # the eager step reads only written slots; the graph step reads the whole cache (masked), and a masked
    # slot still enters softmax(S) @ V as 0 * V, so it must not hold NaN/inf garbage: zeros
    alloc = torch.zeros if cuda_graph else torch.empty
    K = alloc(pl.n_layers, B, S, pl.Hkv * pl.D, dtype=pl.dtype, device=dev)
    V = alloc(pl.n_layers, B, S, pl.Hkv * pl.D, dtype=pl.dtype, device=dev)
    Ks, Vs = K.unbind(0), V.unbind(0)
    pmask = prompt_mask.bool()
    padded = not bool(pmask.all())
    pos = positions_from_mask(prompt_mask.long())
    if padded:
        m4 = torch.ones(P, P, dtype=torch.bool, device=dev).tril_()[None, None] & pmask[:, None, None, :]
        m4 |= torch.eye(P, dtype=torch.bool, device=dev)[None, None]   # pad rows see themselves: never all-masked
        mask_add = torch.zeros(B, 1, S, dtype=pl.dtype, device=dev)
        mask_add[:, 0, :P].masked_fill_(~pmask, float("-inf"))
    else:
        m4, mask_add = None, None
    logits = _prefill(pl, prompt_ids, pos, m4, Ks, Vs, use_c=attention == "c")
    step = _CudaGraphStep(pl, K, V, mask_add, dev) if cuda_graph else None

    next_pos = prompt_mask.long().sum(-1)               # [b] position of the next token of each live row
    tokens = torch.full((B, max_new_tokens), pad_token_id, dtype=torch.long, device=dev)
    logps = torch.zeros((B, max_new_tokens), dtype=torch.float32, device=dev)
    sampler_logps = torch.zeros((B, max_new_tokens), dtype=torch.float32, device=dev)
    rows = None                                         # original index of each live row (None: all, in order)
    b = B
    done = torch.zeros(B, dtype=torch.bool, device=dev)
    n = 0
    for t in range(max_new_tokens):
        # the next-token pick of the generic loop in rollout.sample (the same function)
        tok, lp, slp = pick(logits, done, pad_token_id, temperature, top_k, top_p, generator)
        if rows is None:
            tokens[:, t] = tok
            logps[:, t] = lp
            sampler_logps[:, t] = slp
        else:
            tokens[rows, t] = tok
            logps[rows, t] = lp
            sampler_logps[rows, t] = slp
        done = done | (tok == eos_token_id)
        n = t + 1
        if t == max_new_tokens - 1:
            break
        n_done = int(done.sum())
        if n_done == b:
            break   # early exit once every sample has ended
        if compact and n_done >= max(1, COMPACT_FRACTION * b):
            keep = (~done).nonzero().squeeze(1)
            end = P + t + 1                              # filled cache slots
            b = keep.shape[0]
            K[:, :b, :end] = K[:, keep, :end]            # live rows to the front (gather first, then write)
            V[:, :b, :end] = V[:, keep, :end]
            Ks, Vs = K[:, :b].unbind(0), V[:, :b].unbind(0)
            if mask_add is not None:
                mask_add = mask_add[keep]
            rows = keep if rows is None else rows[keep]
            tok, next_pos, done = tok[keep], next_pos[keep], done[keep]
        if step is not None:
            logits = step(tok, next_pos, P + t)
        elif attention == "c":
            logits = _decode_c(pl, tok, next_pos, P + t, Ks, Vs, mask_add)
        else:
            logits = _decode(pl, tok, next_pos, P + t, Ks, Vs, mask_add, attention)
        next_pos = next_pos + 1
    return tokens[:, :n], logps[:, :n], sampler_logps[:, :n]


class _CudaGraphStep:
    """The decode step captured once in a CUDA graph and replayed. Shapes must be static, so attention runs
    over the whole static cache with a bool mask that hides unwritten slots (and left padding); the slot
    written, the token and its position are device tensors updated in place before each replay."""

    def __init__(self, pl, K, V, mask_add, dev):
        B, S = K.shape[1], K.shape[2]
        self.pl, self.K, self.V = pl, K, V
        self.tok = torch.zeros(B, dtype=torch.long, device=dev)
        self.pos = torch.zeros(B, dtype=torch.long, device=dev)
        self.slot = torch.zeros(1, dtype=torch.long, device=dev)
        self.base = (torch.ones(B, S, dtype=torch.bool, device=dev) if mask_add is None
                     else (mask_add[:, 0] == 0))
        self.mask = torch.zeros(B, 1, 1, S, dtype=torch.bool, device=dev)
        self.ar = torch.arange(S, device=dev)
        self.graph, self.out = None, None

    def _body(self):
        pl, K, V = self.pl, self.K, self.V
        B, S = K.shape[1], K.shape[2]
        D, H, Hkv, nrep = pl.D, pl.H, pl.Hkv, pl.nrep
        n_qk = H + Hkv
        h = F.embedding(self.tok, pl.embed)
        cos, ss = pl.cos_sin(h, self.pos)
        cos, ss = cos[:, None], ss[:, None]
        for li, (ln1, e1, qkv_wt, qkv_b, o_wt, o_b, ln2, e2, gu_wt, gu_b, d_wt, d_b, act, inter) in enumerate(pl.layers):
            qkv = _lin(pl.rms(h, ln1, e1), qkv_wt, qkv_b)
            qk = qkv[:, :n_qk * D].view(B, n_qk, D)
            qk = qk * cos + _swap_halves(qk, D) * ss
            K[li].index_copy_(1, self.slot, qk[:, H:].reshape(B, 1, Hkv * D))
            V[li].index_copy_(1, self.slot, qkv[:, None, n_qk * D:])
            kk = K[li].view(B, S, Hkv, D).transpose(1, 2)
            vv = V[li].view(B, S, Hkv, D).transpose(1, 2)
            q = qk[:, :H]
            if nrep > 1:
                o = F.scaled_dot_product_attention(q.reshape(B, Hkv, nrep, D), kk, vv, attn_mask=self.mask,
                                                   dropout_p=0.0, scale=pl.scaling)
            else:
                o = F.scaled_dot_product_attention(q[:, :, None], kk, vv, attn_mask=self.mask, dropout_p=0.0,
                                                   scale=pl.scaling)
            h = h + _lin(o.reshape(B, H * D), o_wt, o_b)
            gu = _lin(pl.rms(h, ln2, e2), gu_wt, gu_b)
            h = h + _lin(act(gu[:, :inter]) * gu[:, inter:], d_wt, d_b)
        return _lin(pl.rms(h, pl.norm_w, pl.norm_eps), pl.lm_wt, pl.lm_b).float()

    def __call__(self, tok, pos, slot: int):
        self.tok.copy_(tok)
        self.pos.copy_(pos)
        self.slot.fill_(slot)
        torch.logical_and(self.base, self.ar <= slot, out=self.mask.view(self.base.shape))
        if _GRAPH_BODY_ON_CPU and self.tok.device.type != "cuda":
            return self._body()            # tests: the captured computation, run eagerly on the CPU
        if self.graph is None:
            # warm up on a side stream (allocator, cuBLAS and SDPA workspaces), then capture. The warm-up runs
            # write the same slot from the same inputs, so running them is harmless. Streams and the capture
            # belong to the model's GPU, which need not be the current device (a model on cuda:1).
            with torch.cuda.device(self.tok.device):
                s = torch.cuda.Stream()
                s.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(s):
                    for _ in range(2):
                        self._body()
                torch.cuda.current_stream().wait_stream(s)
                self.graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(self.graph):
                    self.out = self._body()
        self.graph.replay()
        return self.out.clone()


# --------------------------------------------------------------------------------------------
# profiling: where a call spends its time (python -m benchmarks rollout; not used by training)
# --------------------------------------------------------------------------------------------
@contextlib.contextmanager
def profiled():
    """Time the parts of every `fast_sample` call inside the block; yields a dict the calls add to.

    Keys: `mm` (seconds inside every projection matmul, prefill and decode), `mm_prefill` (those of the
    prefill), `attn` (the compiled decode-attention kernel's calls; 0 on the torch path), `prefill`, `decode`
    (whole decode steps), `kv_bytes` (K and V bytes decode attention had to read), `cache_bytes` (the largest
    KV cache), `row_ctx` / `row_steps` (sum over decode steps of rows x context, and of rows: their ratio is
    the mean context), `rows` (most rows in one step), `dims` ((H, Hkv, D, layers)), `c` (whether the compiled
    kernels ran). Reset the dict's values between calls to time them one by one. The instrumentation costs a
    few perf_counter calls per matmul: time the engine itself outside this block.
    """
    global _lin, _decode_c, _decode, _prefill, _kernels
    rec = dict(mm=0.0, mm_prefill=0.0, attn=0.0, prefill=0.0, decode=0.0, kv_bytes=0, cache_bytes=0, row_ctx=0,
               row_steps=0, rows=0, dims=None, c=False, in_prefill=False)
    orig = (_lin, _decode_c, _decode, _prefill, _kernels)
    o_lin, o_dec_c, o_dec, o_pre, o_kernels = orig

    def timed(key, fn):
        def run(*a, **k):
            t = time.perf_counter()
            out = fn(*a, **k)
            rec[key] += time.perf_counter() - t
            return out
        return run

    def lin(x, wt, b):
        t = time.perf_counter()
        out = o_lin(x, wt, b)
        dt = time.perf_counter() - t
        rec["mm"] += dt
        rec["mm_prefill"] += dt if rec["in_prefill"] else 0.0
        return out

    def prefill(*a, **k):
        rec["in_prefill"] = True
        try:
            return timed("prefill", o_pre)(*a, **k)
        finally:
            rec["in_prefill"] = False

    def count(pl, tok, slot, Ks):
        b = tok.shape[0]
        rec["kv_bytes"] += 2 * b * (slot + 1) * pl.Hkv * pl.D * Ks[0].element_size() * pl.n_layers
        rec["cache_bytes"] = max(rec["cache_bytes"], 2 * sum(k.numel() * k.element_size() for k in Ks))
        rec["row_ctx"] += b * (slot + 1)
        rec["row_steps"] += b
        rec["rows"] = max(rec["rows"], b)
        rec["dims"] = (pl.H, pl.Hkv, pl.D, pl.n_layers)

    def dec_c(pl, tok, pos, slot, Ks, Vs, mask_add):
        count(pl, tok, slot, Ks)
        rec["c"] = True
        return timed("decode", o_dec_c)(pl, tok, pos, slot, Ks, Vs, mask_add)

    def dec(pl, tok, pos, slot, Ks, Vs, mask_add, attention):
        count(pl, tok, slot, Ks)          # the torch path: its attention ops are not timed apart
        return timed("decode", o_dec)(pl, tok, pos, slot, Ks, Vs, mask_add, attention)

    class TimedLib:
        def __init__(self, lib):
            self._lib = lib

        def __getattr__(self, name):
            fn = getattr(self._lib, name)
            return timed("attn", fn) if name == "attn_decode" else fn

    lib = o_kernels()
    try:
        _lin, _decode_c, _decode, _prefill = lin, dec_c, dec, prefill
        _kernels = (lambda: TimedLib(lib)) if lib is not None else o_kernels
        yield rec
    finally:
        _lin, _decode_c, _decode, _prefill, _kernels = orig
