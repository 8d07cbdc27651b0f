"""A fast decoding loop for Llama/Qwen2-style models: static KV cache, no per-token HF machinery.

`workbench.rollout.sample(..., engine="auto")` uses this engine when
`unsupported_reason(model)` is None, and the generic loop (`engine="hf"`,
a `DynamicCache` + `model(...)` per token) otherwise: GPT-2 and other
architectures, peft/LoRA-wrapped models, models with hooks or non-`nn.Linear`
projections, sliding-window layers, attention implementations other than sdpa.

What it does differently from calling `model(...)` per token (on our tiny
models the per-token framework overhead, not arithmetic, dominates):
  * the KV cache is preallocated once per call as static tensors
    [layers, batch, kv_heads, prompt + max_new_tokens, head_dim]; each step
    writes one slot in place and attends over a view of the filled prefix
    (no `torch.cat`, no Cache objects, no per-step mask construction: the
    padding mask is one preallocated bool buffer, sliced);
  * the model's own weights and submodules (embedding, rotary embedding,
    norms' weights, q/k/v/o and MLP projections) are called through
    `F.linear`/`F.embedding` directly, skipping module-call, decorator and
    output-dataclass overhead; the computation is the same op sequence as the
    HF modules (RMSNorm, rotary, SDPA with the same GQA/mask choices), so
    greedy output equals `model.generate` and log-probs match (tested);
  * token and log-prob buffers are preallocated; the loop stops as soon as
    every sample has emitted EOS.
  * optional (`cuda_graph=True`, CUDA only): each decode step is captured once
    in a CUDA graph over the full static cache with a mask, and replayed.

The sampling procedure (softmax of the filtered, tempered logits, then one
`torch.multinomial` call per step with the caller's generator) is the one the
generic loop uses, so both engines draw from exactly the model's distribution.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

SUPPORTED_TYPES = ("llama", "qwen2")


def unsupported_reason(model) -> str | None:
    """None when the fast engine can run `model` exactly; else a short reason (the generic loop is used)."""
    cfg = getattr(model, "config", None)
    if cfg is None:
        return "no config"
    if hasattr(model, "peft_config") or type(model).__name__.startswith("Peft"):
        return "peft-wrapped model"
    mt = getattr(cfg, "model_type", None)
    if mt not in SUPPORTED_TYPES:
        return f"model_type {mt!r} not in {SUPPORTED_TYPES}"
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
    for mod in model.modules():
        if mod._forward_hooks or mod._forward_pre_hooks:
            return f"forward hooks on {type(mod).__name__}"
        if "lora" in type(mod).__name__.lower():
            return "LoRA modules present"
    for layer in inner.layers:
        a, m = layer.self_attn, layer.mlp
        for lin in (a.q_proj, a.k_proj, a.v_proj, a.o_proj, m.gate_proj, m.up_proj, m.down_proj):
            if type(lin) is not torch.nn.Linear:
                return f"projection of type {type(lin).__name__} (not nn.Linear)"
        for norm in (layer.input_layernorm, layer.post_attention_layernorm):
            if not hasattr(norm, "variance_epsilon") or not type(norm).__name__.endswith("RMSNorm"):
                return f"norm of type {type(norm).__name__}"
        if getattr(a, "sliding_window", None):
            return "sliding window attention"
    if not type(inner.norm).__name__.endswith("RMSNorm"):
        return f"final norm of type {type(inner.norm).__name__}"
    return None


def is_supported(model) -> bool:
    return unsupported_reason(model) is None


def _rms_exact(x, w, eps):
    # exactly LlamaRMSNorm / Qwen2RMSNorm.forward
    dt = x.dtype
    h = x.to(torch.float32)
    var = h.pow(2).mean(-1, keepdim=True)
    h = h * torch.rsqrt(var + eps)
    return w * h.to(dt)


def _rms_fused(x, w, eps):
    # one kernel; bitwise equal to _rms_exact for float32 (checked in tests and in _Plan)
    return F.rms_norm(x, (x.shape[-1],), w, eps)


class _Plan:
    """What one call needs from the model: its parameters (q/k/v and gate/up concatenated into one matmul
    each), dimensions, and the rotary cos/sin table. Built per call, so optimiser updates are always seen."""

    def __init__(self, model, max_len: int, device):
        inner, cfg = model.model, model.config
        a0 = inner.layers[0].self_attn
        self.D = a0.head_dim
        self.H = cfg.num_attention_heads
        self.Hkv = cfg.num_key_value_heads
        self.nrep = self.H // self.Hkv
        self.scaling = a0.scaling
        self.embed = inner.embed_tokens.weight
        self.dtype = self.embed.dtype
        self.rms = _rms_fused if self.dtype == torch.float32 else _rms_exact
        self.norm_w, self.norm_eps = inner.norm.weight, inner.norm.variance_epsilon
        self.lm_w, self.lm_b = model.lm_head.weight, model.lm_head.bias
        self.rotary = inner.rotary_emb
        self.layers = []
        for layer in inner.layers:
            a, m = layer.self_attn, layer.mlp
            qkv_w = torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight], 0)
            qkv_b = (torch.cat([a.q_proj.bias, a.k_proj.bias, a.v_proj.bias], 0)
                     if a.q_proj.bias is not None else None)
            gu_w = torch.cat([m.gate_proj.weight, m.up_proj.weight], 0)
            gu_b = torch.cat([m.gate_proj.bias, m.up_proj.bias], 0) if m.gate_proj.bias is not None else None
            act = F.silu if type(m.act_fn).__name__ in ("SiLUActivation", "SiLU") else m.act_fn
            self.layers.append((layer.input_layernorm.weight, layer.input_layernorm.variance_epsilon, qkv_w, qkv_b,
                                a.o_proj.weight, a.o_proj.bias, layer.post_attention_layernorm.weight,
                                layer.post_attention_layernorm.variance_epsilon, gu_w, gu_b, m.down_proj.weight,
                                m.down_proj.bias, act, m.gate_proj.weight.shape[0]))
        self.n_layers = len(self.layers)
        # rotary table for positions [0, max_len): the rotary module's own output, looked up per step
        # (elementwise in the position, so identical to calling it per step). Non-default rope types
        # (dynamic scaling depends on the sequence) call the module every step instead.
        self.table = None
        rope = getattr(cfg, "rope_parameters", None) or {}
        if rope.get("rope_type", "default") == "default":
            pos = torch.arange(max_len, device=device)[None]
            cos, sin = self.rotary(self.embed[:1][None], pos)
            half = self.D // 2
            sin_signed = torch.cat([-sin[..., :half], sin[..., half:]], -1)   # rotate_half(x)*sin == roll(x)*this
            self.table = (cos[0], sin[0], sin_signed[0])
        # head -> kv head selection for the block-diagonal decode attention (GQA included)
        h = torch.arange(self.H, device=device)
        self.sel = (h[:, None] // self.nrep == torch.arange(self.Hkv, device=device)[None]).to(self.dtype)
        self.head_idx, self.kv_idx = h, h // self.nrep

    def cos_sin(self, x, pos):
        """(cos, sin, sin_signed) for position ids `pos` (any shape) -> [..., D]."""
        if self.table is not None:
            c, s, ss = self.table
            return F.embedding(pos, c), F.embedding(pos, s), F.embedding(pos, ss)
        cos, sin = self.rotary(x, pos)
        half = self.D // 2
        return cos, sin, torch.cat([-sin[..., :half], sin[..., half:]], -1)


def _prefill(pl: _Plan, ids, pos, mask4, K, V):
    """Forward over the prompts [B, P] (same ops and SDPA call as transformers' sdpa path), writing keys and
    values into cache slots [0, P). Returns the last position's logits [B, V] (float)."""
    B, T = ids.shape
    D, H, Hkv = pl.D, pl.H, pl.Hkv
    x = F.embedding(ids, pl.embed)
    cos, sin, _ = pl.cos_sin(x, pos)
    cos_u, sin_u = cos.unsqueeze(1), sin.unsqueeze(1)
    half = D // 2
    h = x
    for li, (ln1, e1, qkv_w, qkv_b, o_w, o_b, ln2, e2, gu_w, gu_b, d_w, d_b, act, inter) in enumerate(pl.layers):
        resid = h
        qkv = F.linear(pl.rms(h, ln1, e1), qkv_w, qkv_b)
        q = qkv[..., :H * D].reshape(B, T, H, D).transpose(1, 2)
        k = qkv[..., H * D:(H + Hkv) * D].reshape(B, T, Hkv, D).transpose(1, 2)
        v = qkv[..., (H + Hkv) * D:].reshape(B, T, Hkv, D)
        q = (q * cos_u) + (torch.cat((-q[..., half:], q[..., :half]), -1) * sin_u)
        k = (k * cos_u) + (torch.cat((-k[..., half:], k[..., :half]), -1) * sin_u)
        K[li][:, :T] = k.transpose(1, 2).reshape(B, T, Hkv * D)
        V[li][:, :T] = v.reshape(B, T, Hkv * D)
        v = v.transpose(1, 2)
        if pl.nrep > 1:
            if mask4 is None:
                o = F.scaled_dot_product_attention(q, k, v, attn_mask=None, dropout_p=0.0, scale=pl.scaling,
                                                   is_causal=T > 1, enable_gqa=True)
            else:
                k = k[:, :, None].expand(B, Hkv, pl.nrep, T, D).reshape(B, H, T, D)
                v = v[:, :, None].expand(B, Hkv, pl.nrep, T, D).reshape(B, H, T, D)
                o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask4, dropout_p=0.0, scale=pl.scaling,
                                                   is_causal=False)
        else:
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask4, dropout_p=0.0, scale=pl.scaling,
                                               is_causal=mask4 is None and T > 1)
        o = o.transpose(1, 2).contiguous().reshape(B, T, -1).contiguous()
        h = resid + F.linear(o, o_w, o_b)
        resid = h
        gu = F.linear(pl.rms(h, ln2, e2), gu_w, gu_b)
        h = resid + F.linear(act(gu[..., :inter]) * gu[..., inter:], d_w, d_b)
    h = pl.rms(h[:, -1, :], pl.norm_w, pl.norm_eps)
    return F.linear(h, pl.lm_w, pl.lm_b).float()


