"""Will it fit? A memory planner for one training step, from the configs alone, and the tools that check it.

    p = plan(student_cfg, teacher_cfg, batch_size=8, prompt_len=160, max_new_tokens=256, dtype="bf16",
             lora_r=16, gradient_checkpointing=True)
    print(p.table())            # components, total, the device's memory, fits?, largest batch that fits
    p.largest_batch             # the largest batch_size (multiple of num_generations) within the budget

What one step of the trainer holds at its peak (bytes; B = batch, T = prompt + completion,
N = completion, V = vocabulary, L = layers, h = hidden, I = MLP width, s = dtype bytes):

  weights        parameters x s for the student, the teacher (when it is on the device),
                 and a frozen copy of the student for pi_ref when fully fine-tuned with a KL
                 or ExOPD term (a LoRA student uses itself with adapters off: no copy).
                 Parameter counts come from the config analytically (tested against instantiated
                 models); the LoRA count is r x (in + out) per adapted linear layer.
  optimizer      trainable parameters: gradient + AdamW's two moments (4 bytes each for LoRA's
                 float32 adapters; s bytes each when the full model trains in s).
  kv cache       2 x L x kv_heads x head_dim x T x B x s while sampling (student, or the teacher
                 when it writes the traces).
  activations    saved for backward in the student's training forward, per token per layer
                 (`activation_bytes_per_token`: MLP ~ (3s + 4) x I, attention ~ 4s x q_dim, norms and
                 LoRA input copies ~ 16-28 x h bytes); with gradient checkpointing only each block's
                 input (h x s per token per layer) plus one block's worth while it is recomputed.
                 What is saved was counted with saved_tensors_hooks on this code path.
  logits         [B, N, V] tensors. The trainer's default (chunked) path keeps each model's output
                 logits [B, N, V] in its dtype and computes losses and statistics over chunks of
                 positions (`losses.*_chunked`, `losses.CHUNK_BYTES` of float32 each). Its forward holds
                 the student's, the teacher's (and pi_ref's) logits, one gradient buffer per dense loss
                 (full KL, JSD, top-K; and the KL anchor) and a few chunks (CHUNK_COPIES, per loss and for
                 the statistics, taken before the backward); its backward holds the student's logits
                 and the gradient buffer, the teacher's logits freed. The previous full-copy path
                 (`Trainer.chunked_logits = False`, `chunked=False` here) held float32 copies: the
                 student's logits, their log-softmax and their gradients (LOGIT_COPIES_TRAIN) plus the
                 teacher's (and pi_ref's) logits, and the statistics after the update briefly several
                 more (LOGIT_COPIES_STATS).

The step's peak is the weights and optimizer state plus the largest of the three phases
(sampling, training forward/backward, statistics). A safety margin (default 10%) covers the
CUDA allocator's fragmentation and the CUDA context (~0.5 GB, added separately on GPU).

Measured: `measure_peak(fn)` runs `fn` under a dispatch-level tracker of live tensor storage
(every tensor an ATen op allocates, until it is freed: the CPU analogue of
`torch.cuda.max_memory_allocated`); `measure_peak_rss` gives the resident-set peak of a fresh
process (Linux VmHWM) as an independent check. On CUDA use torch.cuda.max_memory_allocated.
"""
from __future__ import annotations

import gc
import html
import math
import weakref
from dataclasses import asdict, dataclass, field

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from transformers import AutoModelForCausalLM

from . import losses

DTYPE_BYTES = {"float32": 4, "fp32": 4, "bfloat16": 2, "bf16": 2, "float16": 2, "fp16": 2, "int8": 1,
               torch.float32: 4, torch.bfloat16: 2, torch.float16: 2, torch.int8: 1}
LLAMA_LIKE = ("llama", "qwen2", "qwen3", "mistral")
LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

