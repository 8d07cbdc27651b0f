"""Fused float32 CPU decode kernels (workbench/kernels/decode_cpu.c), compiled on first use and called via ctypes.

Why C: at 128-256 rows the fast engine's decode step on the zoo teacher spent about as long in the ~140
small elementwise and attention ops per layer (RMSNorm, rotary, cache writes, scores, softmax, SiLU) as
in its matmuls, each op streaming a whole [rows, width] tensor through memory. The kernels do that work
row by row while the row is in L1; the matmuls stay in torch (MKL). Measured: the engine went from 1.55x
to 2.04x `model.generate` at batch 256 on the zoo teacher (docs/benchmarks.md).

Build: `cc -O3 -march=native -fopenmp-simd -shared -fPIC` into a per-user cache directory (`cache_dir()`:
`$OPD_WORKBENCH_CACHE`, else `$XDG_CACHE_HOME/opd-workbench`, else `~/.cache/opd-workbench`), keyed by the
source, the compiler and the CPU's flags, so a home directory shared by different machines never loads a
library built for another CPU.
Without a C compiler, or when the build fails, `available()` is False with the reason in
`unavailable_reason()`, and the engine keeps its torch path (attention="bmm"); nothing else changes.
Set OPD_WORKBENCH_NO_C=1 to disable the kernels.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

SOURCE = Path(__file__).parent / "kernels" / "decode_cpu.c"
FLAGS = ["-O3", "-march=native", "-fopenmp-simd", "-shared", "-fPIC", "-std=c99"]

_lib = None
_reason: str | None = None
_tried = False


def _cpu_fingerprint() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
        lines = [ln for ln in text.splitlines() if ln.startswith(("model name", "flags", "Features", "CPU part"))]
        return "\n".join(sorted(set(lines)))
    except OSError:
        return platform.processor() + platform.machine()


def cache_dir() -> Path:
    """$OPD_WORKBENCH_CACHE/kernels, else $XDG_CACHE_HOME/opd-workbench/kernels, else ~/.cache/opd-workbench/kernels."""
    root = os.environ.get("OPD_WORKBENCH_CACHE")
    if not root:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(base, "opd-workbench")
    return Path(root) / "kernels"


def _compiler() -> str | None:
    for cc in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if cc and shutil.which(cc):
            return cc
    return None


def _library_path(cc: str, src: bytes) -> Path:
    """Where the library built from `src` by `cc` for this CPU lives (the key covers all three)."""
    key = hashlib.sha256(src + " ".join([cc] + FLAGS).encode() + _cpu_fingerprint().encode()).hexdigest()[:16]
    return cache_dir() / f"decode_cpu-{key}.so"


def _build() -> ctypes.CDLL:
    cc = _compiler()
    if cc is None:
        raise RuntimeError("no C compiler found (cc, gcc or clang; or set CC)")
    out = _library_path(cc, SOURCE.read_bytes())
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        # build into a temporary name, then rename: concurrent first uses (pytest workers, two notebooks)
        # never load a half-written library
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
        os.close(fd)
        try:
            r = subprocess.run([cc, *FLAGS, str(SOURCE), "-o", tmp, "-lm"], capture_output=True, text=True,
                               timeout=120)
            if r.returncode != 0:
                raise RuntimeError(f"{cc} failed: {r.stderr.strip()[-500:]}")
            os.replace(tmp, out)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    lib = ctypes.CDLL(str(out))
    p, i, i64, f = ctypes.c_void_p, ctypes.c_int, ctypes.c_int64, ctypes.c_float
    lib.rmsnorm.argtypes = [p, p, p, i, i, f]
    lib.silu_mul.argtypes = [p, p, i, i]
    lib.attn_decode.argtypes = [p, p, p, p, i64, i, p, i64, p, i, i, i, i, f, p]
    for fn in (lib.rmsnorm, lib.silu_mul, lib.attn_decode):
        fn.restype = None
    return lib


def load():
    """The compiled library, or None (see `unavailable_reason`). Built at most once per process."""
    global _lib, _reason, _tried
    if not _tried:
        _tried = True
        if os.environ.get("OPD_WORKBENCH_NO_C"):
            _reason = "disabled by OPD_WORKBENCH_NO_C"
        else:
            try:
                _lib = _build()
            except Exception as e:   # no compiler, failed build, unloadable library: keep the torch path
                _reason = f"{type(e).__name__}: {e}"
    return _lib


def available() -> bool:
    return load() is not None


def unavailable_reason() -> str | None:
    load()
    return _reason


def _check(*ts):
    for t in ts:
        if t.dtype != torch.float32 or t.device.type != "cpu" or not t.is_contiguous():
            raise ValueError(f"C kernels need contiguous float32 CPU tensors, got {t.dtype} on {t.device}, "
                             f"contiguous={t.is_contiguous()}")


def rmsnorm(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    """w * (x * rsqrt(mean(x^2, -1) + eps)) over the rows of a 2-D x (LlamaRMSNorm in float32)."""
    _check(x, w)
    out = torch.empty_like(x)
    load().rmsnorm(x.data_ptr(), w.data_ptr(), out.data_ptr(), x.shape[0], x.shape[1], eps)
    return out


def silu_mul(gu: torch.Tensor, inter: int) -> torch.Tensor:
    """silu(gu[:, :inter]) * gu[:, inter:] for gu [rows, 2 * inter]."""
    _check(gu)
    if gu.shape[1] != 2 * inter:
        raise ValueError(f"gu has {gu.shape[1]} columns, expected 2 * inter = {2 * inter}")
    out = gu.new_empty(gu.shape[0], inter)
    load().silu_mul(gu.data_ptr(), out.data_ptr(), gu.shape[0], inter)
    return out


def attn_decode(qkv: torch.Tensor, cs: torch.Tensor, K: torch.Tensor, V: torch.Tensor, slot: int,
                mask: torch.Tensor | None, H: int, Hkv: int, D: int, scale: float) -> torch.Tensor:
    """One decode step of attention (see decode_cpu.c): rotates q and k in `qkv` [B, (H+2Hkv)D] in place with
    `cs` [B, 2D] (cos | signed sin), writes k and v into slot `slot` of K, V [B, S, Hkv*D] (rows may be a
    leading slice of a bigger cache: only their row stride is used), attends over slots [0, slot] with the
    additive `mask` [B, 1, S] (or None). Returns [B, H*D]."""
    _check(qkv, cs)
    B = qkv.shape[0]
    if qkv.shape[1] != (H + 2 * Hkv) * D or cs.shape != (B, 2 * D):
        raise ValueError(f"shape mismatch: qkv {tuple(qkv.shape)}, cs {tuple(cs.shape)} for H={H}, Hkv={Hkv}, D={D}")
    if K.shape[0] < B or K.shape[2] != Hkv * D or K.stride(2) != 1 or K.stride(1) != Hkv * D or K.stride() != V.stride():
        raise ValueError("K and V must be [>=B, S, Hkv*D] with contiguous rows and equal strides")
    if not 0 <= slot < K.shape[1]:
        raise ValueError(f"slot {slot} outside the cache's {K.shape[1]} slots")
    out = qkv.new_empty(B, H * D)
    scratch = qkv.new_empty(H * (slot + 1))
    if mask is not None:
        if mask.dtype != torch.float32 or mask.stride(-1) != 1:
            raise ValueError("mask must be float32 with contiguous last dimension")
        mptr, mstride = mask.data_ptr(), mask.stride(0)
    else:
        mptr, mstride = None, 0
    load().attn_decode(qkv.data_ptr(), cs.data_ptr(), K.data_ptr(), V.data_ptr(), K.stride(0), slot, mptr, mstride,
                       out.data_ptr(), B, H, Hkv, D, scale, scratch.data_ptr())
    return out