def _decode(pl: _Plan, tok, pos, slot: int, K, V, mask_add, attention: str):
    """One token per row: tok [B], pos [B] -> logits [B, V] (float); keys/values go to cache slot `slot`.

    attention="bmm" (CPU default): scores for all heads of a row in one small GEMM against a block-diagonal
    query matrix (on CPU, SDPA's kernel at query length 1 is several times slower); "sdpa": the SDPA call
    transformers makes. `mask_add` [B, 1, S] (0 or -inf) hides left padding; None when there is none.
    """
    B = tok.shape[0]
    D, H, Hkv = pl.D, pl.H, pl.Hkv
    end = slot + 1
    x = F.embedding(tok, pl.embed)                       # [B, d]
    cos, _, ss = pl.cos_sin(x[:, None], pos[:, None])
    cos, ss = cos.reshape(B, 1, D), ss.reshape(B, 1, D)
    half = D // 2
    h = x
    for li, (ln1, e1, qkv_w, qkv_b, o_w, o_b, ln2, e2, gu_w, gu_b, d_w, d_b, act, inter) in enumerate(pl.layers):
        qkv = F.linear(pl.rms(h, ln1, e1), qkv_w, qkv_b)  # [B, (H + 2 Hkv) D]
        qk = qkv[:, :(H + Hkv) * D].view(B, H + Hkv, D)
        qk = qk * cos + torch.roll(qk, half, -1) * ss    # rotary on q and k together
        Kl, Vl = K[li], V[li]
        Kl[:, slot] = qk[:, H:].reshape(B, Hkv * D)
        Vl[:, slot] = qkv[:, (H + Hkv) * D:]
        q = qk[:, :H]                                     # [B, H, D]
        if attention == "bmm":
            qbd = (q * pl.scaling)[:, :, None, :] * pl.sel[None, :, :, None]   # [B, H, Hkv, D] block-diagonal
            s = torch.bmm(qbd.view(B, H, Hkv * D), Kl[:, :end].transpose(1, 2))  # [B, H, end]
            if mask_add is not None:
                s = s + mask_add[:, :, :end]
            p = torch.softmax(s, -1)
            o = torch.bmm(p, Vl[:, :end]).view(B, H, Hkv, D)[:, pl.head_idx, pl.kv_idx].reshape(B, H * D)
        else:
            kk = Kl[:, :end].view(B, end, Hkv, D).transpose(1, 2)
            vv = Vl[:, :end].view(B, end, Hkv, D).transpose(1, 2)
            m4 = None if mask_add is None else (mask_add[:, None, :, :end] == 0)
            if pl.nrep > 1 and m4 is not None:
                o = F.scaled_dot_product_attention(q.reshape(B, Hkv, pl.nrep, D), kk, vv, attn_mask=m4,
                                                   dropout_p=0.0, scale=pl.scaling)
            else:
                o = F.scaled_dot_product_attention(q[:, :, None], kk, vv, attn_mask=m4, dropout_p=0.0,
                                                   scale=pl.scaling, enable_gqa=pl.nrep > 1)
            o = o.reshape(B, H * D)
        h = h + F.linear(o, o_w, o_b)
        gu = F.linear(pl.rms(h, ln2, e2), gu_w, gu_b)
        h = h + F.linear(act(gu[:, :inter]) * gu[:, inter:], d_w, d_b)
    return F.linear(pl.rms(h, pl.norm_w, pl.norm_eps), pl.lm_w, pl.lm_b).float()