# Activation constants, per token per layer, in units of the model dtype's bytes (see module docstring).
ACT_H = 10.0                # norms, residual stream, q/o projections and attention output (x h)
ACT_I = 4.0                 # gate, up, act(gate), gate*up (x intermediate)
ACT_KV = 4.0                # k, v and their rotated copies (x kv_heads * head_dim)
LOGIT_COPIES_TRAIN = 4.0    # full-copy path, float32 [B,N,V]: student logits, log-softmax (saved), 2 gradients
LOGIT_COPIES_STATS = 6.25   # full-copy path: float32 [B,N,V] transients of the statistics (+ a bool mask)
# Chunked path: peak float32 chunk-sized transients (x losses.CHUNK_BYTES) of each loss's forward (gradient
# included) and of the statistics, counted with LiveTensorTracker (tests/test_memory.py checks them).
CHUNK_COPIES = {"jsd": 12.0, "full_kl": 6.25, "topk": 7.5, "statistics": 6.25, "token_logprobs": 3.0}
DENSE_LOSSES = ("full_kl", "jsd", "topk")           # losses that keep a [B, N, V] gradient buffer from the forward
METHOD_LOSS = {"opd": "sampled_token", "opd_full": "full_kl", "gkd": "jsd", "exopd": "sampled_token",
               "stable_opd": "sampled_token", "grpo": "pg", "sft": "ce", "filtered_sft": "ce"}
SAFETY = 0.10
CUDA_CONTEXT = 500 * 2**20


def dtype_bytes(dtype) -> int:
    if dtype not in DTYPE_BYTES:
        raise ValueError(f"unknown dtype {dtype!r}; use one of float32, bfloat16, float16")
    return DTYPE_BYTES[dtype]