@torch.no_grad()
def fast_sample(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, *, max_new_tokens: int,
                eos_token_id: int, pad_token_id: int, temperature: float = 1.0, top_p: float | None = None,
                top_k: int | None = None, generator: torch.Generator | None = None, attention: str = "auto",
                cuda_graph: bool = False, row_chunk: int | None = None):
    """Same contract as `workbench.rollout.sample` (which calls this); returns its raw pieces.

    Returns (completion [B, N] long, logprobs [B, N] float) with N <= max_new_tokens the number of steps run
    (completion is padded with `pad_token_id` after each row's EOS, logprobs with 0).
    `row_chunk`: decode the batch in chunks of at most this many rows, one after the other (the KV cache of a
    chunk stays in the CPU's caches); None picks by device (CPU: DEFAULT_CPU_ROW_CHUNK; CUDA: no chunking).
    """
    reason = unsupported_reason(model)
    if reason is not None:
        raise ValueError(f"fast rollout engine cannot run this model: {reason}; use engine='hf'")
    dev = prompt_ids.device
    if attention == "auto":
        attention = "sdpa" if dev.type == "cuda" else "bmm"
    if attention not in ("bmm", "sdpa"):
        raise ValueError(f"attention must be 'auto', 'bmm' or 'sdpa', got {attention!r}")
    if cuda_graph and dev.type != "cuda":
        raise ValueError("cuda_graph=True needs the model on a CUDA device")
    B, P = prompt_ids.shape
    if row_chunk is None:
        row_chunk = B if dev.type == "cuda" else DEFAULT_CPU_ROW_CHUNK
    pl = _Plan(model, P + max_new_tokens, dev)
    outs = []
    for i in range(0, B, max(1, row_chunk)):
        outs.append(_sample_rows(pl, prompt_ids[i:i + row_chunk], prompt_mask[i:i + row_chunk], max_new_tokens,
                                 eos_token_id, pad_token_id, temperature, top_p, top_k, generator, attention,
                                 cuda_graph))
    if len(outs) == 1:
        return outs[0]
    n = max(o[0].shape[1] for o in outs)
    comp = torch.cat([F.pad(c, (0, n - c.shape[1]), value=pad_token_id) for c, _ in outs])
    lps = torch.cat([F.pad(lp, (0, n - lp.shape[1]), value=0.0) for _, lp in outs])
    return comp, lps


DEFAULT_CPU_ROW_CHUNK = 64


def _sample_rows(pl, prompt_ids, prompt_mask, max_new_tokens, eos_token_id, pad_token_id, temperature, top_p,
                 top_k, generator, attention, cuda_graph):
    from .rollout import _filter_logits, positions_from_mask   # local import: rollout imports this module

    dev = prompt_ids.device
    B, P = prompt_ids.shape
    S = P + max_new_tokens
    K = torch.empty(pl.n_layers, B, S, pl.Hkv * pl.D, dtype=pl.dtype, device=dev)
    V = torch.empty_like(K)
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
    logits = _prefill(pl, prompt_ids, pos, m4, K, V)
    step = _CudaGraphStep(pl, K, V, mask_add, dev) if cuda_graph else None

    next_pos = prompt_mask.long().sum(-1)               # [B] position of the next token
    tokens = torch.full((B, max_new_tokens), pad_token_id, dtype=torch.long, device=dev)
    logps = torch.zeros((B, max_new_tokens), dtype=torch.float32, device=dev)
    done = torch.zeros(B, dtype=torch.bool, device=dev)
    pad_col = torch.full((B,), pad_token_id, dtype=torch.long, device=dev)
    n = 0
    for t in range(max_new_tokens):
        # exactly the sampling procedure of the generic loop in rollout.sample
        logp_full = F.log_softmax(logits, dim=-1)
        if temperature == 0:
            tok = logits.argmax(-1)
        else:
            probs = F.softmax(_filter_logits(logits / temperature, top_k, top_p), dim=-1)
            tok = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
        tok = torch.where(done, pad_col, tok)
        tokens[:, t] = tok
        logps[:, t] = logp_full.gather(-1, tok[:, None]).squeeze(-1).masked_fill(done, 0.0)
        done = done | (tok == eos_token_id)
        n = t + 1
        if t == max_new_tokens - 1 or bool(done.all()):
            break   # early exit once every sample has ended
        if step is not None:
            logits = step(tok, next_pos, P + t)
        else:
            logits = _decode(pl, tok, next_pos, P + t, K, V, mask_add, attention)
        next_pos = next_pos + 1
    return tokens[:, :n], logps[:, :n]


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
        D, H, Hkv = pl.D, pl.H, pl.Hkv
        x = F.embedding(self.tok, pl.embed)
        cos, _, ss = pl.cos_sin(x[:, None], self.pos[:, None])
        cos, ss = cos.reshape(B, 1, D), ss.reshape(B, 1, D)
        h = x
        for li, (ln1, e1, qkv_w, qkv_b, o_w, o_b, ln2, e2, gu_w, gu_b, d_w, d_b, act, inter) in enumerate(pl.layers):
            qkv = F.linear(pl.rms(h, ln1, e1), qkv_w, qkv_b)
            qk = qkv[:, :(H + Hkv) * D].view(B, H + Hkv, D)
            qk = qk * cos + torch.roll(qk, D // 2, -1) * ss
            K[li].index_copy_(1, self.slot, qk[:, H:].reshape(B, 1, Hkv * D))
            V[li].index_copy_(1, self.slot, qkv[:, None, (H + Hkv) * D:])
            kk = K[li].view(B, S, Hkv, D).transpose(1, 2)
            vv = V[li].view(B, S, Hkv, D).transpose(1, 2)
            q = qk[:, :H]
            if pl.nrep > 1:
                o = F.scaled_dot_product_attention(q.reshape(B, Hkv, pl.nrep, D), kk, vv, attn_mask=self.mask,
                                                   dropout_p=0.0, scale=pl.scaling)
            else:
                o = F.scaled_dot_product_attention(q[:, :, None], kk, vv, attn_mask=self.mask, dropout_p=0.0,
                                                   scale=pl.scaling)
            h = h + F.linear(o.reshape(B, H * D), o_w, o_b)
            gu = F.linear(pl.rms(h, ln2, e2), gu_w, gu_b)
            h = h + F.linear(act(gu[:, :inter]) * gu[:, inter:], d_w, d_b)
        return F.linear(pl.rms(h, pl.norm_w, pl.norm_eps), pl.lm_w, pl.lm_b).float()

    def __call__(self, tok, pos, slot: int):
        self.tok.copy_(tok)
        self.pos.copy_(pos)
        self.slot.fill_(slot)
        torch.logical_and(self.base, self.ar <= slot, out=self.mask.view(self.base.shape))
        if self.graph is None:
            # warm up on a side stream (allocator, cuBLAS and SDPA workspaces), then capture. The warm-up runs
            # write the same slot from the same inputs, so running them is harmless.
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