# --------------------------------------------------------------------------------------------
# shapes and parameter counts from a config
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    arch: str
    vocab: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    tied: bool
    qkv_bias: bool
    o_bias: bool = False
    mlp_bias: bool = False

    @classmethod
    def from_config(cls, cfg) -> "Shape":
        if hasattr(cfg, "get_text_config"):
            cfg = cfg.get_text_config()
        arch = getattr(cfg, "model_type", "?")
        if arch not in LLAMA_LIKE:
            raise ValueError(f"the memory planner knows Llama-style decoders ({', '.join(LLAMA_LIKE)}); "
                             f"got model_type={arch!r}. Use count_params_meta(config) for its parameter count")
        heads = cfg.num_attention_heads
        kv = getattr(cfg, "num_key_value_heads", None) or heads
        hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
        attn_bias = bool(getattr(cfg, "attention_bias", False))
        return cls(arch=arch, vocab=cfg.vocab_size, hidden=cfg.hidden_size, layers=cfg.num_hidden_layers,
                   heads=heads, kv_heads=kv, head_dim=hd, intermediate=cfg.intermediate_size,
                   tied=bool(getattr(cfg, "tie_word_embeddings", False)),
                   qkv_bias=True if arch == "qwen2" else attn_bias, o_bias=attn_bias if arch != "qwen2" else False,
                   mlp_bias=bool(getattr(cfg, "mlp_bias", False)))

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in_features, out_features) of each linear layer in one block."""
        h, q, kv, i = self.hidden, self.heads * self.head_dim, self.kv_heads * self.head_dim, self.intermediate
        return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
                "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}

    def n_params(self) -> int:
        """Exact parameter count of a Llama/Qwen2/Qwen3/Mistral causal LM of this shape."""
        lin = self.linear_shapes()
        per_layer = sum(a * b for a, b in lin.values())
        if self.qkv_bias:
            per_layer += lin["q_proj"][1] + lin["k_proj"][1] + lin["v_proj"][1]
        if self.o_bias:
            per_layer += self.hidden
        if self.mlp_bias:
            per_layer += 2 * self.intermediate + self.hidden
        per_layer += 2 * self.hidden                                  # two RMSNorms
        if self.arch == "qwen3":
            per_layer += 2 * self.head_dim                           # q_norm, k_norm
        emb = self.vocab * self.hidden
        return emb * (1 if self.tied else 2) + self.layers * per_layer + self.hidden

    def lora_params(self, r: int, target_modules="all-linear") -> int:
        lin = self.linear_shapes()
        names = LINEARS if target_modules in ("all-linear", None) else [
            n for n in LINEARS if any(n == t or n.endswith(t) for t in ([target_modules] if isinstance(
                target_modules, str) else target_modules))]
        return self.layers * sum(r * (lin[n][0] + lin[n][1]) for n in names)

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim


def activation_bytes_per_token(S: Shape, s: int, lora_r: int | None = None, lora_targets="all-linear"
                               ) -> tuple[float, float, float]:
    """(saved per block, saved once per forward, in flight during backward) in bytes per token.

    Counted from what autograd saves in a Llama/Qwen2 block (measured with saved_tensors_hooks on
    this code path, transformers 5.x, SDPA attention with a padding mask so k/v are expanded to all
    heads), for model dtype `s` bytes:
      MLP        act(gate) input and output, up, and the down projection's input: 3s x I + (4 or s) x I
                 (a LoRA adapter in float32 keeps a float32 copy of its input: 4 bytes);
      attention  rotated q, expanded k and v, the output: 4s x q_dim (+ a float32 copy for o_proj's LoRA);
      norms      the float32 copy of the input (4h each), and for full fine-tuning the normalised
                 tensor and its scaled output (2s x h each);
      LoRA       float32 copies of the adapted layers' inputs (shared when s = 4) and the r-wide
                 outputs of lora_A (7 x 4r).
    LoRA on a subset of layers is counted as all-linear (an over-estimate).
    """
    h, I, q = S.hidden, S.intermediate, S.heads * S.head_dim
    if lora_r:
        mlp = 3 * s * I + 4 * I
        attn = 4 * s * q + (4 * q if s != 4 else 0)
        casts = 2 * 4 * h if s == 4 else 5 * 4 * h         # q/k/v and gate/up inputs in float32
        norms = 2 * 4 * h
        per_layer = mlp + attn + casts + norms + 7 * 4 * lora_r
    else:
        per_layer = 4 * s * I + 4 * s * q + 2 * (4 + 2 * s) * h
    once = (4 + 2 * s) * h                                  # the final norm
    transient = (I + 2 * h) * 4                             # one block's gradients in flight
    return float(per_layer), float(once), float(transient)


def count_params(cfg) -> int:
    """Parameters of the model a config describes, without building it."""
    return Shape.from_config(cfg).n_params()


def count_params_meta(cfg) -> int:
    """Parameters by instantiating on the meta device (any architecture; no memory used)."""
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------------------------
# the plan
# --------------------------------------------------------------------------------------------


@dataclass(repr=False)
class Plan:
    components: dict                 # name -> bytes (see module docstring)
    phases: dict                     # sampling / training / statistics -> bytes on top of the static part
    static: int                      # weights + optimizer state + gradients
    resident: int                    # what stays allocated between steps (static less the gradients)
    peak: int                        # static + the largest phase
    total: int                       # peak x (1 + safety) (+ CUDA context on CUDA)
    budget: int | None               # device memory available (None: unknown)
    fits: bool | None
    largest_batch: int | None        # largest batch_size that fits the budget (None: unknown budget)
    settings: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)

    def table(self) -> str:
        gb = lambda b: f"{fmt_bytes(b):>12}" if b is not None else f"{'?':>12}"      # noqa: E731
        s = self.settings
        rows = [f"memory plan: batch {s['batch_size']} x (prompt {s['prompt_len']} + new {s['max_new_tokens']}) "
                f"tokens, {s['dtype']}, {'LoRA r=' + str(s['lora_r']) if s['lora_r'] else 'full fine-tune'}, "
                f"checkpointing {'on' if s['gradient_checkpointing'] else 'off'}, teacher "
                f"{'on the device' if s['teacher_on_device'] else 'off the device'}"]
        for k, v in self.components.items():
            rows.append(f"  {k:<34}{gb(v)}")
        for k, v in self.phases.items():
            rows.append(f"  phase {k:<28}{gb(v)}")
        rows.append(f"  {'peak (static + largest phase)':<34}{gb(self.peak)}")
        rows.append(f"  {'with margin' + (' + CUDA context' if s.get('cuda') else ''):<34}{gb(self.total)}")
        if self.budget is not None:
            rows.append(f"  {'device memory':<34}{gb(self.budget)}   -> "
                        f"{'FITS' if self.fits else 'DOES NOT FIT'}; largest batch that fits: {self.largest_batch}")
        else:
            rows.append("  device memory: unknown (pass budget_bytes=...)")
        return "\n".join(rows)

    def __str__(self) -> str:
        return self.table()

    __repr__ = __str__

    def _repr_html_(self) -> str:
        return f"<pre>{html.escape(self.table())}</pre>"


def device_budget(device=None) -> int | None:
    """Free + already-used-by-us memory of a CUDA device (what a fresh process could use); None off CUDA."""
    dev = torch.device(device) if device is not None else (torch.device("cuda") if torch.cuda.is_available() else None)
    if dev is None or dev.type != "cuda" or not torch.cuda.is_available():
        return None
    free, total = torch.cuda.mem_get_info(dev)
    return int(free + torch.cuda.memory_reserved(dev))


def _shape(cfg) -> Shape:
    return cfg if isinstance(cfg, Shape) else Shape.from_config(cfg)


def estimate(student, teacher=None, *, batch_size: int, prompt_len: int, max_new_tokens: int, dtype="bf16",
             teacher_dtype=None, lora_r: int | None = 16, lora_targets="all-linear",
             gradient_checkpointing: bool = False, teacher_on_device: bool = True, uses_teacher: bool = True,
             teacher_samples: bool = False, ref_copy: bool = False, ref_logits: bool = False,
             stats: bool = True, teacher_loaded: bool | None = None, chunked: bool = True,
             loss: str = "sampled_token", kl_anchor: bool = False, sft_batch: int = 0) -> dict:
    """Bytes of each component and phase (no budget logic). See `plan` for the arguments.

    `teacher_loaded`: the teacher's weights are on the device even if the method does not use it
    (default: when it is used). `chunked`: the trainer's logits path (`Trainer.chunked_logits`); `loss`:
    the objective (`cfg.loss`); `kl_anchor`: a KL-to-pi_ref term (`kl_coef > 0`, its own gradient buffer);
    `sft_batch`: rows of the gold-solution cross-entropy term (`sft_coef > 0`: one per prompt; its completions
    counted at `max_new_tokens`, an upper bound), whose logits live until the backward.
    """
    S = _shape(student)
    T = _shape(teacher) if (teacher is not None and uses_teacher) else None
    if teacher_loaded is None:
        teacher_loaded = T is not None
    T_w = _shape(teacher) if (teacher is not None and teacher_loaded) else None
    s = dtype_bytes(dtype)
    ts = dtype_bytes(teacher_dtype or dtype)
    B, P, N = batch_size, prompt_len, max_new_tokens
    L = P + N
    comp = {}
    comp["student weights"] = S.n_params() * s
    if T_w is not None and teacher_on_device:
        comp["teacher weights"] = T_w.n_params() * ts
    if ref_copy:
        comp["pi_ref copy of the student"] = S.n_params() * s
    if lora_r:
        trainable, per = S.lora_params(lora_r, lora_targets), 4      # float32 adapters
        comp["LoRA adapters (fp32)"] = trainable * per
    else:
        trainable, per = S.n_params(), s
    comp["AdamW moments (2)"] = 2 * trainable * per
    resident = sum(comp.values())                     # what stays allocated between steps
    comp["gradients"] = trainable * per               # set_to_none: exist from backward to the update
    static = resident + comp["gradients"]

    # sampling: the KV cache of the model that writes, the prompt's forward (one block at a time,
    # no grad) and a few [B, V] float32 rows per token
    W = T if (teacher_samples and T is not None) else S
    ws = ts if W is T else s
    kv = 2 * W.layers * W.kv_dim * L * B * ws
    comp["KV cache (sampling)"] = kv
    sampling = kv + B * P * (3 * W.intermediate + 4 * W.hidden) * ws + 4 * B * W.vocab * 4

    logit = B * N * S.vocab * 4                      # one float32 [B, N, V]
    n_other = (1 if T is not None else 0) + (1 if ref_logits else 0)
    # teacher scoring: one forward without grad (one block at a time) + its logits
    chunk = 4 * S.vocab * losses.chunk_positions((B, N, S.vocab))      # float32 bytes of one upcast chunk
    scoring = 0
    if T is not None:
        # its output logits (N+1 positions on the full-copy path, exactly N on the chunked one), then its token
        # log-probs: a chunk at a time, or a float32 copy
        scoring = B * L * (3 * T.intermediate + 4 * T.hidden) * ts + B * (N + (0 if chunked else 1)) * T.vocab * ts
        scoring += chunk if chunked else logit

    # training forward/backward: saved activations + logits (student's float32 logits and their
    # log-softmax, the teacher's/pi_ref's logits, two float32 gradients at the log-softmax backward)
    per_layer, once, transient = activation_bytes_per_token(S, s, lora_r if lora_r else None, lora_targets)
    if gradient_checkpointing:     # each block keeps its input; one block is recomputed at a time
        acts = B * L * (S.layers * S.hidden * s + once + per_layer + transient) + B * L * L * s
    else:
        acts = B * L * (S.layers * per_layer + once + transient) + B * L * L * s    # + the [B,1,T,T] mask
    acts += acts * sft_batch // max(B, 1)             # the gold batch's training forward (sft_coef > 0)
    comp["activations" + (" (checkpointed)" if gradient_checkpointing else "")] = acts
    statistics = 0
    if chunked:
        out_s = B * N * S.vocab * s                  # a model's output logits [B, N, V] in its dtype
        out_t = B * N * S.vocab * ts if T is not None else 0
        out_ref = out_s if ref_logits else 0
        n_grad = int(loss in DENSE_LOSSES) + int(kl_anchor)
        grad = n_grad * B * N * S.vocab * s          # gradient buffers, computed in the forward
        chunks = max(CHUNK_COPIES.get(loss, 0.0), CHUNK_COPIES["statistics"] if stats else 0.0,
                     CHUNK_COPIES["full_kl"] if kl_anchor else 0.0) * chunk
        out_gold = sft_batch * N * S.vocab * s
        forward = out_s + out_t + out_ref + out_gold + grad + chunks
        # backward: the output logits and the gradient buffer(s) (the token log-probs' is made here)
        backward = out_s + out_gold + max(grad, B * N * S.vocab * s)
        comp["logits (training, chunked)"] = int(max(forward, backward))
        training = acts + comp["logits (training, chunked)"]
    else:
        comp["logits fp32 (training)"] = int((LOGIT_COPIES_TRAIN + n_other) * logit)
        training = acts + comp["logits fp32 (training)"]
        # statistics after the update (entropy, reverse KL, top-k overlap): the kept logits + transients
        if stats:
            statistics = int((1 + n_other + LOGIT_COPIES_STATS) * logit)
            comp["logits fp32 (statistics)"] = statistics
    phases = {"sampling": int(sampling), "teacher scoring": int(scoring), "training": int(training),
              "statistics": int(statistics)}
    return {"components": {k: int(v) for k, v in comp.items()}, "phases": phases, "static": int(static),
            "resident": int(resident), "peak": int(static + max(phases.values()))}


def plan(student, teacher=None, *, batch_size: int, prompt_len: int, max_new_tokens: int, dtype="bf16",
         teacher_dtype=None, lora_r: int | None = 16, lora_targets="all-linear", gradient_checkpointing: bool = False,
         teacher_on_device: bool = True, method: str = "opd", num_generations: int = 1,
         budget_bytes: int | None = None, device=None, safety: float = SAFETY, max_batch: int = 4096,
         **kw) -> Plan:
    """Estimate one training step's peak memory and whether it fits the device (or `budget_bytes`).

    `student`/`teacher`: transformers configs (or `Shape`s) — nothing is loaded. `method` decides what is
    used: "opd"/"gkd"/"exopd"/"stable_opd" score with the teacher; "grpo" and gold-data SFT never touch it;
    "sft" samples with it. `lora_r=None` plans a full fine-tune (then ExOPD/Stable-OPD's pi_ref is a copy).
    """
    uses_teacher = method not in ("grpo",) and teacher is not None
    teacher_samples = method in ("sft", "filtered_sft")
    ref = method in ("exopd", "stable_opd") or kw.pop("ref", False)
    kw.setdefault("loss", METHOD_LOSS.get(method, "sampled_token"))
    kw.setdefault("kl_anchor", method == "stable_opd")
    kw.setdefault("sft_batch", batch_size // max(1, num_generations) if method == "stable_opd" else 0)
    args = dict(dtype=dtype, teacher_dtype=teacher_dtype, lora_r=lora_r, lora_targets=lora_targets,
                gradient_checkpointing=gradient_checkpointing, teacher_on_device=teacher_on_device,
                uses_teacher=uses_teacher, teacher_samples=teacher_samples, ref_copy=ref and not lora_r,
                ref_logits=ref, **kw)
    est = estimate(student, teacher, batch_size=batch_size, prompt_len=prompt_len, max_new_tokens=max_new_tokens,
                   **args)
    dev = torch.device(device) if device is not None else (
        torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu"))
    cuda = dev.type == "cuda"
    overhead = CUDA_CONTEXT if cuda else 0

    def total_of(e):
        return int(e["peak"] * (1 + safety)) + overhead

    budget = budget_bytes if budget_bytes is not None else device_budget(dev)
    total = total_of(est)
    fits = None if budget is None else total <= budget
    largest = None
    if budget is not None:
        step = max(1, num_generations)
        largest = 0
        lo, hi = 0, max_batch // step          # binary search over multiples of num_generations
        while lo < hi:
            mid = (lo + hi + 1) // 2
            e = estimate(student, teacher, batch_size=mid * step, prompt_len=prompt_len,
                         max_new_tokens=max_new_tokens, **args)
            if total_of(e) <= budget:
                lo = mid
            else:
                hi = mid - 1
        largest = lo * step
    settings = dict(batch_size=batch_size, prompt_len=prompt_len, max_new_tokens=max_new_tokens, dtype=str(dtype),
                    lora_r=lora_r, gradient_checkpointing=gradient_checkpointing,
                    teacher_on_device=teacher_on_device, method=method, safety=safety, cuda=cuda)
    return Plan(components=est["components"], phases=est["phases"], static=est["static"],
                resident=est["resident"], peak=est["peak"],
                total=total, budget=budget, fits=fits, largest_batch=largest, settings=settings)


def largest_batch_that_fits(student, teacher=None, *, budget_bytes: int | None = None, **kw) -> int | None:
    """The largest batch_size (a multiple of num_generations) whose plan fits; 0 if none; None if no budget."""
    return plan(student, teacher, batch_size=kw.pop("batch_size", 1), budget_bytes=budget_bytes, **kw).largest_batch


# --------------------------------------------------------------------------------------------
# measuring
# --------------------------------------------------------------------------------------------


class LiveTensorTracker:
    """Peak bytes of live tensor storage while active (CPU or any device; dispatch-level).

    Every tensor an ATen op returns is counted once per storage until its storage is freed
    (tracked with weak references); tensors that exist when tracking starts are counted via
    `add_existing` (e.g. the model's parameters). Allocations made inside kernels that never
    surface as tensors (scratch buffers) are not seen.
    """

    def __init__(self):

        tracker = self

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                tracker._scan(out)
                return out

        self._mode = _Mode()
        self.live: dict[int, int] = {}
        self._refs: dict[int, object] = {}
        self.current = 0
        self.peak = 0

    def _free(self, key):
        nb = self.live.pop(key, 0)
        self._refs.pop(key, None)
        self.current -= nb

    def _track(self, t: torch.Tensor):
        if t.is_meta:
            return
        try:
            st = t.untyped_storage()
        except (RuntimeError, NotImplementedError):
            return
        nb = st.nbytes()
        key = st.data_ptr()
        if nb == 0 or key in self.live:
            return
        self.live[key] = nb
        self._refs[key] = weakref.ref(st, lambda _r, k=key: self._free(k))
        self.current += nb
        if self.current > self.peak:
            self.peak = self.current

    def _scan(self, out):
        if isinstance(out, torch.Tensor):
            self._track(out)
        elif isinstance(out, (tuple, list)):
            for o in out:
                self._scan(o)

    def add_existing(self, tensors) -> None:
        for t in tensors:
            if isinstance(t, torch.Tensor):
                self._track(t)

    def reset_peak(self) -> None:
        self.peak = self.current

    def __enter__(self):
        gc.collect()
        self._mode.__enter__()
        return self

    def __exit__(self, *exc):
        self._mode.__exit__(*exc)
        return False


def model_tensors(*modules, optimizer=None):
    """Parameters, buffers (and optimizer state tensors) of modules, for `LiveTensorTracker.add_existing`."""
    for m in modules:
        if m is None:
            continue
        yield from m.parameters()
        yield from m.buffers()
    if optimizer is not None:
        for st in optimizer.state.values():
            yield from (v for v in st.values() if isinstance(v, torch.Tensor))


def measure_peak(fn, *existing) -> dict:
    """Run fn() under a LiveTensorTracker (after counting `existing` modules' tensors). Returns bytes:
    {"peak", "before", "after", "peak_over_before"}; on CUDA prefer torch.cuda.max_memory_allocated."""
    tr = LiveTensorTracker()
    with tr:
        tr.add_existing(model_tensors(*existing))
        before = tr.current
        tr.reset_peak()
        fn()
        gc.collect()
    return {"peak": tr.peak, "before": before, "after": tr.current, "peak_over_before": tr.peak - before}


def rss_peak_reset() -> bool:
    """Reset this process's peak resident set size (Linux >= 4.0: /proc/self/clear_refs <- 5)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def rss_now_and_peak() -> tuple[int, int]:
    """(VmRSS, VmHWM) of this process in bytes (Linux)."""
    vals = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                k, v = line.split(":", 1)
                vals[k] = int(v.split()[0]) * 1024
    return vals["VmRSS"], vals["VmHWM"]


def fmt_bytes(b: float) -> str:
    for unit, div in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(b) >= div:
            return f"{b / div:.2f} {unit}"
    return f"{b:.0f} B"


def relative_error(estimate_bytes: float, measured_bytes: float) -> float:
    return (estimate_bytes - measured_bytes) / measured_bytes if measured_bytes else math.inf
